"""Lambert W on [-1/e, 0) against a 100-digit mpmath reference, and scipy's failures that it avoids."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from scipy.special import lambertw as scipy_lambertw

from blockrank_ref.lambertw import BRANCH_POINT, lambertw_0, lambertw_minus1

REFERENCE_DIGITS = 100


def reference(x: float, branch: int) -> mpmath.mpf:
    """Return W_branch(x) at 100 digits for the exact value of the float x."""
    with mpmath.workdps(REFERENCE_DIGITS):
        value = mpmath.mpf(x)
        if value <= -mpmath.exp(-1):
            return mpmath.mpf(-1)
        return mpmath.re(mpmath.lambertw(value, branch))


def residual_root(x: float) -> mpmath.mpf:
    """Return -W_{-1}(x) as the root y >= 1 of y - log(y) = log(-1/x), by bisection at 100 digits.

    Bisection needs no derivative, so it stays reliable at the branch point where
    f'(y) = 1 - 1/y vanishes, and it shares no code with mpmath.lambertw.
    """
    with mpmath.workdps(REFERENCE_DIGITS):
        target = -mpmath.log(-mpmath.mpf(x))
        low, high = mpmath.mpf(1), 2 * target + 2
        for _ in range(400):  # 2^-400 relative to the bracket is far below 100 digits
            middle = (low + high) / 2
            if middle - mpmath.log(middle) < target:
                low = middle
            else:
                high = middle
        return (low + high) / 2


def ulp_error(value: float, exact: mpmath.mpf) -> float:
    with mpmath.workdps(REFERENCE_DIGITS):
        return float(abs(mpmath.mpf(value) - exact) / mpmath.mpf(math.ulp(float(exact))))


def sweep() -> list[float]:
    """Return arguments from the subnormal range to the branch point, both ends included."""
    tiny = [-5e-324, -1e-320, -2.2250738585072014e-308, -1e-300]
    logspaced = list(-np.logspace(-300, math.log10(0.367), 200))
    near_branch = [BRANCH_POINT + k * 1e-17 for k in (0, 1, 2, 5, 10, 30, 100)]
    near_branch += [BRANCH_POINT + offset for offset in (1e-16, 1e-15, 3e-15, 1e-12, 1e-9, 1e-6, 1e-3)]
    near_branch.append(float(np.nextafter(BRANCH_POINT, 0.0)))
    return tiny + [float(x) for x in logspaced] + near_branch + [-0.1, -0.2, -0.3]


@pytest.mark.parametrize("branch, function", [(-1, lambertw_minus1), (0, lambertw_0)])
def test_within_one_ulp_of_reference(branch, function):
    """Both branches are within 1 ulp of the 100-digit value for the exact float input (correct rounding
    allows 0.5 ulp; 1 ulp leaves room for mpmath's last-digit rounding at 50 digits)."""
    worst = max(ulp_error(function(x), reference(x, branch)) for x in sweep())
    assert worst <= 1.0


def test_minus1_matches_independent_root():
    """-W_{-1}(x) equals the root of y - log y = log(-1/x) found by a bracketing solver (1 ulp)."""
    for x in sweep()[::7]:
        assert ulp_error(-lambertw_minus1(x), residual_root(x)) <= 1.0


def test_branch_point_values():
    assert lambertw_minus1(BRANCH_POINT) == -1.0
    assert lambertw_0(BRANCH_POINT) == -1.0
    # Within 1e-15 of -1/e, W_{-1} is about -1 - sqrt(2 (1 + e x)), far from -1 in the 8th digit.
    # The series -1 - p - p^2/3 with p = 7.5e-8 is exact to p^3 ~ 4e-22.
    x = BRANCH_POINT + 1e-15
    with mpmath.workdps(REFERENCE_DIGITS):
        p = mpmath.sqrt(2 * (1 + mpmath.e * mpmath.mpf(x)))
        expected = float(-1 - p - p**2 / 3)
    assert lambertw_minus1(x) == pytest.approx(expected, rel=1e-15)
    assert lambertw_minus1(x) < -1 - 7e-8


def test_denormal_arguments():
    assert lambertw_minus1(-5e-324) == pytest.approx(-751.0615595398791, rel=1e-15)
    assert lambertw_0(-5e-324) == -5e-324


@pytest.mark.parametrize("x", [0.0, -0.0, 1.0, -0.37, BRANCH_POINT - 1e-16, float("nan"), float("inf"),
                               float("-inf"), "0.1", True, 1j])
def test_outside_domain_raises(x):
    with pytest.raises(ValueError, match=r"W_\{-1\}"):
        lambertw_minus1(x)
    with pytest.raises(ValueError, match=r"W_0"):
        lambertw_0(x)


def test_error_names_value_and_domain():
    with pytest.raises(ValueError, match=r"W_\{-1\}\(-0\.0\) is outside the domain \[-1/e, 0\)"):
        lambertw_minus1(-0.0)


def test_scipy_fails_where_wrapper_does_not():
    """scipy 1.17.1 returns NaN at -1/e, ~1e-8 relative error next to it and -inf at the smallest
    subnormal, without a warning; the wrapper is within 1 ulp at each of these points."""
    just_above = float(np.nextafter(BRANCH_POINT, 0.0))
    exact = float(reference(just_above, -1))
    scipy_value = scipy_lambertw(just_above, -1).real
    assert abs(scipy_value - exact) / abs(exact) > 1e-9
    assert ulp_error(lambertw_minus1(just_above), reference(just_above, -1)) <= 1.0

    assert np.isnan(scipy_lambertw(BRANCH_POINT, -1))
    assert lambertw_minus1(BRANCH_POINT) == -1.0

    assert np.isinf(scipy_lambertw(-5e-324, -1).real)
    assert math.isfinite(lambertw_minus1(-5e-324))
