"""`blockrank sensitivity FILE.npz`: exact block sensitivities of one attention layer and their Theorem-3 bounds."""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from blockrank_ref.cli import UsageError

ARRAYS = ("X", "W_Q", "W_K", "W_V", "W_O")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sensitivity",
        help="exact sensitivity of attention to each of W_Q, W_K, W_V, W_O, with the Theorem-3 bounds",
        description="Read X (n x d) and W_Q, W_K, W_V, W_O (d x d each) from an .npz file, in the paper's "
                    "convention: S = X W_Q^T W_K X^T / sqrt(d_h) and F = softmax(S) X W_V W_O, so W_Q and W_K "
                    "are laid out like nn.Linear weights (out x in) and W_V, W_O are their transposes. Print "
                    "gamma_min and, per block, the exact operator norm of D_W F (Frobenius to Frobenius), the "
                    "Theorem-3 bound and their ratio. With --heads H > 1 the bounds are the multi-head "
                    "transfer, with the corrected bound for W_O.",
    )
    parser.add_argument("file", type=Path, help=".npz file with arrays X, W_Q, W_K, W_V, W_O")
    parser.add_argument("--heads", type=int, default=1, help="number of attention heads H; must divide d (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def _open_archive(path: Path):
    """Return the opened .npz archive, or raise UsageError saying why the file is not one."""
    if not path.exists():
        raise UsageError(f"file not found: {path}")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; pass an .npz file written by numpy.savez")
    if not zipfile.is_zipfile(path):
        raise UsageError(f"{path} is not an .npz archive; write X, W_Q, W_K, W_V, W_O with numpy.savez")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise UsageError(f"cannot read {path} as an .npz archive ({error}); write it with numpy.savez") from error


def _read_array(archive, name: str) -> torch.Tensor:
    """Return one array as a float64 tensor, or raise UsageError when it is not finite and real."""
    try:
        value = archive[name]
    except ValueError as error:  # object arrays need pickle, which is never enabled here
        raise UsageError(f"array {name} cannot be read without pickle ({error}); store a numeric array") from error
    if not np.issubdtype(value.dtype, np.number) or np.iscomplexobj(value):
        raise UsageError(f"array {name} must be real-valued; got dtype {value.dtype}")
    if not np.all(np.isfinite(value)):
        raise UsageError(f"array {name} contains NaN or infinite values; pass finite values")
    return torch.from_numpy(np.asarray(value, dtype=np.float64))


def load_arrays(path: Path, heads: int) -> dict[str, torch.Tensor]:
    """Load and validate the five arrays as float64 tensors; raise UsageError naming what is wrong."""
    archive = _open_archive(path)
    missing = [name for name in ARRAYS if name not in archive.files]
    if missing:
        raise UsageError(f"{path} is missing array(s) {', '.join(missing)}; it contains {sorted(archive.files)}, "
                         f"and needs {', '.join(ARRAYS)}")
    arrays = {name: _read_array(archive, name) for name in ARRAYS}

    X = arrays["X"]
    if X.ndim != 2 or min(X.shape) < 1:
        raise UsageError(f"X must be a non-empty n x d matrix; got shape {tuple(X.shape)}")
    d = X.shape[1]
    for name in ARRAYS[1:]:
        if tuple(arrays[name].shape) != (d, d):
            raise UsageError(f"{name} must be d x d = {d} x {d} to match X; got shape {tuple(arrays[name].shape)}")
    if heads < 1 or d % heads:
        raise UsageError(f"--heads must be a positive divisor of d = {d}; got {heads}")
    return arrays


def analyse(arrays: dict[str, torch.Tensor], heads: int) -> dict:
    from blockrank_ref.attention import margins
    from blockrank_ref.bounds import multihead_bounds, theorem3_bounds
    from blockrank_ref.sensitivity import sensitivities

    weights = [arrays[name] for name in ARRAYS[1:]]
    exact = sensitivities(arrays["X"], *weights, heads=heads)
    if heads == 1:
        bounds = theorem3_bounds(arrays["X"], *weights)
        bound_keys = {"Q": "Q", "K": "K", "V": "V", "O": "O"}
    else:
        bounds = multihead_bounds(arrays["X"], *weights, heads=heads)
        bound_keys = {"Q": "Q", "K": "K", "V": "V", "O": "O_corrected"}
    blocks = {}
    for block, key in bound_keys.items():
        bound = bounds[key]
        blocks[block] = {"exact": exact[block], "bound": bound,
                         "ratio": exact[block] / bound if bound > 0 else None}
    n, d = arrays["X"].shape
    return {"n": n, "d": d, "heads": heads, "gamma_min": margins(arrays["X"], *weights[:2], heads).gamma_min,
            "blocks": blocks}


def run(args: argparse.Namespace) -> int:
    arrays = load_arrays(args.file, args.heads)
    result = analyse(arrays, args.heads)
    if args.json:
        print(json.dumps(result, indent=1, default=str))
        return 0
    print(f"n = {result['n']}, d = {result['d']}, heads = {result['heads']}, gamma_min = {result['gamma_min']:.6g}")
    print(f"{'block':<6}{'exact sensitivity':>20}{'Theorem-3 bound':>20}{'exact/bound':>14}")
    for block, row in result["blocks"].items():
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.3g}"
        print(f"{block:<6}{row['exact']:>20.6g}{row['bound']:>20.6g}{ratio:>14}")
    if args.heads > 1:
        print("bounds: multi-head transfer (gamma_min over heads, sqrt(d_h), max_h ||A_h||); the O bound is the "
              "corrected ||X|| (sum_h ||A_h||^2 ||W_V^h||^2)^(1/2)")
    return 0
