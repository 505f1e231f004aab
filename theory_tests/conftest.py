"""Hypothesis profiles and the evidence plug-in of the theory suite.

Profiles, chosen with the environment variable HYPOTHESIS_PROFILE:
- `ci`: derandomised and smaller, used by `make test` so CI is reproducible;
- `default`: random, used by `make verify`;
- `thorough`: ten times the default examples, `make verify PROFILE=thorough`.
Tests size their example counts with `examples(k)`, which scales k by the profile.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from hypothesis import HealthCheck, settings
from threadpoolctl import threadpool_limits

from theory_tests import evidence

from theory_tests.profiles import PROFILE_SCALE
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, **_COMMON)
settings.register_profile("default", print_blob=True, **_COMMON)
settings.register_profile("thorough", print_blob=True, **_COMMON)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
if PROFILE not in PROFILE_SCALE:
    raise ValueError(f"HYPOTHESIS_PROFILE must be one of {sorted(PROFILE_SCALE)}; got {PROFILE!r}")
settings.load_profile(PROFILE)

# The suite runs thousands of small decompositions. On a busy 2-core machine a
# second BLAS or torch thread made them 10-100x slower (spinning threads), so
# the suite runs single-threaded.
torch.set_num_threads(1)
threadpool_limits(1)

_OUTCOMES: dict[str, dict[str, object]] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "claim(id, role): the paper claim a test checks; role is 'holds' (asserts the claim as stated), "
        "'refutes' (asserts a counterexample to the literal statement), 'corrected' (asserts a corrected "
        "statement) or 'measure' (records evidence only)",
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _OUTCOMES.setdefault(report.nodeid, {})
    if report.when == "call":
        entry["outcome"] = report.outcome
    elif report.outcome == "skipped":
        entry["outcome"] = "skipped"
    elif report.outcome == "failed":
        entry["outcome"] = "error"
    if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
        entry["reason"] = report.longrepr[2]
    elif report.outcome == "failed":
        entry["reason"] = str(report.longrepr)[-3000:]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker in item.iter_markers("claim"):
            claim_id = marker.args[0]
            role = marker.kwargs.get("role", marker.args[1] if len(marker.args) > 1 else "holds")
            _OUTCOMES.setdefault(item.nodeid, {"outcome": "not run"}).setdefault("claims", []).append(
                {"claim": claim_id, "role": role}
            )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("BLOCKRANK_EVIDENCE_JSON")
    if not path:
        return
    with open(path, "w") as stream:
        json.dump({"profile": PROFILE, "tests": _OUTCOMES, "evidence": evidence.EVIDENCE}, stream, indent=1)
