"""Proposition 2 (section 3.2.2): ||dW1 W2||_F <= ||dW1||_F ||W2||_2 and ||W1 dW2||_F <= ||W1||_2 ||dW2||_F.

Both inequalities over random shapes (1-6 per side) and scales, plus a witness
where equality holds (dW1 = u v^T with v the top left singular vector of W2).
Tolerance: relative 1e-12; the Frobenius and spectral norms of these small
float64 matrices carry errors near 1e-15.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from theory_tests import evidence
from theory_tests.profiles import examples

# Multiples of 1/1000 in [-1, 1]: no subnormal entries, whose squares would
# underflow and make a non-zero matrix report a zero norm.
ENTRY = st.integers(-1000, 1000).map(lambda k: k / 1000.0)
SLACK = 1e-12


@st.composite
def products(draw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    m, p, n = (draw(st.integers(1, 6)) for _ in range(3))
    scale = lambda: 10.0 ** draw(st.floats(-3.0, 3.0))  # noqa: E731
    W1 = draw(arrays(np.float64, (m, p), elements=ENTRY)) * scale()
    W2 = draw(arrays(np.float64, (p, n), elements=ENTRY)) * scale()
    dW1 = draw(arrays(np.float64, (m, p), elements=ENTRY).filter(lambda a: np.any(a != 0))) * scale()
    dW2 = draw(arrays(np.float64, (p, n), elements=ENTRY).filter(lambda a: np.any(a != 0))) * scale()
    return tuple(torch.from_numpy(a) for a in (W1, W2, dW1, dW2))


def fro(M: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(M))


def spectral(M: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(M, ord=2))


@pytest.mark.claim("prop2", role="holds")
@settings(max_examples=examples(300))
@given(products())
def test_both_inequalities(case) -> None:
    """||dW1 W2||_F / ||dW1||_F <= ||W2||_2 and ||W1 dW2||_F / ||dW2||_F <= ||W1||_2."""
    W1, W2, dW1, dW2 = case
    left_ratio = fro(dW1 @ W2) / fro(dW1)
    right_ratio = fro(W1 @ dW2) / fro(dW2)
    evidence.count("prop2")
    if spectral(W2) > 0:
        evidence.track_max("prop2", "worst_ratio_first", left_ratio / spectral(W2))
    if spectral(W1) > 0:
        evidence.track_max("prop2", "worst_ratio_second", right_ratio / spectral(W1))
    assert left_ratio <= spectral(W2) * (1 + SLACK)
    assert right_ratio <= spectral(W1) * (1 + SLACK)


@pytest.mark.claim("prop2", role="holds")
@settings(max_examples=examples(100))
@given(products())
def test_equality_witness(case) -> None:
    """Rank-one perturbations along the top singular vectors attain both bounds (relative error 1e-12)."""
    W1, W2, _, _ = case
    U2, _, _ = torch.linalg.svd(W2)
    _, _, V1h = torch.linalg.svd(W1)
    dW1 = torch.outer(torch.ones(W1.shape[0], dtype=torch.float64), U2[:, 0])  # rows along top left sv of W2
    dW2 = torch.outer(V1h[0], torch.ones(W2.shape[1], dtype=torch.float64))  # columns along top right sv of W1
    assert fro(dW1 @ W2) / fro(dW1) == pytest.approx(spectral(W2), rel=1e-12, abs=1e-300)
    assert fro(W1 @ dW2) / fro(dW2) == pytest.approx(spectral(W1), rel=1e-12, abs=1e-300)
    evidence.note("prop2", "equality_witness",
                  "dW1 = 1 u^T with u the top left singular vector of W2; dW2 = v 1^T with v the top right "
                  "singular vector of W1: both ratios equal the spectral norm")
