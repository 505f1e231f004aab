"""Theorem 4 constants (Eq. 7): formulas, parameter checks, regions and the weight construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from blockrank_ref.lambertw import lambertw_minus1
from blockrank_ref.theorem4 import (
    corrected_theorem4_constants,
    hypothesis_violations,
    ratio_bound,
    theorem4_constants,
    weights_meeting_hypotheses,
)

VIT = dict(n=197, d=768, delta=0.1, eta=0.5, tau=2.0, alpha=0.5, beta=2.0)


def test_constants_follow_eq7():
    """Each constant equals its formula, written out independently here (rel 1e-14: a few roundings)."""
    c = theorem4_constants(**VIT)
    n, d = 197, 768
    t = math.sqrt(2 / (d - 1) * math.log(2 * n * (n - 1) / 0.1))
    chi2 = 1 + (n - 1) * t
    a = (0.5 - 2 * t) / math.sqrt(d)
    K = 0.5 * a * math.sqrt(d) / (2 * (n - 1) * 4 * chi2)
    y = -lambertw_minus1(-K)
    assert c.t_delta == pytest.approx(t, rel=1e-14)
    assert c.chi_delta**2 == pytest.approx(chi2, rel=1e-14)
    assert c.a == pytest.approx(a, rel=1e-14)
    assert c.K == pytest.approx(K, rel=1e-14)
    assert c.lambert_term == pytest.approx(y, rel=1e-14)
    assert c.c2_min == pytest.approx(max(math.log(2 * (n - 1)), y) / a, rel=1e-14)
    assert c.c_min == pytest.approx(math.sqrt(c.c2_min), rel=1e-15)
    assert c.binding_term == "lambert"
    assert c.variant == "paper"


def test_lambert_term_solves_b6():
    """y = -W_{-1}(-K) satisfies y e^{-y} = K, so R(c) = eta exactly at c^2 = y / a (rel 1e-12)."""
    c = theorem4_constants(**VIT)
    y = c.lambert_term
    assert y * math.exp(-y) == pytest.approx(c.K, rel=1e-12)
    assert ratio_bound(c, y / c.a, form="R") == pytest.approx(c.eta, rel=1e-12)


def test_corrected_constants_are_larger():
    paper = theorem4_constants(**VIT)
    corrected = corrected_theorem4_constants(**VIT)
    assert corrected.t_delta == pytest.approx(math.sqrt(2 / 767 * math.log(3 * 197 * 196 / 0.1)), rel=1e-14)
    assert corrected.t_delta > paper.t_delta
    assert corrected.c2_min > paper.c2_min
    assert corrected.failure_probability_proved == 0.1
    assert paper.failure_probability_proved == pytest.approx(0.15)


def test_n2_lambert_does_not_apply():
    """K >= 1/e is possible only for n = 2; Eq. (7) as printed then gives log 2 / a and the corrected threshold is 0."""
    params = dict(n=2, d=100_000, delta=0.5, eta=0.99, tau=1.0, alpha=1.0, beta=1.0)
    paper = theorem4_constants(**params)
    assert paper.K >= 1 / math.e
    assert not paper.lambert_applies
    assert paper.lambert_term is None
    assert "does not bind" in paper.lambert_note
    assert paper.binding_term == "log"
    assert paper.c2_min == pytest.approx(math.log(2) / paper.a)
    corrected = corrected_theorem4_constants(**params)
    assert corrected.c2_min == 0.0
    assert corrected.binding_term == "none"


def test_to_dict_is_complete():
    data = theorem4_constants(**VIT).to_dict()
    for key in ("t_delta", "chi_delta", "a", "K", "lambert_term", "log_term", "c2_min", "c_min"):
        assert key in data


@pytest.mark.parametrize("name, value, message", [
    ("n", 1, r"n must be an integer >= 2 \(with n = 1"),
    ("n", 2.5, "n must be an integer"),
    ("d", 1, r"d must be an integer >= 2 \(t_delta divides by d - 1\)"),
    ("delta", 0.0, r"delta must be in \(0, 1\)"),
    ("delta", 1.0, r"delta must be in \(0, 1\)"),
    ("delta", float("nan"), "delta must be a finite real number"),
    ("eta", 1.0, r"eta must be in \(0, 1\)"),
    ("eta", 0.0, r"eta must be in \(0, 1\)"),
    ("tau", 0.99, "tau must be >= 1"),
    ("alpha", 0.0, r"alpha must be in \(0, 1\]"),
    ("alpha", 1.5, r"alpha must be in \(0, 1\]"),
    ("beta", 0.5, "beta must be >= 1"),
    ("beta", float("inf"), "beta must be a finite real number"),
])
def test_invalid_parameter_named(name, value, message):
    with pytest.raises(ValueError, match=message):
        theorem4_constants(**{**VIT, name: value})


def test_nonpositive_a_raises():
    """alpha <= beta t_delta makes the margin bound vacuous; the error states that and how to fix it."""
    with pytest.raises(ValueError, match=r"alpha - beta \* t_delta = .* <= 0: Theorem 4 gives nothing"):
        theorem4_constants(**{**VIT, "d": 76})


def test_ratio_bound_forms():
    c = theorem4_constants(**VIT)
    c2 = 0.5 * c.c2_min
    common = c.tau**2 * c2 * c.chi_delta**2 / math.sqrt(c.d)
    y = c.a * c2
    assert ratio_bound(c, c2, "R") == pytest.approx(2 * 196 * math.exp(-y) * common)
    assert ratio_bound(c, c2, "proof") == pytest.approx(min(2 * 196 * math.exp(-y), 1) * common)
    assert ratio_bound(c, c2, "theorem3") == pytest.approx(2 * min(196 * math.exp(-y), 1) * common)
    with pytest.raises(ValueError, match="form must be one of"):
        ratio_bound(c, c2, "other")
    with pytest.raises(ValueError, match="c2 must be"):
        ratio_bound(c, -1.0)


@pytest.mark.parametrize("kind", ["extreme", "random"])
def test_weights_meet_hypotheses(kind):
    rng = np.random.default_rng(0)
    weights = weights_meeting_hypotheses(32, 3.0, 1.5, 0.6, 1.3, rng, kind=kind)
    assert hypothesis_violations(weights, 3.0, 1.5, 0.6, 1.3) == []
    M = weights["W_Q"].T @ weights["W_K"]
    if kind == "extreme":
        # Built to meet lambda_min(M_sym) >= alpha c^2 and ||M|| <= min(beta, tau) c^2 with equality.
        assert np.linalg.eigvalsh((M + M.T) / 2)[0] == pytest.approx(0.6 * 9, rel=1e-10)
        assert np.linalg.norm(M, 2) == pytest.approx(1.3 * 9, rel=1e-10)


def test_violations_are_reported():
    rng = np.random.default_rng(1)
    weights = weights_meeting_hypotheses(16, 2.0, 1.5, 0.6, 1.3, rng)
    problems = hypothesis_violations(weights, 2.0, 1.5, 0.9, 1.3)
    assert len(problems) == 1
    assert problems[0].startswith("lambda_min(M_sym)")
    weights["W_V"] = weights["W_V"] * 10
    assert any(p.startswith("||W_V||_2") for p in hypothesis_violations(weights, 2.0, 1.5, 0.6, 1.3))
