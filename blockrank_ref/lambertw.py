"""The two real branches of the Lambert W function on [-1/e, 0), evaluated to full float64 accuracy.

W(x) solves w e^w = x. On [-1/e, 0) there are two real solutions: the principal
branch W_0(x) in [-1, 0) and the lower branch W_{-1}(x) in (-inf, -1]. Theorem 4
needs y = -W_{-1}(-K), the larger root of y e^{-y} = K, and the smaller root
-W_0(-K) bounds the range of small c where the same inequality holds.

Why mpmath and not `scipy.special.lambertw` (scipy 1.17.1): scipy evaluates in
float64 and loses accuracy exactly where Theorem 4 can land. Next to the branch
point its error grows to ~1e-8 relative (at the float just above -1/e it returns
-1.0000000000000002 instead of -1.0000000153...), at x = -1/e as a float it
returns NaN, and for subnormal x it returns -inf or wrong digits, all without a
warning (tests/test_lambertw.py shows each case). The problem near -1/e is the
cancellation in 1 + e x: W_{-1}(x) = -1 - p - p^2/3 - ... with p = sqrt(2 (1 + e x)),
so the relative condition number |x W'(x) / W(x)| = 1 / |1 + W(x)| ~ 1/p. We treat
the float x as exact and evaluate with mpmath at WORKING_DIGITS significant
digits, enough to absorb the up-to-17 digits lost in 1 + e x and still round the
result correctly. Guarantee: for every float x in the domain the result is
within 1 ulp of W(x) for the exact value of x (tests check <= 1 ulp against a
100-digit reference on a sweep that includes subnormals and floats within 1e-15
of -1/e). A caller whose x is itself rounded should remember that the branch
point amplifies an input error dx to about |dx| / sqrt(2 (1 + e x)) / e in W.

Convention at the branch point: the float nearest to -1/e lies 1.2e-17 below the
true -1/e, so strictly it is outside the real domain. Both functions treat it as
the branch point and return -1.0, the value at -1/e. A call costs 0.15-0.5 ms
(measured on the 2-core development machine under load), which is irrelevant for
computing a threshold.
"""

from __future__ import annotations

import math

import mpmath

# Significant decimal digits used inside mpmath: 17 for the cancellation in
# 1 + e x at the branch point, 17 for a correctly rounded float64, plus margin.
WORKING_DIGITS = 50

# The float64 nearest to -1/e (0.36787944117144233 > 1/e by 1.2e-17).
BRANCH_POINT = -1.0 / math.e


def _check_domain(x: float, branch_name: str) -> float:
    """Return x as a float if it lies in [-1/e, 0); raise ValueError otherwise."""
    if isinstance(x, (bool, complex)):
        raise ValueError(f"{branch_name} needs a real number in [-1/e, 0); got {x!r}")
    try:
        value = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{branch_name} needs a real number in [-1/e, 0); got {x!r}") from None
    if math.isnan(value):
        raise ValueError(f"{branch_name} is undefined for NaN; pass a real number in [-1/e, 0)")
    if value >= 0.0 or math.copysign(1.0, value) > 0:
        # x = -0.0 is excluded with +0.0: W_{-1}(x) -> -inf as x -> 0-, and W_0(0) = 0
        # lies outside [-1/e, 0), the range on which both real branches exist.
        raise ValueError(
            f"{branch_name}({value!r}) is outside the domain [-1/e, 0) = [{BRANCH_POINT!r}, 0); "
            "the real branches W_0 and W_{-1} both exist only for -1/e <= x < 0"
        )
    if value < BRANCH_POINT:
        raise ValueError(
            f"{branch_name}({value!r}) is outside the domain [-1/e, 0) = [{BRANCH_POINT!r}, 0); "
            "below -1/e, w e^w = x has no real solution"
        )
    return value


def _evaluate(value: float, branch: int) -> float:
    with mpmath.workdps(WORKING_DIGITS):
        x = mpmath.mpf(value)  # exact: every float64 is an mpf
        if x <= -mpmath.exp(-1):
            # Only the float nearest to -1/e gets here (see the module docstring).
            return -1.0
        w = mpmath.lambertw(x, branch)
        # On the real domain both branches are real; a non-negligible imaginary
        # part would mean mpmath chose a complex solution.
        assert abs(mpmath.im(w)) <= mpmath.mpf(10) ** (-WORKING_DIGITS + 5) * abs(w), (
            f"mpmath returned a complex Lambert W value {w} for real x = {value!r}"
        )
        return float(mpmath.re(w))


def lambertw_minus1(x: float) -> float:
    """Return W_{-1}(x), the solution w <= -1 of w e^w = x, for x in [-1/e, 0)."""
    return _evaluate(_check_domain(x, "W_{-1}"), -1)


def lambertw_0(x: float) -> float:
    """Return W_0(x), the solution w in [-1, 0) of w e^w = x, for x in [-1/e, 0)."""
    return _evaluate(_check_domain(x, "W_0"), 0)
