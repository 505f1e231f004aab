"""Commonsense data reading, the DoRA prompt templates, tokenization, collation and run configs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments.llama.configs import RunConfig, deviations, paper_runs
from experiments.llama.data import (
    TEST_SETS, find_test_file, find_train_file, missing_data_files, read_records, read_test_set,
    split_train_validation,
)
from experiments.llama.prompts import (
    IGNORE_INDEX, TokenizedExample, collate, evaluation_prompt, tokenize_training_example, training_prompt,
)
from test_llama_support import make_tokenizer, one_torch_thread, write_commonsense  # noqa: F401

RECORD = {"instruction": "Please answer the following question with true or false, question: is it?\n\n"
                         "Answer format: true/false",
          "input": "", "output": "the correct answer is true", "answer": "true"}
PAD = " " * 16


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


# The reference strings, written out by hand from the DoRA scripts.
def test_training_prompt_exact():
    expected = (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.  \n\n"
        f"{PAD}### Instruction:\n{PAD}{RECORD['instruction']}\n{PAD}\n"
        f"{PAD}### Response:\n{PAD}the correct answer is true"
    )
    assert training_prompt(RECORD) == expected


def test_evaluation_prompt_exact():
    expected = (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request. \n\n"
        f"{PAD}### Instruction:\n{PAD}{RECORD['instruction']}\n\n"
        f"{PAD}### Response:\n{PAD}"
    )
    assert evaluation_prompt(RECORD) == expected


def test_prompts_with_input_field():
    record = {**RECORD, "input": "some context"}
    train, evaluation = training_prompt(record), evaluation_prompt(record)
    assert "paired with an input" in train
    assert "paired with an input" in evaluation
    assert f"{PAD}### Input:\n{PAD}some context\n{PAD}\n" in train
    assert f"{PAD}### Input:\n{PAD}some context\n\n" in evaluation
    assert "request. \n\n" in train  # one trailing space in this branch of the training template
    assert "request.\n\n" in evaluation  # none in the evaluation template


def test_training_and_evaluation_prompts_differ_in_whitespace():
    train = training_prompt(RECORD, output="")
    evaluation = evaluation_prompt(RECORD)
    assert train != evaluation
    assert train.split() == evaluation.split()


def test_label_mode_masks_prompt(tokenizer):
    example = tokenize_training_example(tokenizer, RECORD, loss_mode="label", cutoff_len=256)
    kept = [label for label in example.labels if label != IGNORE_INDEX]
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert 0 < len(kept) < len(example.input_ids) // 2
    assert kept == example.input_ids[-len(kept):]
    assert tokenizer.decode(kept, skip_special_tokens=True).strip() == "the correct answer is true"


def test_answer_only_mode_targets_answer(tokenizer):
    example = tokenize_training_example(tokenizer, RECORD, loss_mode="answer_only", cutoff_len=256)
    kept = [label for label in example.labels if label != IGNORE_INDEX]
    assert tokenizer.decode(kept, skip_special_tokens=True).strip() == "true"
    assert tokenizer.decode(example.input_ids, skip_special_tokens=True) == training_prompt(RECORD, output="true")


def test_whole_mode_trains_on_everything(tokenizer):
    example = tokenize_training_example(tokenizer, RECORD, loss_mode="whole", cutoff_len=256)
    assert example.labels == example.input_ids
    assert example.input_ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(example.input_ids, skip_special_tokens=True) == training_prompt(RECORD)


def test_truncation_drops_eos_and_labels(tokenizer):
    full = tokenize_training_example(tokenizer, RECORD, loss_mode="label", cutoff_len=256)
    short = tokenize_training_example(tokenizer, RECORD, loss_mode="label", cutoff_len=20)
    assert len(short.input_ids) == 20
    assert short.input_ids == full.input_ids[:20]
    assert tokenizer.eos_token_id not in short.input_ids
    assert short.label_count == 0  # the response lies beyond the cutoff


def test_invalid_loss_mode(tokenizer):
    with pytest.raises(ValueError, match="invalid loss_mode 'prompt'"):
        tokenize_training_example(tokenizer, RECORD, loss_mode="prompt", cutoff_len=256)


def test_collate_left_pads_to_multiple_of_8():
    examples = [TokenizedExample([5, 6, 7], [IGNORE_INDEX, 6, 7]), TokenizedExample(list(range(1, 11)),
                                                                                  list(range(1, 11)))]
    batch = collate(examples, pad_token_id=0)
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][0, -3:].tolist() == [5, 6, 7]
    assert batch["input_ids"][0, :13].tolist() == [0] * 13
    assert batch["attention_mask"][0].tolist() == [0] * 13 + [1] * 3
    assert batch["labels"][0].tolist() == [IGNORE_INDEX] * 14 + [6, 7]
    assert batch["attention_mask"][1].sum() == 10
    # The first real token is never a target, padded or not.
    assert batch["labels"][1].tolist() == [IGNORE_INDEX] * 7 + list(range(2, 11))


def test_reads_both_folder_layouts(tmp_path):
    nested = write_commonsense(tmp_path / "nested", train_size=8, test_size=2)
    flat = write_commonsense(tmp_path / "flat", train_size=8, test_size=2, flat=True)
    assert find_train_file(nested).parent.name == "ft-training_set"
    assert find_train_file(flat).parent == flat
    for test_set in TEST_SETS:
        records = read_test_set(nested, test_set.name)
        assert len(records) == 2
        assert all(record["answer"] in test_set.labels for record in records)
    assert missing_data_files(nested) == []


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="commonsense_170k.json"):
        find_train_file(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"dataset/boolq/test.json"):
        find_test_file(tmp_path, "boolq")
    problems = missing_data_files(tmp_path)
    assert len(problems) == 1 + len(TEST_SETS)
    assert any("hellaswag" in problem for problem in problems)


def test_wrong_answer_label_rejected(tmp_path):
    write_commonsense(tmp_path, train_size=8, test_size=2)
    path = tmp_path / "dataset" / "piqa" / "test.json"
    records = json.loads(path.read_text())
    records[1]["answer"] = "true"
    path.write_text(json.dumps(records))
    with pytest.raises(ValueError, match=r"record 1 has answer 'true', expected one of \['solution1'"):
        read_test_set(tmp_path, "piqa")


def test_malformed_records_rejected(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([{"instruction": "q", "answer": "true"}]))
    with pytest.raises(ValueError, match="record 0 has no string field 'output'"):
        read_records(path, need_output=True)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_records(path, need_output=True)
    path.write_text("[]")
    with pytest.raises(ValueError, match="non-empty JSON list"):
        read_records(path, need_output=False)


def test_validation_split_like_datasets():
    records = [{"id": i} for i in range(50)]
    train, validation = split_train_validation(records, 7, seed=42)
    assert len(validation) == 7
    assert len(train) == 43
    assert sorted(r["id"] for r in train + validation) == list(range(50))
    # datasets' train_test_split(test_size=7, seed=42) takes the head of default_rng(42).permutation(50).
    head = np.random.default_rng(42).permutation(50)[:7].tolist()
    assert [r["id"] for r in validation] == head
    assert split_train_validation(records, 7, seed=42) == (train, validation)
    with pytest.raises(ValueError, match="validation_size=50 must be positive and smaller"):
        split_train_validation(records, 50, seed=42)


def test_paper_runs_per_table_and_figure():
    table3 = paper_runs(table="3")
    assert len(table3) == 12
    assert {run.model for run in table3} == {"llama2-7b"}
    assert {run.blocks for run in table3} == {"QK", "QV", "VO"}
    assert {run.rank for run in table3} == {1, 2, 4, 8}
    assert {run.learning_rate for run in paper_runs(table="4")} == {None}
    assert {run.lr for run in paper_runs(table="4")} == {1e-4}
    assert [run.blocks for run in paper_runs(figure="4")] == ["Q", "K", "V", "O"]
    assert [(run.blocks, run.rank) for run in paper_runs(figure="5")] == [("QV", 2), ("VO", 2)]


def test_paper_runs_share_results():
    # Figure 2's V+O rank-1 run is table 3's OV rank-1 run: one config, one result file.
    assert paper_runs(figure="2")[2].as_dict() == paper_runs(table="3")[2].as_dict()
    assert len(paper_runs()) == 12 + 12 + 1 + 3 + 0 + 1
    assert len(paper_runs(table="3", seeds=(1, 2))) == 24
    with pytest.raises(ValueError, match="table '1' is not a LLaMA table"):
        paper_runs(table="1")


def test_config_records_deviations():
    config = RunConfig(experiment="e", model="llama2-7b", blocks="ov", rank=1)
    record = config.as_dict()
    assert record["blocks"] == "VO"
    assert record["alpha"] == 2.0
    assert record["learning_rate"] == 2e-4
    for key in ("experiment", "model", "method", "blocks", "rank", "seed"):
        assert key in record
    found = deviations(config)
    assert found["loss_mode"] == {"reference": "whole", "used": "label"}
    assert found["weight_decay"] == {"reference": 0.0, "used": 0.1}
    assert "num_beams" not in found
    assert "eval_batch_size" not in found
    dora_like = RunConfig(experiment="e", model="llama2-7b", blocks="QV", rank=1, loss_mode="whole",
                          num_beams=1, test_limit=3)
    assert "loss_mode" not in deviations(dora_like)
    assert deviations(dora_like)["num_beams"]["used"] == 1
    assert deviations(dora_like)["test_limit"]["used"] == 3


@pytest.mark.parametrize("fields, message", [
    ({"method": "adalora"}, "invalid method 'adalora'"),
    ({"blocks": "QX"}, "contains \\['X'\\]"),
    ({"rank": 0}, "rank must be a positive integer"),
    ({"test_sets": ("boolq", "mmlu")}, "unknown test sets \\['mmlu'\\]"),
    ({"model": "mistral-7b"}, "give learning_rate explicitly"),
    ({"loss_mode": "all"}, "invalid loss_mode 'all'"),
])
def test_config_rejects(fields, message):
    base = {"experiment": "e", "model": "llama2-7b", "blocks": "QV", "rank": 1}
    with pytest.raises(ValueError, match=message):
        RunConfig(**{**base, **fields})
