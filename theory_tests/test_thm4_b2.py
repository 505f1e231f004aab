"""Theorem 4, Eq. (B.2): the union bound over the n (n - 1) / 2 pairs of rows.

With t_delta = sqrt(2 / (d - 1) log(2 n (n - 1) / delta)), every pair contributes
2 exp(-(d - 1) t_delta^2 / 2) = delta / (n (n - 1)), so the n (n - 1) / 2 pairs sum
to exactly delta / 2: the claimed '< delta' holds with a factor 2 to spare.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats

from blockrank_ref.theorem4 import sphere_rows
from theory_tests import evidence
from theory_tests.profiles import examples
from theory_tests.test_thm4_b1 import exact_log_tail, monte_carlo_rng

CLAIM = "thm4.B2"


def t_delta(n: int, d: int, delta: float) -> float:
    return math.sqrt(2.0 / (d - 1) * math.log(2 * n * (n - 1) / delta))


@settings(max_examples=examples(200))
@given(n=st.integers(2, 100_000), d=st.integers(2, 100_000), delta=st.floats(1e-12, 1.0, exclude_max=True))
@example(n=197, d=768, delta=0.1)
@pytest.mark.claim(CLAIM, role="holds")
def test_union_sum_is_half_delta(n, d, delta):
    """n (n - 1) / 2 * 2 exp(-(d - 1) t_delta^2 / 2) equals delta / 2 (so it is < delta) for every n >= 2,
    d >= 2, delta in (0, 1). Tolerance 1e-12 relative: log then exp of the same number, amplified by
    the size of log(2 n (n - 1) / delta) <= 60."""
    t = t_delta(n, d, delta)
    union_sum = n * (n - 1) / 2 * 2 * math.exp(-(d - 1) * t**2 / 2)
    evidence.count(CLAIM)
    evidence.track_max(CLAIM, "max_rel_error_union_sum_vs_delta_half", abs(union_sum / (delta / 2) - 1))
    assert union_sum == pytest.approx(delta / 2, rel=1e-12)
    assert union_sum < delta


@pytest.mark.claim(CLAIM, role="measure")
def test_exact_union_sum():
    """With the exact tail of (B.1) in place of the bound, the union sum is far below delta / 2 at the
    sizes of the worked example and of the Monte Carlo tests (recorded, and asserted <= delta / 2)."""
    for n, d, delta in ((197, 768, 0.1), (8, 32, 0.5), (8, 128, 0.25)):
        t = t_delta(n, d, delta)
        exact_sum = n * (n - 1) / 2 * math.exp(exact_log_tail(d, t))
        evidence.note(CLAIM, f"exact_union_sum_n{n}_d{d}_delta{delta}", {"t_delta": t, "sum": exact_sum,
                                                                        "delta_over_2": delta / 2})
        assert exact_sum <= delta / 2


@pytest.mark.parametrize("n, d, delta", [(8, 32, 0.5), (16, 64, 0.3)])
@pytest.mark.claim(CLAIM, role="holds")
def test_event_frequency(n, d, delta):
    """Monte Carlo: the frequency of max_{i<j} |<x_i, x_j>| > t_delta over X with rows uniform on the
    sphere has a one-sided 99.9% Clopper-Pearson upper bound below delta, and its lower bound does not
    exceed the exact union sum (which bounds the true probability)."""
    rng = monte_carlo_rng(CLAIM)
    trials = examples(20_000)
    t = t_delta(n, d, delta)
    failures = 0
    for start in range(0, trials, 5000):
        X = sphere_rows(min(5000, trials - start), n, d, rng)
        gram = X @ np.swapaxes(X, 1, 2)  # trials x n x n
        off_diagonal = np.abs(gram - np.eye(n))  # unit rows: the diagonal is 1 up to rounding
        failures += int(np.sum(off_diagonal.max(axis=(1, 2)) > t))
    upper = stats.binomtest(failures, trials, alternative="less").proportion_ci(0.999).high
    lower = stats.binomtest(failures, trials, alternative="greater").proportion_ci(0.999).low
    exact_sum = n * (n - 1) / 2 * math.exp(exact_log_tail(d, t))
    evidence.note(CLAIM, f"monte_carlo_n{n}_d{d}_delta{delta}", {
        "trials": trials, "failures": failures, "cp_upper_99.9": upper, "cp_lower_99.9": lower,
        "exact_union_sum": exact_sum, "delta": delta})
    assert upper < delta
    assert lower <= exact_sum
