"""Theorem 3 (Eqs. 3-6): each bound against the EXACT operator norm of D_W F, single head.

The exact norm comes from `blockrank_ref.sensitivity` (at these sizes a dense
eigen-decomposition of D D*, cross-checked against a materialised torch Jacobian
in tests/test_sensitivity.py), so a pass means no direction at all beats the
bound, not only random ones.

Tolerance: bound * (1 + 1e-9). Eqs. (5)-(6) are attained with equality (n = 1,
or rank-one A X), so the comparison needs slack for rounding; float64 spectral
norms of these 6 x 6 matrices carry relative errors near 1e-15, and 1e-9 is
still six orders below any violation worth reporting.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings

from blockrank_ref.bounds import theorem3_bounds
from blockrank_ref.sensitivity import AttentionPoint, operator_norm
from theory_tests import evidence
from theory_tests.profiles import examples
from theory_tests.strategies import AttentionCase, attention_cases

RELATIVE_SLACK = 1e-9
EQUATION = {"Q": "thm3.eq3", "K": "thm3.eq4", "V": "thm3.eq5", "O": "thm3.eq6"}


def _case(X, W_Q, W_K, W_V, W_O, unit_rows=False, tied_rows=False) -> AttentionCase:
    to = lambda M: torch.tensor(M, dtype=torch.float64)  # noqa: E731
    return AttentionCase(to(X), to(W_Q), to(W_K), to(W_V), to(W_O), heads=1, unit_rows=unit_rows,
                         tied_rows=tied_rows)


# n = 1: A = [1] and x lies along W_V's top left singular vector, so Eqs. (5)-(6)
# hold with equality; Q/K sensitivities vanish.
ONE_TOKEN = _case([[1.0, 0.0]], [[1.0, 2.0], [0.0, 1.0]], [[1.0, 0.0], [3.0, 1.0]],
                  [[2.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 1.0]], unit_rows=True)
# Two identical tokens: every logit row is a tie (gamma = 0), the damping factor is 1.
TIED = _case([[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]],
             [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], unit_rows=True, tied_rows=True)
# d = 1, n = 2 with a sharp softmax (gamma = 400): the Q bound is ~e^{-400}.
SHARP = _case([[1.0], [-1.0]], [[20.0]], [[10.0]], [[1.0]], [[1.0]], unit_rows=True)


def check_block(case: AttentionCase, block: str) -> None:
    point = AttentionPoint(case.X, *case.weights)
    exact = operator_norm(point, block)
    bound = theorem3_bounds(case.X, *case.weights)[block]
    claim = EQUATION[block]
    evidence.count(claim)
    if not case.unit_rows:
        evidence.count("thm3.unit_rows", key=f"examples_without_unit_rows_{block}")
    if bound > 0:
        evidence.track_max(claim, "worst_exact_over_bound", exact / bound,
                           {"n": case.X.shape[0], "d": case.X.shape[1], "unit_rows": case.unit_rows,
                            "tied_rows": case.tied_rows})
    assert exact <= bound * (1 + RELATIVE_SLACK), (
        f"Eq. for {block} violated: exact sensitivity {exact!r} > bound {bound!r} on {case.describe()}"
    )


@pytest.mark.claim("thm3.eq3", role="holds")
@pytest.mark.claim("thm3.unit_rows", role="holds")
@settings(max_examples=examples(120))
@given(attention_cases())
@example(ONE_TOKEN)
@example(TIED)
@example(SHARP)
def test_eq3_query_bound(case: AttentionCase) -> None:
    """Eq. (3): sens_Q <= 2 min{(n-1)e^{-gamma_min}, 1}/sqrt(d) ||W_O|| ||W_V|| ||W_K|| ||X||^3."""
    check_block(case, "Q")


@pytest.mark.claim("thm3.eq4", role="holds")
@pytest.mark.claim("thm3.unit_rows", role="holds")
@settings(max_examples=examples(120))
@given(attention_cases())
@example(ONE_TOKEN)
@example(TIED)
@example(SHARP)
def test_eq4_key_bound(case: AttentionCase) -> None:
    """Eq. (4): sens_K <= 2 min{(n-1)e^{-gamma_min}, 1}/sqrt(d) ||W_O|| ||W_V|| ||W_Q|| ||X||^3."""
    check_block(case, "K")


@pytest.mark.claim("thm3.eq5", role="holds")
@pytest.mark.claim("thm3.unit_rows", role="holds")
@settings(max_examples=examples(120))
@given(attention_cases())
@example(ONE_TOKEN)
@example(TIED)
def test_eq5_value_bound(case: AttentionCase) -> None:
    """Eq. (5): sens_V <= ||W_O|| ||A|| ||X||."""
    check_block(case, "V")


@pytest.mark.claim("thm3.eq6", role="holds")
@pytest.mark.claim("thm3.unit_rows", role="holds")
@settings(max_examples=examples(120))
@given(attention_cases())
@example(ONE_TOKEN)
@example(TIED)
def test_eq6_output_bound(case: AttentionCase) -> None:
    """Eq. (6): sens_O <= ||A|| ||W_V|| ||X||."""
    check_block(case, "O")


@pytest.mark.claim("thm3.eq5", role="measure")
@pytest.mark.claim("thm3.eq6", role="measure")
def test_value_output_bounds_attained() -> None:
    """Eqs. (5)-(6) are tight: with one token both hold with equality (relative error 1e-12, rounding only)."""
    point = AttentionPoint(ONE_TOKEN.X, *ONE_TOKEN.weights)
    bounds = theorem3_bounds(ONE_TOKEN.X, *ONE_TOKEN.weights)
    for block in ("V", "O"):
        exact = operator_norm(point, block)
        evidence.note(EQUATION[block], "equality_witness", "n = 1 (A = [1]): exact / bound = "
                      f"{exact / bounds[block]:.15f}")
        assert exact == pytest.approx(bounds[block], rel=1e-12)
