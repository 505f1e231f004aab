"""Evidence that the theory tests record for the verification report.

Tests call these functions while they run; `conftest.py` writes the collected
evidence, with every test's outcome, to the JSON file named by the environment
variable BLOCKRANK_EVIDENCE_JSON, and `theory_tests.report` turns it into
reports/verification.{md,json}. Without that variable nothing is written, so a
plain `pytest` run behaves as usual.
"""

from __future__ import annotations

import math
from typing import Any

EVIDENCE: dict[str, dict[str, Any]] = {}


def _entry(claim: str) -> dict[str, Any]:
    return EVIDENCE.setdefault(claim, {})


def _plain(value: Any) -> Any:
    """Convert numpy and torch scalars and arrays to JSON-serialisable Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def note(claim: str, key: str, value: Any) -> None:
    """Store one fact about a claim (a recomputed value, a counterexample, a count)."""
    _entry(claim)[key] = _plain(value)


def count(claim: str, key: str = "examples_tried", by: int = 1) -> None:
    """Add `by` to a counter of a claim, by default the number of examples tried."""
    entry = _entry(claim)
    entry[key] = entry.get(key, 0) + by


def track_max(claim: str, key: str, value: float, example: Any = None) -> None:
    """Keep the largest value seen under `key` (for example the worst exact/bound ratio) and its input."""
    entry = _entry(claim)
    if not math.isfinite(value):
        return
    if key not in entry or value > entry[key]:
        entry[key] = float(value)
        if example is not None:
            entry[key + "_at"] = _plain(example)


def track_min(claim: str, key: str, value: float, example: Any = None) -> None:
    """Keep the smallest value seen under `key` and its input."""
    entry = _entry(claim)
    if not math.isfinite(value):
        return
    if key not in entry or value < entry[key]:
        entry[key] = float(value)
        if example is not None:
            entry[key + "_at"] = _plain(example)
