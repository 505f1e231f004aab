"""End-to-end LLaMA runs on a tiny random LLaMA with grouped-query attention, on CPU.

Covers training plus evaluation into a result file, the invariance of the loss to micro-batching
and to a 2-process torchrun split, resuming from a checkpoint, evaluation scoring, and the
messages for a missing GPU, model or data folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import results
from experiments.llama import configs, reproduce
from experiments.llama.block_norms import tuned_block_norms
from experiments.llama.configs import RunConfig
from experiments.llama.data import read_records, split_train_validation, find_train_file
from experiments.llama.distributed import init_distributed
from experiments.llama.evaluation import evaluate
from experiments.llama.run import _modules_by_block, check_architecture, load_model_and_tokenizer, run_config
from experiments.llama.prompts import collate, tokenize_training_example
from experiments.llama.training import Trainer, label_tokens, token_loss_sum
from experiments.targeting import apply_block_adapters
from test_llama_support import make_model_dir, one_torch_thread, write_commonsense  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parent.parent

# 48 records - 8 validation = 40 training records = 5 steps per epoch at batch 8; 0.6 epochs = 3 steps.
TINY = dict(experiment="tiny", model="tiny-llama", blocks="OV", rank=2, learning_rate=5e-3, dropout=0.0,
            global_batch_size=8, micro_batch_size=4, epochs=0.6, warmup_steps=1, eval_every=2,
            validation_size=8, dtype="float32", max_new_tokens=6, eval_batch_size=2, test_limit=2)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama")
    data_dir = write_commonsense(root / "data", train_size=48, test_size=3)
    model_dir = make_model_dir(root / "model")
    return root, data_dir, model_dir


@pytest.fixture(scope="module")
def context():
    return init_distributed("cpu")


@pytest.fixture(scope="module")
def end_to_end(workspace, context):
    root, data_dir, model_dir = workspace
    config = RunConfig(**TINY)
    path = run_config(config, model_path=str(model_dir), data_dir=data_dir, results_dir=root / "results",
                      context=context)
    return config, path, json.loads(path.read_text())


def test_result_file_schema(end_to_end):
    config, path, record = end_to_end
    assert path.parent.name == "tiny"
    assert record["status"] == "complete"
    assert record["config_hash"] == results.config_hash(config.as_dict())
    for key in ("experiment", "model", "method", "blocks", "rank", "seed", "deviations"):
        assert key in record["config"]
    assert record["config"]["blocks"] == "VO"


def test_result_metrics(end_to_end):
    _, _, record = end_to_end
    metrics = record["metrics"]
    names = ["boolq", "piqa", "social_i_qa", "hellaswag", "winogrande", "ARC-Easy", "ARC-Challenge", "openbookqa"]
    assert sorted(metrics["accuracy"]) == sorted(names)
    assert metrics["examples"] == {name: 2 for name in names}
    assert all(0.0 <= value <= 100.0 for value in metrics["accuracy"].values())
    assert metrics["average_accuracy"] == pytest.approx(sum(metrics["accuracy"].values()) / 8)
    assert metrics["unparsable_total"] == sum(metrics["unparsable"].values())
    assert math.isfinite(metrics["best_validation_loss"])
    assert set(record["samples"]) == set(names)


def test_result_history(end_to_end):
    _, _, record = end_to_end
    history = record["history"]
    assert [entry["step"] for entry in history] == [0, 1, 2, 3]
    assert [("validation_loss" in entry) for entry in history] == [True, False, True, True]
    assert all(math.isfinite(entry["train_loss"]) for entry in history[1:])
    # Warm-up of one step, then linear decay to zero at step 3: lr factors 0, 1, 1/2.
    assert [entry["learning_rate"] for entry in history[1:]] == pytest.approx([0.0, 5e-3, 2.5e-3])
    norms_start, norms_end = history[0]["tuned_block_norms"], history[-1]["tuned_block_norms"]
    assert sorted(norms_start) == ["O", "V"]
    assert norms_start["V"]["update"] == [0.0, 0.0]  # B starts at zero
    assert all(value > 0 for value in norms_end["O"]["update"])
    assert record["training"]["total_steps"] == 3


def test_result_parameters_show_gqa(end_to_end):
    # hidden 32, 4 query heads and 2 key/value heads of size 8: v_proj is 32 -> 16, o_proj 32 -> 32.
    _, _, record = end_to_end
    rank, layers = 2, 2
    expected = layers * (rank * (32 + 16) + rank * (32 + 32))
    assert record["parameters"]["trainable"] == expected == record["parameters"]["expected"]
    norms = record["pretrained_norms"]
    assert norms["kv_groups"] == [2, 2]
    for stored, effective in zip(norms["frobenius"]["V"], norms["frobenius_effective"]["V"]):
        assert effective == pytest.approx(stored * math.sqrt(2))
    assert norms["frobenius"]["Q"] == norms["frobenius_effective"]["Q"]


def test_finished_run_is_skipped(workspace, context, end_to_end):
    root, data_dir, model_dir = workspace
    config, path, _ = end_to_end
    before = path.stat().st_mtime_ns
    again = run_config(config, model_path=str(model_dir), data_dir=data_dir, results_dir=root / "results",
                       context=context)
    assert again == path
    assert path.stat().st_mtime_ns == before


def _trainer(model_dir, data_dir, context, checkpoint=None, norms=None, **fields):
    config = RunConfig(**{**TINY, **fields})
    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(str(model_dir), config.model, config.dtype, context.device)
    model, report = apply_block_adapters(model, method="lora", blocks=config.blocks, rank=config.rank,
                                         alpha=config.lora_alpha, dropout=0.0)
    modules = _modules_by_block(model, report.wrapped_modules)
    trainer = Trainer(model, tokenizer, config, context, norms or (lambda: tuned_block_norms(modules)), checkpoint)
    records = read_records(find_train_file(data_dir), need_output=True)
    return trainer, *split_train_validation(records, config.validation_size, config.validation_seed)


def _losses(history, key="train_loss"):
    return [entry[key] for entry in history if key in entry]


def test_loss_matches_transformers(workspace, context):
    # Our summed loss over the label count equals the mean loss LlamaForCausalLM computes from labels.
    _, data_dir, model_dir = workspace
    model, tokenizer = load_model_and_tokenizer(str(model_dir), "tiny-llama", "float32", context.device)
    records = read_records(find_train_file(data_dir), need_output=True)[:5]
    for loss_mode in ("label", "whole"):
        examples = [tokenize_training_example(tokenizer, r, loss_mode=loss_mode, cutoff_len=256) for r in records]
        batch = collate(examples, tokenizer.pad_token_id)
        with torch.no_grad():
            ours = token_loss_sum(model, batch) / sum(label_tokens(example) for example in examples)
            reference = model(**batch).loss
        assert float(ours) == pytest.approx(float(reference), rel=1e-5)


def test_loss_invariant_to_micro_batch(workspace, context):
    _, data_dir, model_dir = workspace
    histories = []
    for micro in (8, 3):  # 3 does not divide 8: micro-batches of 3, 3, 2
        trainer, train, validation = _trainer(model_dir, data_dir, context, micro_batch_size=micro)
        histories.append(trainer.run(train, validation).history)
    assert _losses(histories[0]) == pytest.approx(_losses(histories[1]), rel=1e-5)
    assert _losses(histories[0], "validation_loss") == pytest.approx(_losses(histories[1], "validation_loss"),
                                                                     rel=1e-5)
    assert _losses(histories[0])[2] != pytest.approx(_losses(histories[0])[0], rel=1e-3)  # training moved


def test_resume_after_kill(workspace, context, tmp_path):
    _, data_dir, model_dir = workspace
    trainer, train, validation = _trainer(model_dir, data_dir, context, epochs=1.0)
    uninterrupted = trainer.run(train, validation).history  # 5 steps, validation at 0, 2, 4, 5

    calls = []

    def dies_at_step_4():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return {}

    checkpoint = tmp_path / "run.pt"
    first, _, _ = _trainer(model_dir, data_dir, context, checkpoint, dies_at_step_4, epochs=1.0)
    with pytest.raises(KeyboardInterrupt):
        first.run(train, validation)
    assert checkpoint.exists()
    second, _, _ = _trainer(model_dir, data_dir, context, checkpoint, epochs=1.0)
    outcome = second.run(train, validation)
    assert outcome.resumed_from_step == 2
    assert [entry["step"] for entry in outcome.history] == [0, 1, 2, 3, 4, 5]
    assert _losses(outcome.history) == pytest.approx(_losses(uninterrupted), rel=1e-5)


def test_kill_during_evaluation_resumes(workspace, context, tmp_path, monkeypatch):
    root, data_dir, model_dir = workspace
    from experiments.llama import evaluation

    config = RunConfig(**{**TINY, "experiment": "killed", "test_sets": ("boolq", "piqa")})
    real_generate = evaluation.generate_batch

    def dies_on_piqa(model, tokenizer, records, config, device):
        if "solution1" in records[0]["instruction"]:
            raise KeyboardInterrupt("killed")
        return real_generate(model, tokenizer, records, config, device)

    monkeypatch.setattr(evaluation, "generate_batch", dies_on_piqa)
    with pytest.raises(KeyboardInterrupt):
        run_config(config, model_path=str(model_dir), data_dir=data_dir, results_dir=tmp_path, context=context)
    checkpoints = tmp_path / "killed" / ".checkpoints"
    [finished] = checkpoints.glob("*.evaluation.json")
    assert list(json.loads(finished.read_text())) == ["boolq"]

    monkeypatch.setattr(evaluation, "generate_batch", real_generate)
    path = run_config(config, model_path=str(model_dir), data_dir=data_dir, results_dir=tmp_path, context=context)
    record = json.loads(path.read_text())
    assert record["training"]["resumed_from_step"] == 3  # training had finished before the kill
    assert [entry["step"] for entry in record["history"]] == [0, 1, 2, 3]
    assert record["metrics"]["examples"] == {"boolq": 2, "piqa": 2}
    assert list(checkpoints.iterdir()) == []


class _ScriptedModel(torch.nn.Module):
    """Stands in for a LLaMA in generate(): answers every prompt with a fixed text, then pads."""

    def __init__(self, tokenizer, text: str):
        super().__init__()
        self.answer = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        self.pad = tokenizer.pad_token_id

    def generate(self, input_ids, attention_mask, **kwargs):
        assert kwargs["num_beams"] == 4
        assert kwargs["do_sample"] is False
        new = torch.tensor(self.answer + [self.pad] * 3).repeat(input_ids.shape[0], 1)
        return torch.cat([input_ids, new], dim=1)


def test_evaluate_scores_generations(workspace, context):
    _, data_dir, model_dir = workspace
    _, tokenizer = load_model_and_tokenizer(str(model_dir), "tiny-llama", "float32", context.device)
    tokenizer.pad_token_id = tokenizer.convert_tokens_to_ids("!")  # LLaMA-3-like: pad is a real token
    config = RunConfig(**{**TINY, "test_sets": ("boolq", "piqa"), "test_limit": None})
    metrics, samples = evaluate(_ScriptedModel(tokenizer, " the correct answer is true"), tokenizer, config,
                                data_dir, context)
    gold = [record["answer"] for record in json.loads((data_dir / "dataset/boolq/test.json").read_text())]
    assert metrics["accuracy"]["boolq"] == pytest.approx(100.0 * gold.count("true") / len(gold))
    assert metrics["unparsable"] == {"boolq": 0, "piqa": 3}
    assert samples["boolq"][0]["generation"] == "the correct answer is true"  # pads after EOS dropped


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_match_one(workspace, context, tmp_path):
    root, data_dir, model_dir = workspace
    fields = {**TINY, "experiment": "dist", "micro_batch_size": 2, "test_sets": ["boolq", "piqa"],
              "test_limit": 3, "max_new_tokens": 4}
    single = run_config(RunConfig(**fields), model_path=str(model_dir), data_dir=data_dir,
                        results_dir=tmp_path / "one", context=context)

    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(fields))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "-m", "experiments.llama.run", "--config", str(config_file),
               "--model-dir", str(model_dir), "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "two"),
               "--device", "cpu"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": str(REPO_ROOT)}
    finished = subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stderr[-3000:]

    one = json.loads(single.read_text())
    two = json.loads((tmp_path / "two" / "dist" / single.name).read_text())
    assert two["environment"]["world_size"] == 2
    assert _losses(two["history"]) == pytest.approx(_losses(one["history"]), rel=1e-5)
    assert _losses(two["history"], "validation_loss") == pytest.approx(_losses(one["history"], "validation_loss"),
                                                                       rel=1e-5)
    assert two["metrics"]["examples"] == one["metrics"]["examples"] == {"boolq": 3, "piqa": 3}
    assert two["metrics"]["unparsable"] == one["metrics"]["unparsable"]


def test_missing_resources_stop_with_message(tmp_path, capsys, monkeypatch):
    for variable in ("BLOCKRANK_LLAMA2_7B", "BLOCKRANK_LLAMA3_8B", "BLOCKRANK_COMMONSENSE_DIR"):
        monkeypatch.delenv(variable, raising=False)
    status = reproduce.main(table="3", extra=["--results-dir", str(tmp_path)])
    message = capsys.readouterr().err
    assert status == 1
    assert "cannot run table 3 (12 runs to do)" in message
    assert "BLOCKRANK_LLAMA2_7B" in message
    assert "BLOCKRANK_COMMONSENSE_DIR" in message
    assert ("no GPU" in message) == (not torch.cuda.is_available())

    missing = tmp_path / "nowhere"
    status = reproduce.main(figure="6", extra=["--results-dir", str(tmp_path), "--llama3-dir", str(missing),
                                               "--data-dir", str(missing), "--device", "cpu"])
    message = capsys.readouterr().err
    assert status == 1
    assert f"model folder {missing} for llama3-8b has no config.json" in message
    assert f"data folder {missing} does not exist" in message
    assert "no GPU" not in message


def test_missing_resources_skip_when_running_everything(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BLOCKRANK_COMMONSENSE_DIR", raising=False)
    assert reproduce.main(extra=["--results-dir", str(tmp_path), "--device", "cpu"]) == 0
    assert "skipped" in capsys.readouterr().err


def test_missing_test_set_listed(workspace, tmp_path, capsys):
    _, data_dir, model_dir = workspace
    partial = write_commonsense(tmp_path / "data", train_size=8, test_size=1)
    (partial / "dataset" / "winogrande" / "test.json").unlink()
    status = reproduce.main(table="3", extra=["--results-dir", str(tmp_path), "--llama2-dir", str(model_dir),
                                              "--data-dir", str(partial), "--device", "cpu"])
    message = capsys.readouterr().err
    assert status == 1
    assert "test set 'winogrande' not found" in message


def test_wrong_model_folder_rejected(workspace):
    from transformers import AutoConfig

    _, _, model_dir = workspace
    with pytest.raises(ValueError, match="has num_hidden_layers=2, but llama2-7b"):
        check_architecture(AutoConfig.from_pretrained(model_dir), "llama2-7b", str(model_dir))


def test_reproduce_runs_on_cpu(workspace, tmp_path, capsys, monkeypatch):
    # Pretend the tiny model is LLaMA2-7B so that the whole `make reproduce` path runs on CPU.
    _, _, model_dir = workspace
    tiny = dataclasses.replace(configs.MODELS["llama2-7b"], num_hidden_layers=2, hidden_size=32,
                               num_attention_heads=4, num_key_value_heads=2)
    monkeypatch.setitem(configs.MODELS, "llama2-7b", tiny)
    data_dir = write_commonsense(tmp_path / "data", train_size=136, test_size=2)
    options = ["--results-dir", str(tmp_path / "results"), "--llama2-dir", str(model_dir), "--data-dir",
               str(data_dir), "--device", "cpu", "--blocks", "OV", "--ranks", "1", "--test-sets", "boolq",
               "--max-steps", "1"]
    assert reproduce.main(table="3", extra=options) == 0
    [path] = (tmp_path / "results" / "commonsense_llama2_7b").glob("*.json")
    record = json.loads(path.read_text())
    assert (record["config"]["blocks"], record["config"]["rank"]) == ("VO", 1)
    assert record["config"]["deviations"]["test_sets"]["used"] == ["boolq"]
    assert record["metrics"]["examples"] == {"boolq": 2}
    assert [entry["step"] for entry in record["history"]] == [0, 1]
    assert reproduce.main(table="3", extra=options) == 0
    assert "all 1 runs are complete" in capsys.readouterr().out


def test_reproduce_continues_after_divergence(workspace, tmp_path, capsys, monkeypatch):
    _, _, model_dir = workspace
    exploding = dataclasses.replace(configs.MODELS["llama2-7b"], learning_rate=1e12, num_hidden_layers=2,
                                    hidden_size=32, num_attention_heads=4, num_key_value_heads=2)
    monkeypatch.setitem(configs.MODELS, "llama2-7b", exploding)
    data_dir = write_commonsense(tmp_path / "data", train_size=168, test_size=1)
    options = ["--results-dir", str(tmp_path / "results"), "--llama2-dir", str(model_dir), "--data-dir",
               str(data_dir), "--device", "cpu", "--blocks", "OV", "QV", "--ranks", "1", "--test-sets", "boolq",
               "--max-steps", "3"]
    assert reproduce.main(table="3", extra=options) == 1
    assert "2 of 2 runs failed" in capsys.readouterr().err
    assert not list((tmp_path / "results").rglob("*.json"))


def test_reproduce_rejects_unknown_filter(tmp_path, capsys):
    assert reproduce.main(table="3", extra=["--results-dir", str(tmp_path), "--blocks", "KO"]) == 2
    assert "no run matches --blocks ['KO']" in capsys.readouterr().err


def test_dry_run_lists_runs(tmp_path, capsys):
    assert reproduce.main(figure="5", extra=["--results-dir", str(tmp_path), "--dry-run"]) == 0
    output = capsys.readouterr().out
    assert "blocks=QV  r=2" in output
    assert "blocks=VO  r=2" in output
    assert "0 of 2 runs done" in output


def test_config_fields_roundtrip():
    config = RunConfig(**TINY)
    fields = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    assert RunConfig(**json.loads(json.dumps(fields))).as_dict() == config.as_dict()
