"""Answer extraction and scoring of the commonsense evaluation, for every answer style."""

from __future__ import annotations

import math

import pytest

from experiments.llama.answers import TaskScore, extract_answer, response_text, summarize
from experiments.llama.data import TEST_SETS
from experiments.llama.prompts import evaluation_prompt

RECORD = {"instruction": "Please choose the correct answer to the question: x?\n\nAnswer format: answer1/answer2",
          "input": "", "answer": "answer1"}


def decoded(generation: str) -> str:
    """Prompt plus generation, as the evaluation decodes it."""
    return evaluation_prompt(RECORD) + generation


# (test set, generation, expected prediction): the well-formed answer style of each task.
WELL_FORMED = [
    ("boolq", " the correct answer is true", "true"),
    ("boolq", " the correct answer is false", "false"),
    ("piqa", " the correct answer is solution2", "solution2"),
    ("social_i_qa", " the correct answer is answer3", "answer3"),
    ("hellaswag", " the correct answer is ending4", "ending4"),
    ("winogrande", " the correct answer is option1", "option1"),
    ("ARC-Easy", " the correct answer is answer4", "answer4"),
    ("ARC-Challenge", " the correct answer is answer1", "answer1"),
    ("openbookqa", " the correct answer is answer2", "answer2"),
]


@pytest.mark.parametrize("name, generation, expected", WELL_FORMED)
def test_extract_well_formed(name, generation, expected):
    assert extract_answer(name, decoded(generation)) == expected


# Malformed generations, read exactly as the reference script reads them.
MALFORMED = [
    ("boolq", " the correct answer is True", ""),  # case-sensitive
    ("boolq", " the correct answer is untrue", "true"),  # substring match, as in the reference
    ("boolq", " false, or maybe true", "false"),  # first match wins
    ("boolq", "", ""),  # empty generation
    ("piqa", " the correct answer is solution3", ""),  # label outside the task's set
    ("piqa", " the correct answer is Solution1", ""),
    ("social_i_qa", " the correct answer is answer", ""),  # truncated label
    ("social_i_qa", " answer5", "answer5"),  # the reference pattern accepts answer5 for SIQA
    ("hellaswag", " the correct answer is ending5", ""),
    ("hellaswag", " ending2ending3", "ending2"),
    ("winogrande", " the correct answer is option 1", ""),  # space inside the label
    ("ARC-Easy", " !!!!!!!!", ""),  # LLaMA-3 pad id 0 decoded as text
    ("openbookqa", " the correct answer is answer12", "answer1"),  # substring of a longer token
]


@pytest.mark.parametrize("name, generation, expected", MALFORMED)
def test_extract_malformed(name, generation, expected):
    assert extract_answer(name, decoded(generation)) == expected


def test_extract_reads_after_last_marker():
    # A generation that repeats the prompt template: the text after the LAST marker is read.
    text = decoded(" true\n### Instruction: again\n### Response: the correct answer is false")
    assert extract_answer("boolq", text) == "false"


def test_extract_ignores_prompt_labels():
    # The prompt itself lists "Answer format: true/false"; only the response counts.
    prompt = evaluation_prompt({"instruction": "q?\n\nAnswer format: true/false", "answer": "true"})
    assert extract_answer("boolq", prompt + " nothing useful") == ""


def test_response_text_without_marker():
    assert response_text("  the correct answer is true \n") == "the correct answer is true"


def test_extract_unknown_test_set():
    with pytest.raises(ValueError, match="unknown test set 'mmlu'"):
        extract_answer("mmlu", "true")


def test_every_test_set_has_a_pattern():
    for test_set in TEST_SETS:
        for label in test_set.labels:
            assert extract_answer(test_set.name, f"### Response: {label}") == label


def test_summarize_average_and_unparsable():
    scores = {"boolq": TaskScore(), "piqa": TaskScore()}
    for prediction, answer in [("true", "true"), ("", "false"), ("false", "true"), ("true", "true")]:
        scores["boolq"].add(prediction, answer, keep_example=False, generation="")
    for prediction, answer in [("solution1", "solution1"), ("", "solution2")]:
        scores["piqa"].add(prediction, answer, keep_example=True, generation="g")
    metrics = summarize(scores)
    assert metrics["accuracy"] == {"boolq": 50.0, "piqa": 50.0}
    assert metrics["average_accuracy"] == 50.0
    assert metrics["unparsable"] == {"boolq": 1, "piqa": 1}
    assert metrics["unparsable_total"] == 2
    assert metrics["examples"] == {"boolq": 4, "piqa": 2}
    assert len(scores["piqa"].examples) == 2


def test_summarize_average_is_unweighted():
    # The tables' Avg column is the mean over test sets, not over examples.
    scores = {"boolq": TaskScore(), "piqa": TaskScore()}
    for _ in range(9):
        scores["boolq"].add("true", "true", False, "")
    scores["piqa"].add("", "solution1", False, "")
    assert summarize(scores)["average_accuracy"] == pytest.approx(50.0)


def test_summarize_rejects_empty_test_set():
    with pytest.raises(ValueError, match="no evaluated examples"):
        summarize({"boolq": TaskScore()})
    assert math.isnan(TaskScore().accuracy)
