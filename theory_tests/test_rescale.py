"""V/O rescaling, the premise of the 'Large O' / 'Large V' experiment.

F(X, W_Q, W_K, W_V / s, s W_O) = F(X, W_Q, W_K, W_V, W_O) for s > 0, because F is
bilinear in (W_V, W_O). Under that change the exact V sensitivity ||A X|| ||W_O||
and Eq. (5) scale by s, while the O sensitivity ||A X W_V|| and Eq. (6) scale by
1/s; Q and K are untouched. Tolerance: relative 1e-10 (a handful of float64
products and spectral norms, errors near 1e-14); Q and K also allow an absolute
1e-13 of their undamped scale ||X||^3 ||W_V|| ||W_O|| max(||W_Q||, ||W_K||),
below which float64 cannot resolve them.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blockrank_ref.attention import attention
from blockrank_ref.bounds import theorem3_bounds
from blockrank_ref.sensitivity import sensitivities
from theory_tests import evidence
from theory_tests.profiles import examples
from theory_tests.strategies import AttentionCase, attention_cases

SCALES = st.floats(0.1, 10.0, allow_nan=False)


@pytest.mark.claim("rescale.vo", role="holds")
@settings(max_examples=examples(80))
@given(attention_cases(max_n=5, max_d=5), SCALES)
def test_function_preserved_and_sensitivities_scale(case: AttentionCase, s: float) -> None:
    """F is unchanged; sens_V and Eq. (5) scale by s, sens_O and Eq. (6) by 1/s; Q and K do not move."""
    W_Q, W_K, W_V, W_O = case.weights
    before = attention(case.X, W_Q, W_K, W_V, W_O)
    after = attention(case.X, W_Q, W_K, W_V / s, s * W_O)
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-12 * float(before.abs().max() + 1))

    exact_before = sensitivities(case.X, W_Q, W_K, W_V, W_O)
    exact_after = sensitivities(case.X, W_Q, W_K, W_V / s, s * W_O)
    bound_before = theorem3_bounds(case.X, W_Q, W_K, W_V, W_O)
    bound_after = theorem3_bounds(case.X, W_Q, W_K, W_V / s, s * W_O)
    evidence.count("rescale.vo")
    assert exact_after["V"] == pytest.approx(s * exact_before["V"], rel=1e-10, abs=1e-300)
    assert exact_after["O"] == pytest.approx(exact_before["O"] / s, rel=1e-10, abs=1e-300)
    assert bound_after["V"] == pytest.approx(s * bound_before["V"], rel=1e-10, abs=1e-300)
    assert bound_after["O"] == pytest.approx(bound_before["O"] / s, rel=1e-10, abs=1e-300)
    norms = [float(torch.linalg.matrix_norm(M, ord=2)) for M in (case.X, W_Q, W_K, W_V, W_O)]
    # Rounding floor of an exact Q/K sensitivity: 1e-13 of its undamped scale.
    floor = 1e-13 * norms[0] ** 3 * norms[3] * norms[4] * max(norms[1], norms[2])
    for block in ("Q", "K"):
        assert exact_after[block] == pytest.approx(exact_before[block], rel=1e-8, abs=floor)
        assert bound_after[block] == pytest.approx(bound_before[block], rel=1e-10, abs=1e-300)
    evidence.note("rescale.vo", "consequence",
                  "'Large O' (O x3, V /3) multiplies the V sensitivity by 3 and divides the O sensitivity by 3, "
                  "so the smaller-norm block becomes the more sensitive one, as the paper's rule predicts")
