"""`blockrank sensitivity`: output on a valid file and one-line errors (exit 2) on bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from blockrank_ref.cli import main


def write_layer(path: Path, n: int = 4, d: int = 4, **overrides) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"X": rng.standard_normal((n, d))}
    arrays.update({name: rng.standard_normal((d, d)) for name in ("W_Q", "W_K", "W_V", "W_O")})
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_json_output_has_every_block(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["sensitivity", str(write_layer(tmp_path / "layer.npz")), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["blocks"]) == {"Q", "K", "V", "O"}
    for row in result["blocks"].values():
        assert 0 < row["exact"] <= row["bound"] * (1 + 1e-9)


def test_multihead_table_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["sensitivity", str(write_layer(tmp_path / "layer.npz")), "--heads", "2"]) == 0
    output = capsys.readouterr().out
    assert "heads = 2" in output
    assert "corrected" in output


@pytest.mark.parametrize("overrides, message", [
    ({"W_O": None}, "is missing array(s) W_O"),
    ({"W_V": np.ones((3, 4))}, "W_V must be d x d = 4 x 4"),
    ({"X": np.full((4, 4), np.inf)}, "X contains NaN or infinite values"),
])
def test_bad_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture, overrides: dict, message: str) -> None:
    path = write_layer(tmp_path / "layer.npz", **overrides)
    assert main(["sensitivity", str(path)]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert len(error.strip().splitlines()) == 1


def test_heads_not_dividing_width_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["sensitivity", str(write_layer(tmp_path / "layer.npz")), "--heads", "3"]) == 2
    assert "--heads must be a positive divisor of d = 4; got 3" in capsys.readouterr().err


def test_missing_and_corrupt_files_exit_2(tmp_path: Path) -> None:
    assert main(["sensitivity", str(tmp_path / "absent.npz")]) == 2
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not an archive")
    completed = subprocess.run([sys.executable, "-m", "blockrank_ref.cli", "sensitivity", str(corrupt)],
                               capture_output=True, text=True)
    assert completed.returncode == 2
    assert "is not an .npz archive" in completed.stderr


def test_npy_object_and_text_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A lone .npy array, an object array and a text file each give one line and exit 2."""
    single = tmp_path / "single.npy"
    np.save(single, np.ones((2, 2)))
    assert main(["sensitivity", str(single)]) == 2
    assert "is not an .npz archive" in capsys.readouterr().err

    objects = write_layer(tmp_path / "objects.npz", W_Q=np.array([None, 1], dtype=object))
    assert main(["sensitivity", str(objects)]) == 2
    error = capsys.readouterr().err
    assert "array W_Q cannot be read without pickle" in error
    assert len(error.strip().splitlines()) == 1

    text = tmp_path / "text.npz"
    text.write_text("X = 1\n")
    assert main(["sensitivity", str(text)]) == 2
    assert "allow_pickle" not in capsys.readouterr().err
