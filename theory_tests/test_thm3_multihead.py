"""Theorem 3 transferred to H-head attention (F = sum_h A_h X W_V^h W_O^h, logits scaled by 1/sqrt(d_h)).

The paper states Theorem 3 for one head. The transfer a reader writes first
replaces gamma_min by its minimum over heads, sqrt(d) by sqrt(d_h) and ||A|| by
max_h ||A_h||. The same proof carries Eqs. (3)-(5) over, but not Eq. (6): the
O-derivative is dW -> [A_1 X W_V^1, ..., A_H X W_V^H] dW, whose norm can exceed
max_h ||A_h|| ||W_V|| ||X|| when heads attend to different tokens. The corrected
bound ||X|| (sum_h ||A_h||^2 ||W_V^h||^2)^{1/2} follows from ||[C_1..C_H]||^2 <=
sum_h ||C_h||^2. Each head on its own obeys single-head Theorem 3 with d_h.
Tolerance: relative 1e-9, as in test_thm3 (exact norms come from Lanczos or dense
eigen-decompositions accurate to ~1e-12 here).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from blockrank_ref.bounds import head_bounds, multihead_bounds
from blockrank_ref.sensitivity import AttentionPoint, head_operator_norm, operator_norm
from theory_tests import evidence
from theory_tests.profiles import examples
from theory_tests.strategies import AttentionCase, attention_cases

SLACK = 1e-9


def _opposite_heads(sharpness: float = 20.0) -> AttentionCase:
    """n = d = 2, two heads of width 1, X = I, W_V = W_O = I: head 1 attends to token 1, head 2 to token 2.

    Then A_1 -> [[1, 0], [1, 0]], A_2 -> [[0, 1], [0, 1]], and C = [A_1 e_1, A_2 e_2]
    -> [[1, 1], [1, 1]] with norm 2, while max_h ||A_h|| ||W_V|| ||X|| -> sqrt(2).
    """
    eye = torch.eye(2, dtype=torch.float64)
    W_Q = torch.tensor([[sharpness, sharpness], [sharpness, sharpness]], dtype=torch.float64)
    W_K = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    return AttentionCase(eye, W_Q, W_K, eye.clone(), eye.clone(), heads=2, unit_rows=True, tied_rows=False)


@pytest.mark.claim("thm3.multihead", role="refutes")
def test_transferred_output_bound_fails() -> None:
    """Counterexample to Eq. (6) with ||A|| read as max_h ||A_h||: exact sens_O = 2 > sqrt(2)."""
    case = _opposite_heads()
    point = AttentionPoint(case.X, *case.weights, heads=case.heads)
    exact = operator_norm(point, "O")
    bounds = multihead_bounds(case.X, *case.weights, heads=case.heads)
    evidence.note("thm3.multihead", "counterexample_eq6", {
        "X": case.X.tolist(), "W_Q": case.W_Q.tolist(), "W_K": case.W_K.tolist(), "W_V": "I", "W_O": "I",
        "heads": 2, "exact_sens_O": exact, "transferred_bound": bounds["O"], "corrected_bound": bounds["O_corrected"],
    })
    assert exact > bounds["O"] * 1.3
    assert exact <= bounds["O_corrected"] * (1 + SLACK)


@pytest.mark.claim("thm3.multihead", role="corrected")
@settings(max_examples=examples(60))
@given(attention_cases(max_n=5, max_d=6, multihead=True))
def test_transferred_bounds_and_corrected_output_bound(case: AttentionCase) -> None:
    """Eqs. (3)-(5) transferred, and the corrected O bound, against the exact layer sensitivities."""
    point = AttentionPoint(case.X, *case.weights, heads=case.heads)
    bounds = multihead_bounds(case.X, *case.weights, heads=case.heads)
    evidence.count("thm3.multihead")
    for block, key in (("Q", "Q"), ("K", "K"), ("V", "V"), ("O", "O_corrected")):
        exact = operator_norm(point, block)
        if bounds[key] > 0:
            evidence.track_max("thm3.multihead", f"worst_exact_over_bound_{key}", exact / bounds[key])
        assert exact <= bounds[key] * (1 + SLACK), (block, exact, bounds[key], case.describe())


@pytest.mark.claim("thm3.multihead", role="corrected")
@settings(max_examples=examples(40))
@given(attention_cases(max_n=5, max_d=6, multihead=True))
def test_each_head_obeys_single_head_theorem(case: AttentionCase) -> None:
    """Head h alone (its slices, scale 1/sqrt(d_h)) satisfies Eqs. (3)-(6) with its own A_h and gamma."""
    point = AttentionPoint(case.X, *case.weights, heads=case.heads)
    for h in range(case.heads):
        bounds = head_bounds(case.X, *case.weights, heads=case.heads, h=h)
        for block, bound in bounds.items():
            exact = head_operator_norm(point, block, h)
            assert exact <= bound * (1 + SLACK), (h, block, exact, bound, case.describe())
