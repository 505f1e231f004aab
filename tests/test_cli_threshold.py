"""`blockrank threshold`: printed constants, JSON output and one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blockrank_ref.cli import main
from blockrank_ref.theorem4 import theorem4_constants

VIT_ARGS = ["threshold", "--n", "197", "--d", "768", "--delta", "0.1", "--eta", "0.5", "--tau", "2",
            "--alpha", "0.5", "--beta", "2"]


def test_text_output(capsys):
    assert main(VIT_ARGS) == 0
    out = capsys.readouterr().out
    expected = theorem4_constants(n=197, d=768, delta=0.1, eta=0.5, tau=2, alpha=0.5, beta=2)
    assert f"{expected.c_min:.6g}" in out
    for label in ("t_delta", "chi_delta", "K", "-W_{-1}(-K)", "log(2(n-1))", "c^2_min", "c_min", "Corrected"):
        assert label in out


def test_json_output(capsys):
    assert main(VIT_ARGS + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = theorem4_constants(n=197, d=768, delta=0.1, eta=0.5, tau=2, alpha=0.5, beta=2)
    assert data["paper"]["c2_min"] == expected.c2_min
    assert data["paper"]["lambert_term"] == expected.lambert_term
    assert data["corrected"]["c2_min"] > expected.c2_min


def test_json_lambert_not_applicable(capsys):
    args = ["threshold", "--n", "2", "--d", "100000", "--delta", "0.5", "--eta", "0.99", "--tau", "1",
            "--alpha", "1", "--beta", "1", "--json"]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["paper"]["lambert_term"] is None
    assert "does not bind" in data["paper"]["lambert_note"]
    assert data["paper"]["c2_small_max"] == "inf"


@pytest.mark.parametrize("flag, value, message", [
    ("--n", "1", "n must be an integer >= 2"),
    ("--d", "1", "d must be an integer >= 2"),
    ("--delta", "1.5", r"delta must be in (0, 1)"),
    ("--eta", "2", r"eta must be in (0, 1)"),
    ("--tau", "0.5", "tau must be >= 1"),
    ("--alpha", "0", r"alpha must be in (0, 1]"),
    ("--beta", "0.9", "beta must be >= 1"),
    ("--d", "76", "Theorem 4 gives nothing"),
])
def test_invalid_parameter_exit_2(capsys, flag, value, message):
    args = list(VIT_ARGS)
    args[args.index(flag) + 1] = value
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("blockrank threshold: error: ")
    assert message in err
    assert err.count("\n") == 1


def test_installed_script():
    script = Path(sys.executable).with_name("blockrank")
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ok = subprocess.run([str(script)] + VIT_ARGS + ["--json"], capture_output=True, text=True, env=env,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["paper"]["binding_term"] == "lambert"
    bad = subprocess.run([str(script)] + VIT_ARGS[:-1] + ["0.5"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert bad.returncode == 2
    assert "beta must be >= 1" in bad.stderr


def test_large_delta_notes_vacuous_guarantee(capsys) -> None:
    """delta = 0.7 is outside the theorem's stated (0, 1/2), and the as-printed proof then proves nothing."""
    from blockrank_ref.cli import main as cli_main

    argv = ["threshold", "--n", "197", "--d", "768", "--delta", "0.7", "--eta", "0.5", "--tau", "2",
            "--alpha", "0.9", "--beta", "1", "--json"]
    assert cli_main(argv) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert any("(0, 1/2)" in note for note in notes)
    assert any("guarantees nothing" in note for note in notes)
