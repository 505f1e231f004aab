"""`blockrank threshold`: the constants and the c threshold of Theorem 4 (Eq. 7) for given parameters."""

from __future__ import annotations

import argparse
import json
import math

from blockrank_ref.cli import UsageError
from blockrank_ref.theorem4 import corrected_theorem4_constants, theorem4_constants

HELP = {
    "n": "number of tokens (rows of X), an integer >= 2",
    "d": "model width (columns of X), an integer >= 2",
    "delta": "failure probability, in (0, 1)",
    "eta": "target ratio of the Q/K bounds to the V/O bounds, in (0, 1)",
    "tau": "weight norms lie in [c, tau c]; tau >= 1",
    "alpha": "lambda_min(M_sym) >= alpha c^2; alpha in (0, 1]",
    "beta": "||W_Q^T W_K||_2 <= beta c^2; beta >= 1",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "threshold",
        help="print the constants and the c threshold of Theorem 4 (Eq. 7)",
        description="Print t_delta, chi_delta, a, K, -W_{-1}(-K), log(2(n-1)), c^2_min and c_min of "
                    "Theorem 4 as printed, and the corrected threshold that the repaired proof supports.",
    )
    parser.add_argument("--n", type=int, required=True, help=HELP["n"])
    parser.add_argument("--d", type=int, required=True, help=HELP["d"])
    for name in ("delta", "eta", "tau", "alpha", "beta"):
        parser.add_argument(f"--{name}", type=float, required=True, help=HELP[name])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(run=run)


def _format(value: float | None) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.6g}"


def _failure_line(constants) -> str:
    proved = constants.failure_probability_proved
    line = f"  failure prob.    stated {_format(constants.failure_probability_stated)}, proved {_format(proved)}"
    if proved >= 1:
        line += "   (>= 1: the proof guarantees nothing at this delta)"
    return line


def _notes(parameters: dict, paper, corrected) -> list[str]:
    """Return remarks a reader needs next to the numbers (delta range, vacuous guarantees)."""
    notes = []
    if parameters["delta"] >= 0.5:
        notes.append("Theorem 4 states delta in (0, 1/2); the proof's algebra also runs for delta in [1/2, 1)")
    for name, constants in (("as printed", paper), ("corrected", corrected)):
        if constants is not None and constants.failure_probability_proved >= 1:
            notes.append(f"{name}: the proved failure probability is >= 1, so the proof guarantees nothing here")
    return notes


def _lines(title: str, constants, show_log_term: bool = True) -> list[str]:
    lambert = (_format(constants.lambert_term) if constants.lambert_applies
               else f"does not apply ({constants.lambert_note})")
    lines = [
        title,
        f"  t_delta          {_format(constants.t_delta)}",
        f"  chi_delta        {_format(constants.chi_delta)}",
        f"  a                {_format(constants.a)}",
        f"  K                {_format(constants.K)}",
        f"  -W_{{-1}}(-K)      {lambert}",
        f"  log(2(n-1))      {_format(constants.log_term)}",
        f"  c^2_min          {_format(constants.c2_min)}   (set by: {constants.binding_term})",
        f"  c_min            {_format(constants.c_min)}",
        f"  also for c^2 <=  {_format(constants.c2_small_max)}   (small-c region of the ratio bound)",
        _failure_line(constants),
    ]
    if not show_log_term:
        lines = [line for line in lines if not line.startswith("  log(2(n-1))")]
    return lines


def _plain(constants) -> dict:
    """Return to_dict() with infinities as the string 'inf', which JSON cannot carry as a number."""
    return {key: "inf" if isinstance(value, float) and math.isinf(value) else value
            for key, value in constants.to_dict().items()}


def run(args: argparse.Namespace) -> int:
    parameters = {name: getattr(args, name) for name in ("n", "d", "delta", "eta", "tau", "alpha", "beta")}
    try:
        paper = theorem4_constants(**parameters)
    except ValueError as error:
        raise UsageError(str(error)) from None
    # The corrected t_delta is slightly larger, so a can turn <= 0 there alone.
    try:
        corrected, corrected_error = corrected_theorem4_constants(**parameters), None
    except ValueError as error:
        corrected, corrected_error = None, str(error)

    notes = _notes(parameters, paper, corrected)
    if args.json:
        print(json.dumps({
            "paper": _plain(paper),
            "corrected": _plain(corrected) if corrected else {"error": corrected_error},
            "notes": notes,
        }, indent=1))
        return 0
    print("\n".join(_lines("Theorem 4, Eq. (7) as printed:", paper)))
    corrected_title = "Corrected (t from log(3 n (n-1) / delta), no log(2(n-1)) term):"
    if corrected is None:
        print(f"{corrected_title}\n  not available: {corrected_error}")
    else:
        print("\n".join(_lines(corrected_title, corrected, show_log_term=False)))
    for note in notes:
        print(f"note: {note}")
    return 0
