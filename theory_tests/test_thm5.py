"""Theorem 5 (section 3.2.4, appendix C): token-level controllability through W_V and W_O.

With B = A X and F_i = b_i^T W_V W_O:
- perturbing W_V changes row i by exactly b_i^T dW_V W_O (F is linear in W_V, so
  the first-order change is the whole change), which lies in row(W_O);
- if b_i^T W_V != 0, dW_O = (b_i^T W_V)^+ dy realises any target dy for row i;
- if b_i^T W_V = 0, no dW_O moves row i at all, so that hypothesis is needed.
Multi-head: dW_V^h moves row i inside row(W_O^h), of dimension <= d_h, but the
whole layer's dW_V reaches row(W_O), which is all of R^d when W_O has full rank.
Tolerances: residuals relative to the largest entry, 1e-9 (float64 products of
6 x 6 matrices and one pseudoinverse; rounding near 1e-14 times a condition number).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from blockrank_ref.attention import attention, attention_matrices
from theory_tests import evidence
from theory_tests.profiles import examples
from theory_tests.strategies import UNIT, AttentionCase, attention_cases

TOL = 1e-9


def row_space_residual(v: torch.Tensor, M: torch.Tensor) -> float:
    """Return ||v - P v|| / max(||v||, tiny) with P the orthogonal projector onto row(M)."""
    if not torch.any(M):
        return float(torch.linalg.vector_norm(v)) / max(float(torch.linalg.vector_norm(v)), 1e-300)
    _, singular, Vh = torch.linalg.svd(M, full_matrices=False)
    basis = Vh[singular > singular[0] * 1e-10]  # r x d, orthonormal rows spanning row(M)
    projected = (v @ basis.T) @ basis
    return float(torch.linalg.vector_norm(v - projected)) / max(float(torch.linalg.vector_norm(v)), 1e-300)


@st.composite
def low_rank_output(draw) -> tuple[AttentionCase, torch.Tensor, int]:
    """An attention case whose W_O has rank r < d, a perturbation dW_V and a token index."""
    case = draw(attention_cases(max_n=5, max_d=6).filter(lambda c: c.X.shape[1] >= 2))
    d = case.X.shape[1]
    rank = draw(st.integers(1, d - 1))
    left = torch.from_numpy(draw(arrays(np.float64, (d, rank), elements=UNIT)))
    right = torch.from_numpy(draw(arrays(np.float64, (rank, d), elements=UNIT)))
    W_O = left @ right
    dW_V = torch.from_numpy(draw(arrays(np.float64, (d, d), elements=UNIT)))
    i = draw(st.integers(0, case.X.shape[0] - 1))
    low = AttentionCase(case.X, case.W_Q, case.W_K, case.W_V, W_O, 1, case.unit_rows, case.tied_rows)
    return low, dW_V, i


@pytest.mark.claim("thm5.v_rowspace", role="holds")
@settings(max_examples=examples(150))
@given(low_rank_output())
def test_value_change_in_output_row_space(drawn) -> None:
    """The exact change of row i under W_V + dW_V equals b_i^T dW_V W_O and lies in row(W_O)."""
    case, dW_V, i = drawn
    W_Q, W_K, W_V, W_O = case.weights
    change = attention(case.X, W_Q, W_K, W_V + dW_V, W_O) - attention(case.X, W_Q, W_K, W_V, W_O)
    b_i = (attention_matrices(case.X, W_Q, W_K)[0] @ case.X)[i]
    predicted = b_i @ dW_V @ W_O
    scale = float(change.abs().max()) + float(predicted.abs().max()) + 1e-300
    evidence.count("thm5.v_rowspace")
    assert float((change[i] - predicted).abs().max()) <= TOL * scale
    assert row_space_residual(change[i], W_O) <= TOL or float(change[i].abs().max()) <= 1e-12 * scale


@pytest.mark.claim("thm5.o_pinv", role="holds")
@settings(max_examples=examples(150))
@given(attention_cases(max_n=5, max_d=6), st.data())
def test_pseudoinverse_realises_any_target(case: AttentionCase, data) -> None:
    """dW_O = (b_i^T W_V)^+ dy moves row i by exactly dy whenever b_i^T W_V != 0."""
    W_Q, W_K, W_V, W_O = case.weights
    n, d = case.X.shape
    i = data.draw(st.integers(0, n - 1))
    target = torch.from_numpy(data.draw(arrays(np.float64, (d,), elements=UNIT)))
    row = (attention_matrices(case.X, W_Q, W_K)[0] @ case.X)[i] @ W_V  # b_i^T W_V
    if float(torch.linalg.vector_norm(row)) < 1e-6 * (float(W_V.abs().max()) + 1e-300):
        return  # covered by the zero case below
    dW_O = torch.linalg.pinv(row[None, :]) @ target[None, :]  # d x 1 times 1 x d
    change = attention(case.X, W_Q, W_K, W_V, W_O + dW_O) - attention(case.X, W_Q, W_K, W_V, W_O)
    evidence.count("thm5.o_pinv")
    others_moved = n > 1 and bool(float((change[torch.arange(n) != i]).abs().max()) > 1e-9)
    if others_moved:
        evidence.count("thm5.o_pinv", key="cases_where_other_tokens_also_moved")
    torch.testing.assert_close(change[i], target, rtol=TOL, atol=TOL * (1 + float(target.abs().max())))


@pytest.mark.claim("thm5.o_pinv", role="holds")
def test_zero_case_moves_nothing() -> None:
    """If b_i^T W_V = 0, every dW_O leaves row i unchanged, so the theorem's hypothesis is necessary."""
    # Both tokens lie on the first axis, so every b_i does too, and W_V kills that axis.
    X = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    W_V = torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    W_Q = torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=torch.float64)
    W_K = torch.tensor([[1.0, 0.0], [0.3, 1.0]], dtype=torch.float64)
    W_O = torch.eye(2, dtype=torch.float64)
    b_0 = (attention_matrices(X, W_Q, W_K)[0] @ X)[0]
    generator = torch.Generator().manual_seed(0)
    dW_O = torch.randn(2, 2, dtype=torch.float64, generator=generator)
    change = attention(X, W_Q, W_K, W_V, W_O + dW_O) - attention(X, W_Q, W_K, W_V, W_O)
    evidence.note("thm5.o_pinv", "zero_case", f"b_0^T W_V = {(b_0 @ W_V).tolist()}: row 0 moves by "
                  f"{float(change[0].abs().max()):.3g} under a random dW_O")
    assert float((b_0 @ W_V).abs().max()) < 1e-12
    assert float(change[0].abs().max()) < 1e-12


