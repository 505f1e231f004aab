"""Commonsense-170k and the eight commonsense test sets in the LLM-Adapters / DoRA JSON format.

Every file is one JSON list of records ``{"instruction": str, "input": str, "output": str,
"answer": str}``. The instruction already carries the question, the numbered choices and an
"Answer format: ..." line; ``output`` is "the correct answer is <answer>". The training file
mixes all eight tasks. Two folder layouts are accepted, the one of AGI-Edgerunners/LLM-Adapters
(``ft-training_set/commonsense_170k.json``, ``dataset/<name>/test.json``) and the flat one the
NVlabs/DoRA README describes (``commonsense_170k.json`` next to ``dataset/``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

TRAIN_FILE = "commonsense_170k.json"
TRAIN_LOCATIONS = (TRAIN_FILE, f"ft-training_set/{TRAIN_FILE}")


@dataclass(frozen=True)
class CommonsenseTask:
    """Evaluation task: folder name, column name in tables 3 and 4 of the paper, answer labels."""

    name: str
    column: str
    labels: tuple[str, ...]

    @property
    def pattern(self) -> re.Pattern[str]:
        """Case-sensitive alternation of the labels, the regex of the reference evaluation script."""
        return re.compile("|".join(re.escape(label) for label in self.labels))


def _numbered(stem: str, count: int) -> tuple[str, ...]:
    return tuple(f"{stem}{i}" for i in range(1, count + 1))


# In the column order of tables 3 and 4 of "LoRA in the right place". SIQA has three choices and ARC and
# OpenBookQA four, but the reference script accepts answer1-answer5 for all four tasks.
TEST_SETS = (
    CommonsenseTask("boolq", "BoolQ", ("true", "false")),
    CommonsenseTask("piqa", "PIQA", _numbered("solution", 2)),
    CommonsenseTask("social_i_qa", "SIQA", _numbered("answer", 5)),
    CommonsenseTask("hellaswag", "HellaSwag", _numbered("ending", 4)),
    CommonsenseTask("winogrande", "WinoGrande", _numbered("option", 2)),
    CommonsenseTask("ARC-Easy", "ARC-e", _numbered("answer", 5)),
    CommonsenseTask("ARC-Challenge", "ARC-c", _numbered("answer", 5)),
    CommonsenseTask("openbookqa", "OBQA", _numbered("answer", 5)),
)
TEST_SETS_BY_NAME = {test_set.name: test_set for test_set in TEST_SETS}

# Test-set sizes in the LLM-Adapters repository; HellaSwag is the 10,042-example validation split.
REFERENCE_TEST_SIZES = {
    "boolq": 3270, "piqa": 1838, "social_i_qa": 1954, "hellaswag": 10042,
    "winogrande": 1267, "ARC-Easy": 2376, "ARC-Challenge": 1172, "openbookqa": 500,
}


def find_train_file(data_dir: Path) -> Path:
    """Return the commonsense-170k file under `data_dir`, or raise FileNotFoundError naming the paths tried."""
    data_dir = Path(data_dir)
    candidates = [data_dir / location for location in TRAIN_LOCATIONS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(candidate) for candidate in candidates)
    raise FileNotFoundError(
        f"commonsense-170k training file not found (tried {tried}); download commonsense_170k.json "
        "from the AGI-Edgerunners/LLM-Adapters repository (ft-training_set/) into the data folder"
    )


def find_test_file(data_dir: Path, name: str) -> Path:
    """Return `<data_dir>/dataset/<name>/test.json` (or `<data_dir>/<name>/test.json`)."""
    if name not in TEST_SETS_BY_NAME:
        raise ValueError(f"unknown test set {name!r}: choose from {sorted(TEST_SETS_BY_NAME)}")
    data_dir = Path(data_dir)
    candidates = [data_dir / "dataset" / name / "test.json", data_dir / name / "test.json"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"test set {name!r} not found (tried {candidates[0]} and {candidates[1]}); copy the "
        "dataset/ folder of the AGI-Edgerunners/LLM-Adapters repository into the data folder"
    )


def missing_data_files(data_dir: Path, test_sets: list[str] | None = None) -> list[str]:
    """Return one message per missing file (training file, then test sets); empty when all exist."""
    missing = []
    try:
        find_train_file(data_dir)
    except FileNotFoundError as error:
        missing.append(str(error))
    for name in test_sets or [test_set.name for test_set in TEST_SETS]:
        try:
            find_test_file(data_dir, name)
        except FileNotFoundError as error:
            missing.append(str(error))
    return missing


def read_records(path: Path, *, need_output: bool) -> list[dict[str, Any]]:
    """Read one JSON list of records, checking the fields each record must have."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); expected a list of records") from error
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path} must contain a non-empty JSON list of records, got {type(records).__name__}")

    required = ("instruction", "answer", "output") if need_output else ("instruction", "answer")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: record {index} is a {type(record).__name__}, expected an object")
        for field in required:
            if not isinstance(record.get(field), str):
                raise ValueError(
                    f"{path}: record {index} has no string field {field!r} "
                    f"(fields: {sorted(record)}); is this a file in the LLM-Adapters format?"
                )
        if not isinstance(record.get("input", ""), str):
            raise ValueError(f"{path}: record {index} has a non-string 'input' field")
    return records


def read_test_set(data_dir: Path, name: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Read one test set and check that every gold answer is one of the task's labels."""
    test_set = TEST_SETS_BY_NAME.get(name)
    if test_set is None:
        raise ValueError(f"unknown test set {name!r}: choose from {sorted(TEST_SETS_BY_NAME)}")
    path = find_test_file(data_dir, name)
    records = read_records(path, need_output=False)

    for index, record in enumerate(records):
        if record["answer"] not in test_set.labels:
            raise ValueError(
                f"{path}: record {index} has answer {record['answer']!r}, expected one of "
                f"{list(test_set.labels)}; is the file in the right folder?"
            )
    if limit is not None:
        records = records[:limit]
    expected = REFERENCE_TEST_SIZES[name]
    if limit is None and len(records) != expected:
        logger.warning("%s has %d examples; the reference copy has %d", path, len(records), expected)
    return records


def split_train_validation(records: list[dict[str, Any]], validation_size: int,
                           seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Hold out `validation_size` records exactly as `datasets.Dataset.train_test_split(seed=...)`.

    That method (datasets 2.x) draws ``np.random.default_rng(seed).permutation(n)`` and takes the
    first `test_size` indices as the test split and the rest, in permuted order, as the train split.
    """
    if not 0 < validation_size < len(records):
        raise ValueError(
            f"validation_size={validation_size} must be positive and smaller than the "
            f"{len(records)} training records"
        )
    permutation = np.random.default_rng(seed).permutation(len(records))
    validation = [records[i] for i in permutation[:validation_size]]
    train = [records[i] for i in permutation[validation_size:]]
    return train, validation
