"""Theorem 4, Eq. (B.1): the spherical-cap tail bound against the exact law of <u, v>.

For u, v independent and uniform on S^{d-1} with d >= 2, (1 + <u, v>) / 2 follows
Beta((d-1)/2, (d-1)/2) (the density of one coordinate of a uniform point is
proportional to (1 - s^2)^{(d-3)/2}), so

    Pr(|<u, v>| >= t) = 2 Pr(Beta >= (1 + t)/2) = 2 I_{(1-t)/2}((d-1)/2, (d-1)/2),

which the tests evaluate with mpmath (regularised incomplete beta of the lower
tail, no cancellation) and with scipy's survival function. For d = 1 the sphere
S^0 = {+1, -1} and |<u, v>| = 1 always.
"""

from __future__ import annotations

import math
import os

import mpmath
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats

from theory_tests import evidence
from theory_tests.profiles import examples

CLAIM = "thm4.B1"


def monte_carlo_seed(claim: str) -> int:
    """Return a seed: fixed in the ci profile, fresh otherwise; BLOCKRANK_MC_SEED replays a run.

    The seed is recorded in the claim's evidence so that any run can be repeated.
    """
    seed = os.environ.get("BLOCKRANK_MC_SEED")
    if seed is None:
        ci = os.environ.get("HYPOTHESIS_PROFILE", "default") == "ci"
        seed = 20261204 if ci else np.random.SeedSequence().entropy % 2**63
    evidence.note(claim, "monte_carlo_seed", int(seed))
    return int(seed)


def monte_carlo_rng(claim: str) -> np.random.Generator:
    """Return a generator seeded by `monte_carlo_seed`."""
    return np.random.default_rng(monte_carlo_seed(claim))


def exact_log_tail(d: int, t: float) -> float:
    """Return log Pr(|<u, v>| >= t) for u, v uniform on S^{d-1}, from the Beta law.

    scipy's beta.sf (Boost's incomplete beta, checked against mpmath below) where
    the tail is a normal float; below that, the 40-digit mpmath incomplete beta of
    the lower tail (its series converges fast there, but not for d ~ 10^4 and t ~ 0).
    """
    if d == 1:
        return 0.0 if t <= 1 else -math.inf
    if t > 1:
        return -math.inf
    h = (d - 1) / 2
    tail = 2 * stats.beta.sf((1 + t) / 2, h, h)
    if tail > 1e-300:
        return math.log(tail)
    return mpmath_log_tail(d, t)


def mpmath_log_tail(d: int, t: float) -> float:
    """Return log Pr(|<u, v>| >= t) from the 40-digit regularised incomplete beta of the lower tail."""
    with mpmath.workdps(40):
        h = mpmath.mpf(d - 1) / 2
        tail = 2 * mpmath.betainc(h, h, 0, (1 - mpmath.mpf(t)) / 2, regularized=True)
        return -math.inf if tail == 0 else float(mpmath.log(tail))


def log_bound(d: int, t: float) -> float:
    return math.log(2.0) - (d - 1) * t**2 / 2


@settings(max_examples=examples(200))
@given(d=st.integers(1, 8192), t=st.floats(0.0, 1.0))
@example(d=1, t=1.0)
@example(d=2, t=0.0)
@example(d=768, t=0.5)
@example(d=8192, t=1.0)
@pytest.mark.claim(CLAIM, role="holds")
def test_tail_below_b1(d, t):
    """Pr(|<u, v>| >= t) <= 2 exp(-(d-1) t^2 / 2) for every d >= 1 and t in [0, 1] (beyond 1 the
    probability is 0). Compared in log space so that tails far below the float range still count;
    tolerance 1e-12 absolute in the log (the relative accuracy of the exact tail, float64 bound)."""
    exact, bound = exact_log_tail(d, t), log_bound(d, t)
    evidence.count(CLAIM)
    evidence.track_max(CLAIM, "max_exact_over_bound", math.exp(exact - bound), {"d": d, "t": t})
    assert exact <= bound + 1e-12


@pytest.mark.claim(CLAIM, role="measure")
def test_sphere_zero_exact():
    """d = 1: S^0 = {+1, -1}, so <u, v> = +-1 and Pr(|<u, v>| >= t) = 1 <= 2 = the bound, for all t <= 1."""
    products = [u * v for u in (1, -1) for v in (1, -1)]
    assert all(abs(p) == 1 for p in products)
    assert log_bound(1, 1.0) == math.log(2.0)
    evidence.note(CLAIM, "d1", "S^0 = {+1, -1}: |<u, v>| = 1 surely; B.1 reads 1 <= 2 and holds")


@pytest.mark.claim(CLAIM, role="measure")
def test_survival_function_needed_at_d768():
    """scipy's beta.sf matches the 40-digit mpmath tail to 1e-12 relative (Boost documents errors of a
    few ulps for ibeta) from d = 2 to d = 4096 wherever the tail is a normal float, while 1 - cdf returns
    0 at d = 768, t = 0.5 where the tail is 7e-50: the suite must use survival functions."""
    for d in (2, 3, 10, 128, 768, 4096):
        h = (d - 1) / 2
        for t in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.9):
            scipy_tail = 2 * stats.beta.sf((1 + t) / 2, h, h)
            if scipy_tail > 1e-300:
                assert math.log(scipy_tail) == pytest.approx(mpmath_log_tail(d, t), abs=1e-12)
    d, h, t = 768, 767 / 2, 0.5
    one_minus_cdf = 2 * (1 - stats.beta.cdf((1 + t) / 2, h, h))
    exact = math.exp(mpmath_log_tail(d, t))
    assert one_minus_cdf == 0.0
    evidence.note(CLAIM, "one_minus_cdf_at_d768_t0.5", {"1 - cdf": one_minus_cdf, "exact": exact})


@pytest.mark.claim(CLAIM, role="measure")
def test_tightness_grid():
    """Largest exact/bound ratio over a grid of d and t: the bound is loose by at least a factor 2 (the
    ratio is 1/2 at t = 0, where the bound is 2 and the probability 1)."""
    worst = (0.0, None)
    for d in (2, 3, 5, 10, 32, 128, 768, 4096):
        for t in np.linspace(0, 1, 41):
            ratio = math.exp(exact_log_tail(d, float(t)) - log_bound(d, float(t)))
            worst = max(worst, (ratio, {"d": d, "t": float(t)}), key=lambda item: item[0])
    evidence.note(CLAIM, "grid_max_exact_over_bound", {"ratio": worst[0], "at": worst[1]})
    assert worst[0] == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("d", [2, 5, 64])
@pytest.mark.claim(CLAIM, role="measure")
def test_beta_law_monte_carlo(d):
    """Sanity check of the exact law used above: inner products of normalised Gaussian pairs pass a
    Kolmogorov-Smirnov test against 2 Beta((d-1)/2, (d-1)/2) - 1 (p > 1e-4, a false alarm rate of 1e-4)."""
    rng = monte_carlo_rng(CLAIM)
    pairs = 4000
    u = rng.standard_normal((pairs, d))
    v = rng.standard_normal((pairs, d))
    s = np.einsum("ij,ij->i", u / np.linalg.norm(u, axis=1, keepdims=True),
                  v / np.linalg.norm(v, axis=1, keepdims=True))
    h = (d - 1) / 2
    p_value = stats.kstest((1 + s) / 2, stats.beta(h, h).cdf).pvalue
    evidence.note(CLAIM, f"beta_law_ks_pvalue_d{d}", p_value)
    assert p_value > 1e-4
