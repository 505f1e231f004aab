"""Exact sensitivities against an explicit reference on random and degenerate inputs.

The reference materialises D_W F column by column from the closed-form jvp
(itself checked against torch.func.jvp) and takes its largest singular value.
Inputs come from the theory suite's strategy: tied tokens, zero rows and
columns, rank-deficient weights, sharp and flat softmax, one and several heads.
Tolerance: relative 1e-9, plus an absolute rounding floor of 1e-13 times the
largest natural scale of the layer's derivatives (||X|| ||W_O||, ||X|| ||W_V||
and ||X||^3 ||W_O|| ||W_V|| max(||W_Q||, ||W_K||)): float64 cannot resolve a
sensitivity below that, and an exactly zero derivative shows up as noise there.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from blockrank_ref.sensitivity import BLOCKS, AttentionPoint, head_operator_norm, operator_norm
from theory_tests.strategies import AttentionCase, attention_cases


def materialised(point: AttentionPoint, block: str) -> torch.Tensor:
    d = point.d
    columns = []
    for index in range(d * d):
        direction = torch.zeros(d * d, dtype=torch.float64)
        direction[index] = 1.0
        columns.append(point.jvp(block, direction.reshape(d, d)).reshape(-1))
    return torch.stack(columns, dim=1)  # (n d) x (d d)


def head_only(case: AttentionCase, h: int) -> AttentionPoint:
    """Zero every other head's W_V columns and W_O rows, so the layer output is head h's alone."""
    width = case.X.shape[1] // case.heads
    rows = slice(h * width, (h + 1) * width)
    W_V = torch.zeros_like(case.W_V)
    W_O = torch.zeros_like(case.W_O)
    W_V[:, rows] = case.W_V[:, rows]
    W_O[rows, :] = case.W_O[rows, :]
    return AttentionPoint(case.X, case.W_Q, case.W_K, W_V, W_O, heads=case.heads)


def natural_scale(point: AttentionPoint) -> float:
    norm = lambda M: float(torch.linalg.matrix_norm(M, ord=2))  # noqa: E731
    X, W_Q, W_K, W_V, W_O = (norm(M) for M in (point.X, point.W_Q, point.W_K, point.W_V, point.W_O))
    return max(X * W_O, X * W_V, X**3 * W_O * W_V * max(W_Q, W_K))


def close(value: float, jacobian: torch.Tensor, point: AttentionPoint) -> bool:
    reference = float(torch.linalg.matrix_norm(jacobian, ord=2))
    return abs(value - reference) <= 1e-9 * reference + 1e-13 * natural_scale(point)


@settings(max_examples=60, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(attention_cases(max_n=5, max_d=4))
def test_layer_norms_match_reference(case: AttentionCase) -> None:
    point = AttentionPoint(case.X, *case.weights, heads=case.heads)
    for block in BLOCKS:
        assert close(operator_norm(point, block), materialised(point, block), point), block


@settings(max_examples=40, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(attention_cases(max_n=5, max_d=4, multihead=True))
def test_head_norms_match_reference(case: AttentionCase) -> None:
    point = AttentionPoint(case.X, *case.weights, heads=case.heads)
    for h in range(case.heads):
        isolated = head_only(case, h)
        for block in BLOCKS:
            assert close(head_operator_norm(point, block, h), materialised(isolated, block), point), (h, block)


def test_rank_one_values_case() -> None:
    """A shrunk case where a Gram-square-root formulation returned 2e-21 instead of 1.26e-9."""
    X = torch.tensor([[0.29, 0, 0, 9.16], [0.29, 0, 0, 9.16], [0.01, 0, 0, 0]], dtype=torch.float64)
    W_Q, W_K, W_V, W_O = (torch.zeros(4, 4, dtype=torch.float64) for _ in range(4))
    W_Q[1, 3], W_K[1, 3], W_V[0, 2], W_O[2, 3] = 1.93, 0.441, 0.001, 0.001
    for s in (1.0, 3.0):
        point = AttentionPoint(X, W_Q, W_K, W_V / s, s * W_O)
        assert operator_norm(point, "Q") == pytest.approx(1.256752e-09, rel=1e-6)
        assert close(operator_norm(point, "Q"), materialised(point, "Q"), point)
