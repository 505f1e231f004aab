"""Answer extraction and scoring of the commonsense evaluation.

The rule is the one of NVlabs/DoRA ``commonsense_evaluate.py``: decode prompt and generation,
keep the text after the last "### Response:", strip it, and take the first match of the task's
case-sensitive label alternation (for BoolQ ``true|false``). No match gives the empty
prediction, which counts as wrong. The match is a substring match, so "untrue" reads as "true"
and "True" matches nothing, exactly as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from experiments.llama.data import TEST_SETS, TEST_SETS_BY_NAME
from experiments.llama.prompts import RESPONSE_MARKER


def response_text(decoded: str) -> str:
    """Return the stripped text after the last response marker (the whole text when there is none)."""
    return decoded.split(RESPONSE_MARKER)[-1].strip()


def extract_answer(test_set_name: str, decoded: str) -> str:
    """Return the first label of `test_set_name` in the response part of `decoded`, or "" if none."""
    test_set = TEST_SETS_BY_NAME.get(test_set_name)
    if test_set is None:
        raise ValueError(f"unknown test set {test_set_name!r}: choose from {sorted(TEST_SETS_BY_NAME)}")
    match = test_set.pattern.search(response_text(decoded))
    return match.group(0) if match else ""


@dataclass
class TaskScore:
    """Counts for one test set: examples, correct predictions and generations with no parsable label."""

    total: int = 0
    correct: int = 0
    unparsable: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)

    def add(self, prediction: str, answer: str, keep_example: bool, generation: str) -> None:
        self.total += 1
        self.correct += prediction == answer
        self.unparsable += prediction == ""
        if keep_example:
            self.examples.append({"generation": generation, "prediction": prediction, "answer": answer})

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")


def summarize(scores: dict[str, TaskScore]) -> dict[str, object]:
    """Return the metrics of a result file: accuracy per test set (%), their mean, unparsable counts.

    The average is the unweighted mean over test sets, as the "Avg" column of tables 3 and 4 is.
    """
    missing = [name for name, score in scores.items() if score.total == 0]
    if missing:
        raise ValueError(f"no evaluated examples for test sets {missing}; check the data folder and --limit")
    order = [test_set.name for test_set in TEST_SETS if test_set.name in scores]
    accuracy = {name: 100.0 * scores[name].accuracy for name in order}
    return {
        "accuracy": accuracy,
        "average_accuracy": sum(accuracy.values()) / len(accuracy),
        "examples": {name: scores[name].total for name in order},
        "unparsable": {name: scores[name].unparsable for name in order},
        "unparsable_total": sum(scores[name].unparsable for name in order),
    }