@pytest.mark.claim("thm5.multihead", role="holds")
@settings(max_examples=examples(60))
@given(attention_cases(max_n=5, max_d=6, multihead=True), st.data())
def test_head_restriction_and_layer_span(case: AttentionCase, data) -> None:
    """dW_V^h moves row i inside row(W_O^h); over all heads the reachable rows span row(W_O)."""
    W_Q, W_K, W_V, W_O = case.weights
    n, d = case.X.shape
    width = d // case.heads
    i = data.draw(st.integers(0, n - 1))
    base = attention(case.X, W_Q, W_K, W_V, W_O, heads=case.heads)
    reached = []
    for h in range(case.heads):
        rows = slice(h * width, (h + 1) * width)
        for column in range(width):
            dW_V = torch.zeros(d, d, dtype=torch.float64)
            for k in range(d):
                dW_V[k, rows.start + column] = 1.0 if k == (column + h) % d else 0.0
            dW_V[:, rows.start + column] += torch.linspace(0.1, 0.7, d, dtype=torch.float64)
            change = attention(case.X, W_Q, W_K, W_V + dW_V, W_O, heads=case.heads) - base
            scale = float(change[i].abs().max())
            if scale > 1e-12:
                assert row_space_residual(change[i], W_O[rows, :]) <= TOL
            reached.append(change[i])
    reach_rank = int(torch.linalg.matrix_rank(torch.stack(reached), rtol=1e-9))
    evidence.count("thm5.multihead")
    evidence.note("thm5.multihead", "layer_level",
                  "each head is confined to row(W_O^h) (dimension <= d_h), but the layer's dW_V reaches "
                  "row(W_O); for a full-rank W_O that is all of R^d, so the restriction is then vacuous")
    assert reach_rank <= int(torch.linalg.matrix_rank(W_O, rtol=1e-9))
