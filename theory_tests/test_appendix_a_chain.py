"""Appendix A: each link of the softmax-Jacobian chain, and Eq. (A.6), as its own property.

    ||J(a)||_2 <= 1 - ||a||^2 <= 2 (1 - a_max) <= 2 min{(n-1) e^{-gamma}, 1}

All terms are computed without cancellation (see `blockrank_ref.bounds.softmax_chain`),
so nearly one-hot rows keep their digits. Tolerance: left <= right * (1 + 1e-12)
+ 1e-300; links one and two hold with equality for n = 2 (J has rank one and
||a|| = a_max is impossible, but 1 - ||a||^2 = 2 a_1 a_2 = ||J||), and the values
carry relative rounding errors near 1e-15.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from blockrank_ref.attention import row_margins
from blockrank_ref.bounds import damping_factor, softmax_chain
from blockrank_ref.sensitivity import exclusive_row_sums, softmax_jvp
from theory_tests import evidence
from theory_tests.profiles import examples

SLACK = 1e-12
# Logit rows: sizes 1-8, entries up to +-50 (margins far beyond e^{-gamma} ~ eps),
# sometimes with the maximum repeated (a tie, gamma = 0).
ENTRY = st.floats(-50.0, 50.0, allow_nan=False, width=64)


@st.composite
def logit_rows(draw) -> torch.Tensor:
    n = draw(st.integers(1, 8))
    s = draw(arrays(np.float64, (n,), elements=ENTRY))
    if n >= 2 and draw(st.booleans()):
        s[1] = s.max()
    return torch.from_numpy(s)


def _holds(left: float, right: float) -> bool:
    return left <= right * (1 + SLACK) + 1e-300


@pytest.mark.claim("appA.jacobian_trace", role="holds")
@settings(max_examples=examples(300))
@given(logit_rows())
@example(torch.tensor([0.3, -1.2], dtype=torch.float64))
def test_jacobian_norm_below_trace(s: torch.Tensor) -> None:
    """||J(a)||_2 <= 1 - ||a||^2 (J is PSD with trace 1 - ||a||^2; equality for n = 2)."""
    chain = softmax_chain(s)
    evidence.count("appA.jacobian_trace")
    if chain["one_minus_norm_sq"] > 0:
        evidence.track_max("appA.jacobian_trace", "worst_ratio", chain["jacobian_norm"] / chain["one_minus_norm_sq"])
    assert _holds(chain["jacobian_norm"], chain["one_minus_norm_sq"]), chain


@pytest.mark.claim("appA.trace_amax", role="holds")
@settings(max_examples=examples(300))
@given(logit_rows())
def test_trace_below_twice_one_minus_amax(s: torch.Tensor) -> None:
    """1 - ||a||^2 <= 2 (1 - a_max), because ||a|| >= a_max and 1 + ||a|| <= 2."""
    chain = softmax_chain(s)
    evidence.count("appA.trace_amax")
    if chain["two_one_minus_a_max"] > 0:
        evidence.track_max("appA.trace_amax", "worst_ratio",
                           chain["one_minus_norm_sq"] / chain["two_one_minus_a_max"])
    assert _holds(chain["one_minus_norm_sq"], chain["two_one_minus_a_max"]), chain


@pytest.mark.claim("appA.amax_margin", role="holds")
@settings(max_examples=examples(300))
@given(logit_rows())
@example(torch.tensor([2.0, 2.0, 0.0], dtype=torch.float64))
def test_one_minus_amax_below_damping(s: torch.Tensor) -> None:
    """2 (1 - a_max) <= 2 min{(n-1) e^{-gamma}, 1}; with a tie gamma = 0 and the right side is 2."""
    chain = softmax_chain(s)
    evidence.count("appA.amax_margin")
    if chain["two_damping"] > 0:
        evidence.track_max("appA.amax_margin", "worst_ratio", chain["two_one_minus_a_max"] / chain["two_damping"])
    assert _holds(chain["two_one_minus_a_max"], chain["two_damping"]), chain


@pytest.mark.claim("appA.eqA6", role="holds")
@settings(max_examples=examples(150))
@given(st.integers(1, 6).flatmap(
    lambda n: st.tuples(arrays(np.float64, (n, n), elements=ENTRY), arrays(np.float64, (n, n), elements=ENTRY))
))
def test_row_softmax_derivative_bound(pair: tuple[np.ndarray, np.ndarray]) -> None:
    """(A.6): ||D softmax(S)[dS]||_F <= 2 min{(n-1) e^{-gamma_min}, 1} ||dS||_F, for the exact operator norm.

    The operator is block-diagonal, so its norm is max_i ||J(a_i)||_2; both that and
    a random direction are checked.
    """
    S, dS = (torch.from_numpy(M) for M in pair)
    n = S.shape[0]
    A = torch.softmax(S, dim=-1)
    gamma_min = float(row_margins(S).min())
    bound = 2 * damping_factor(n, gamma_min)
    operator_norm = max(softmax_chain(row)["jacobian_norm"] for row in S)
    image = softmax_jvp(A, exclusive_row_sums(A), dS)
    evidence.count("appA.eqA6")
    if bound > 0:
        evidence.track_max("appA.eqA6", "worst_exact_over_bound", operator_norm / bound)
    assert _holds(operator_norm, bound)
    assert _holds(float(torch.linalg.matrix_norm(image)), bound * float(torch.linalg.matrix_norm(dS)))
