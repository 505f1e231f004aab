"""Theorem 4: the parameter regions of Eq. (7) and what each term of its max does.

With y = a c^2 the proof bounds every ratio (Q or K bound) / (V or O bound) on its
event by r(y) = 2 min{(n-1) e^{-y}, 1} tau^2 chi^2 y / (a sqrt(d)) (Theorem 3's factor),
which is at most R(y) = 2 (n-1) e^{-y} tau^2 chi^2 y / (a sqrt(d)) = (eta / K) y e^{-y}.
Facts checked here:
- a <= 0: the margin bound (B.3) is vacuous and the constants raise ValueError;
- K < 1/(2 (n - 1)) always, so K >= 1/e needs n = 2, and then R <= eta for every c;
- R(y) <= eta exactly for y >= -W_{-1}(-K) (and y <= -W_0(-K)), with equality at both;
- log(2 (n - 1)) < -W_{-1}(-K) whenever the Lambert term applies, so the log term of
  the max never sets the threshold, and min{x, 1} <= x makes it unnecessary anyway;
- for small c the ratio bound is also <= eta (c^2 <= c2_small_max).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from blockrank_ref.attention import attention_matrices
from blockrank_ref.bounds import theorem3_bounds
from blockrank_ref.lambertw import lambertw_0
from blockrank_ref.theorem4 import ratio_bound, theorem4_constants
from theory_tests import evidence
from theory_tests.profiles import examples
from theory_tests.test_thm4_conclusion import PARAMS, bound_successes, judge, simulation

CLAIM = "thm4.threshold"


@st.composite
def valid_parameters(draw) -> dict:
    """Draw parameters in Theorem 4's ranges with a > 0, choosing d above the smallest admissible width
    (d - 1 > 2 log(2 n (n - 1) / delta) beta^2 / alpha^2) instead of rejecting draws."""
    n = draw(st.integers(2, 5000))
    delta = draw(st.floats(1e-6, 0.999))
    eta = draw(st.floats(1e-3, 0.999))
    tau = draw(st.floats(1.0, 10.0))
    alpha = draw(st.floats(0.01, 1.0))
    beta = draw(st.floats(1.0, 10.0))
    d_min = 2 * math.log(2 * n * (n - 1) / delta) * beta**2 / alpha**2 + 1
    d = int(math.floor(d_min)) + 1 + draw(st.integers(0, 10**7))
    return dict(n=n, d=d, delta=delta, eta=eta, tau=tau, alpha=alpha, beta=beta)


N2_LOOSE = dict(n=2, d=100_000, delta=0.5, eta=0.99, tau=1.0, alpha=1.0, beta=1.0)


@settings(max_examples=examples(100))
@given(n=st.integers(2, 5000), d=st.integers(2, 200), delta=st.floats(1e-6, 0.999),
       alpha=st.floats(0.01, 1.0), beta=st.floats(1.0, 10.0))
@pytest.mark.claim(CLAIM, role="holds")
def test_nonpositive_a_raises(n, d, delta, alpha, beta):
    """a > 0 is required: when alpha <= beta t_delta the margin bound (B.3) gives gamma_min >= a c^2 <= 0,
    which is vacuous, and the constants raise a ValueError that states it (no tolerance: a sign test)."""
    t = math.sqrt(2.0 / (d - 1) * math.log(2 * n * (n - 1) / delta))
    if alpha > beta * t:
        constants = theorem4_constants(n, d, delta, 0.5, 2.0, alpha, beta)
        assert constants.a > 0
        return
    with pytest.raises(ValueError, match="gives nothing"):
        theorem4_constants(n, d, delta, 0.5, 2.0, alpha, beta)
    evidence.count(CLAIM, "a_nonpositive_cases")


@settings(max_examples=examples(200))
@given(params=valid_parameters())
@example(params=N2_LOOSE)
@example(params=dict(n=197, d=768, delta=0.1, eta=0.5, tau=2.0, alpha=0.5, beta=2.0))
@pytest.mark.claim(CLAIM, role="holds")
def test_threshold_suffices_and_is_sharp(params):
    """For every admissible parameter set: K < 1/(2 (n - 1)), K >= 1/e only if n = 2, and then R(y) <= eta
    for all y; otherwise R(y) <= eta at and above c^2_min and R(y) = eta at y = -W_{-1}(-K), and the log
    term is below the Lambert term. Tolerance 1e-9 relative on R = eta: y e^{-y} is evaluated in float64
    at y up to ~40, and W is correctly rounded."""
    constants = theorem4_constants(**params)
    n, K, eta = constants.n, constants.K, constants.eta
    evidence.count(CLAIM)
    assert K < 1 / (2 * (n - 1))
    if not constants.lambert_applies:
        assert n == 2
        evidence.count(CLAIM, "cases_lambert_not_binding")
        for y in np.linspace(0.0, 50.0, 201):
            assert ratio_bound(constants, float(y) / constants.a, "R") <= eta * (1 + 1e-12)
        return
    y_star = constants.lambert_term
    assert constants.log_term < y_star
    assert constants.binding_term == "lambert"
    evidence.track_max(CLAIM, "max_log_term_over_lambert_term", constants.log_term / y_star, params)
    assert ratio_bound(constants, y_star / constants.a, "R") == pytest.approx(eta, rel=1e-9)
    for factor in (1.0, 1.01, 2.0, 10.0):
        c2 = factor * constants.c2_min
        assert ratio_bound(constants, c2, "theorem3") <= eta * (1 + 1e-9)
        assert ratio_bound(constants, c2, "R") <= eta * (1 + 1e-9)
    # Between the two roots of y e^{-y} = K the bound exceeds eta, so -W_{-1}(-K) is the least admissible
    # y above the maximum at y = 1 (skipped when K is within rounding of 1/e and the roots merge).
    y_inside = (max(1.0, -lambertw_0(-K)) + y_star) / 2
    if y_star - y_inside > 1e-6 * y_star:
        assert ratio_bound(constants, y_inside / constants.a, "R") > eta


@settings(max_examples=examples(100))
@given(params=valid_parameters())
@pytest.mark.claim(CLAIM, role="measure")
def test_small_c_region(params):
    """The ratio bound with Theorem 3's factor is also <= eta for c^2 <= c2_small_max =
    max(-W_0(-K), (n - 1) K) / a, so the threshold is sufficient but the admissible set of c is
    [0, c_small] plus [c_min, inf). Tolerance 1e-9 relative as above."""
    constants = theorem4_constants(**params)
    if not constants.lambert_applies:
        return
    for fraction in (1e-3, 0.5, 1.0):
        c2 = fraction * constants.c2_small_max
        assert ratio_bound(constants, c2, "theorem3") <= constants.eta * (1 + 1e-9)
    evidence.track_max(CLAIM, "max_c2_small_over_c2_min", constants.c2_small_max / constants.c2_min, params)


@pytest.mark.claim(CLAIM, role="measure")
def test_small_c_monte_carlo():
    """Monte Carlo at c^2 = c2_small_max (n = 8, d = 128, the conclusion's setting): the Theorem-3 bounds
    satisfy max(Q, K) <= eta min(V, O) there too (one-sided 99% Clopper-Pearson against 1 - delta)."""
    constants = theorem4_constants(**PARAMS)
    trials = examples(200)
    c_scale = math.sqrt(constants.c2_small_max) / constants.c_min
    result = simulation("extreme", c_scale, trials)
    successes = int(bound_successes(result, constants.eta).sum())
    verdict, lower, upper = judge(successes, trials, 1 - constants.delta)
    evidence.note(CLAIM, "small_c_monte_carlo", {
        "c": c_scale * constants.c_min, "c_min": constants.c_min, "trials": trials, "successes": successes,
        "cp_lower_99": lower, "verdict": verdict})
    assert verdict == "holds"


@pytest.mark.claim(CLAIM, role="measure")
def test_factor_two_placement():
    """Theorem 3 has 2 min{(n-1) e^{-gamma}, 1}; the proof of Theorem 4 writes min{2 (n-1) e^{-gamma}, 1},
    which is smaller by up to a factor 2 when 2 (n-1) e^{-gamma} > 1. With tied logits (identical rows,
    gamma = 0) the proof's first inequality understates bound_Q / bound_V by exactly 2 (rel 1e-12). The
    final R(c) uses 2 (n-1) e^{-y}, which dominates both, so the conclusion is unaffected."""
    n, d, c = 3, 4, 1.0
    X = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * n, dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64) * c
    bounds = theorem3_bounds(X, eye, eye, eye, eye)
    gamma = 0.0
    norm_X = float(torch.linalg.matrix_norm(X, 2))
    norm_A = float(torch.linalg.matrix_norm(attention_matrices(X, eye, eye)[0], 2))  # A = (1/3) 1 1^T
    proof_factor = min(2 * (n - 1) * math.exp(-gamma), 1.0)
    proof_middle = proof_factor / math.sqrt(d) * c * c * norm_X**2 / norm_A
    evidence.note(CLAIM, "factor_two_placement", {
        "bound_Q_over_bound_V": bounds["Q"] / bounds["V"], "proof_middle_expression": proof_middle,
        "note": "Theorem 3: 2 min{(n-1)e^-g, 1}; proof of Theorem 4: min{2(n-1)e^-g, 1}"})
    assert bounds["Q"] / bounds["V"] == pytest.approx(2 * proof_middle, rel=1e-12)


@pytest.mark.claim(CLAIM, role="measure")
def test_wording_notes():
    """Records the remarks on the statement that need no computation beyond B.2's algebra: the conclusion
    cites 'Theorem 2' for the bounds of Theorem 3, and delta is stated in (0, 1/2) and in (0, 1) while the
    proof works for every delta in (0, 1) (B.2 gives failure delta / 2)."""
    constants = theorem4_constants(**{**PARAMS, "delta": 0.9})
    n, d = constants.n, constants.d
    union = n * (n - 1) * math.exp(-(d - 1) * constants.t_delta**2 / 2)
    assert union == pytest.approx(0.9 / 2, rel=1e-12)
    evidence.note(CLAIM, "typo", "the conclusion says 'the sensitivity upper bound in Theorem 2'; the bounds "
                  "are those of Theorem 3 (Eqs. 3-6)")
    evidence.note(CLAIM, "delta_range", "stated as (0, 1/2) and as (0, 1); nothing in the proof needs "
                  "delta < 1/2, and B.2 gives failure <= delta / 2 for every delta in (0, 1)")
    evidence.note(CLAIM, "log_term", "log(2(n-1)) < -W_{-1}(-K) whenever K < 1/e (checked over random "
                  "admissible parameters), so the max in Eq. (7) is always the Lambert term; the term is "
                  "also unneeded because min{x, 1} <= x")
    evidence.note(CLAIM, "lambert_not_binding", "K >= 1/e only for n = 2; then y e^-y <= 1/e <= K for all "
                  "y and every c > 0 satisfies the ratio bound; Eq. (7) as printed is undefined there "
                  "(W_{-1} of a value below -1/e) and its max leaves log(2)/a")
