"""Theorem 4, Eq. (B.4): Gershgorin's bound ||X||_2^2 <= 1 + (n - 1) t for unit-norm rows.

X X^T has unit diagonal; if every off-diagonal entry satisfies |<x_i, x_j>| <= t,
each Gershgorin disc lies in [1 - (n - 1) t, 1 + (n - 1) t], so
||X||_2^2 = lambda_max(X X^T) <= 1 + (n - 1) t, which is chi_delta^2 at t = t_delta.
Equality holds when all rows are equal (t = 1, ||X||^2 = n).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from theory_tests import evidence
from theory_tests.profiles import examples

CLAIM = "thm4.B4"


@st.composite
def unit_rows(draw) -> np.ndarray:
    """Draw X with n in [1, 10], d in [1, 16] and unit-norm rows; rows near a common direction come up
    often (draw a shared direction and a spread), which is where the bound is tight."""
    n, d = draw(st.integers(1, 10)), draw(st.integers(1, 16))
    noise = draw(arrays(np.float64, (n, d), elements=st.floats(-1.0, 1.0)))
    direction = draw(arrays(np.float64, (d,), elements=st.floats(-1.0, 1.0)))
    spread = draw(st.sampled_from([0.0, 1e-3, 0.1, 1.0, 100.0]))
    X = direction + spread * noise
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    # Rows of (near) zero norm have no direction; they become e_1 (a valid unit row).
    X = np.where(norms > 1e-8, X / np.where(norms > 1e-8, norms, 1.0), np.eye(1, d))
    return X


@settings(max_examples=examples(200))
@given(X=unit_rows())
@example(X=np.ones((5, 3)) / math.sqrt(3))
@example(X=np.eye(4))
@pytest.mark.claim(CLAIM, role="holds")
def test_gershgorin_bound(X):
    """For unit-norm rows and t = max_{i != j} |<x_i, x_j>|, ||X||_2^2 <= 1 + (n - 1) t. Equality is
    attained (identical rows), so the check allows 1e-12 relative: the rounding of an eigenvalue of an
    n x n Gram matrix with entries <= 1."""
    n = X.shape[0]
    gram = X @ X.T
    t = float(np.abs(gram - np.diag(np.diag(gram))).max()) if n > 1 else 0.0
    norm_sq = float(np.linalg.norm(X, 2)) ** 2
    bound = 1 + (n - 1) * t
    evidence.count(CLAIM)
    evidence.track_max(CLAIM, "max_norm_sq_over_bound", norm_sq / bound, {"n": n, "d": X.shape[1]})
    assert norm_sq <= bound * (1 + 1e-12)


@pytest.mark.claim(CLAIM, role="holds")
def test_equality_with_identical_rows():
    """All rows equal: t = 1 and ||X||^2 = n = 1 + (n - 1) t, so (B.4) is sharp (rel 1e-14)."""
    X = np.tile(np.array([[0.6, 0.8]]), (7, 1))
    assert np.linalg.norm(X, 2) ** 2 == pytest.approx(7.0, rel=1e-14)
