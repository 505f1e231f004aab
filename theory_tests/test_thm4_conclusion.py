"""Theorem 4, conclusion: Monte Carlo at n = 8, d = 128 with weights that meet the hypotheses exactly.

For c at and above the threshold of Eq. (7) and X with rows uniform on the
sphere, count how often the Theorem-3 bounds satisfy
max(bound_Q, bound_K) <= eta min(bound_V, bound_O), and judge the frequency with
one-sided Clopper-Pearson bounds against 1 - delta: holds if the lower bound is
>= 1 - delta, fails if the upper bound is < 1 - delta, inconclusive otherwise.
The simulation is cached so that the 'lower bound' tests reuse the same draws.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import softmax

from blockrank_ref.attention import row_margins
from blockrank_ref.bounds import theorem3_bounds
from blockrank_ref.sensitivity import sensitivities
from blockrank_ref.theorem4 import (
    hypothesis_violations,
    sphere_rows,
    theorem4_constants,
    weights_meeting_hypotheses,
)
from theory_tests import evidence
from theory_tests.profiles import examples
from theory_tests.test_thm4_b1 import monte_carlo_seed

CLAIM = "thm4.conclusion"
PARAMS = dict(n=8, d=128, delta=0.25, eta=0.5, tau=1.5, alpha=0.8, beta=1.2)
CONFIDENCE = 0.99
SEED = monte_carlo_seed(CLAIM)
KIND_SEEDS = {"extreme": 0, "random": 1}


@functools.cache
def unit_weights(kind: str) -> dict[str, np.ndarray]:
    """Return admissible weights for c = 1, checked; every hypothesis is homogeneous, so c W meets them at c."""
    constants = theorem4_constants(**PARAMS)
    rng = np.random.default_rng([SEED, KIND_SEEDS[kind]])
    weights = weights_meeting_hypotheses(constants.d, 1.0, constants.tau, constants.alpha, constants.beta, rng,
                                         kind=kind)
    problems = hypothesis_violations(weights, 1.0, constants.tau, constants.alpha, constants.beta)
    assert not problems, f"the constructed weights break the hypotheses: {problems}"
    return weights


@functools.cache
def unit_norms(kind: str) -> dict[str, float]:
    """Return the spectral norms of the c = 1 weights and of M = W_Q^T W_K (they scale as c and c^2)."""
    weights = unit_weights(kind)
    norms = {name: float(np.linalg.norm(W, 2)) for name, W in weights.items()}
    norms["M"] = float(np.linalg.norm(weights["W_Q"].T @ weights["W_K"], 2))
    return norms


@functools.cache
def simulation(kind: str, c_scale: float, trials: int, exact_trials: int = 0) -> dict[str, np.ndarray]:
    """Draw `trials` inputs X for the admissible weights at c = c_scale * c_min; return per-trial arrays.

    Keys: bounds 'Q', 'K', 'V', 'O' (Eqs. 3-6), 'gamma_min', 'norm_X', event indicators, and for the
    first `exact_trials` trials the exact sensitivities 'sens_Q', ... (Lanczos, about 0.5 s each).
    """
    constants = theorem4_constants(**PARAMS)
    n, d, c = constants.n, constants.d, c_scale * constants.c_min
    rng = np.random.default_rng([SEED, KIND_SEEDS[kind], int(round(c_scale * 1000))])
    weights = {name: c * W for name, W in unit_weights(kind).items()}
    W_Q, W_K, W_V, W_O = (weights[name] for name in ("W_Q", "W_K", "W_V", "W_O"))
    norms = unit_norms(kind)
    norm_Q, norm_K, norm_V, norm_O = (c * norms[name] for name in ("W_Q", "W_K", "W_V", "W_O"))
    M = W_Q.T @ W_K
    norm_M = c**2 * norms["M"]

    X = sphere_rows(trials, n, d, rng)  # trials x n x d
    products = X @ M @ np.swapaxes(X, 1, 2)  # trials x n x n, entry (i, j) = x_i^T M x_j
    S = products / math.sqrt(d)
    A = softmax(S, axis=-1)
    gamma_min = row_margins(torch.from_numpy(S)).amin(dim=1).numpy()
    norm_X = np.linalg.norm(X, 2, axis=(1, 2))
    norm_A = np.linalg.norm(A, 2, axis=(1, 2))
    damping = np.minimum((n - 1) * np.exp(-gamma_min), 1.0)
    softmax_part = 2 * damping / math.sqrt(d)
    result = {
        "Q": softmax_part * norm_O * norm_V * norm_K * norm_X**3,
        "K": softmax_part * norm_O * norm_V * norm_Q * norm_X**3,
        "V": norm_O * norm_A * norm_X,
        "O": norm_A * norm_V * norm_X,
        "gamma_min": gamma_min,
        "norm_X": norm_X,
    }
    mask = ~np.eye(n, dtype=bool)
    gram = np.abs(X @ np.swapaxes(X, 1, 2))[:, mask].max(axis=1)
    result["event_gram"] = gram <= constants.t_delta
    result["event_ordered"] = np.abs(products[:, mask]).max(axis=1) <= norm_M * constants.t_delta
    result["margin_ok"] = gamma_min >= constants.a * c**2
    result["gershgorin_ok"] = norm_X**2 <= constants.chi_delta**2 * (1 + 1e-12)

    result["X"] = X
    tensors = [torch.from_numpy(W) for W in (W_Q, W_K, W_V, W_O)]
    for block in "QKVO":
        result[f"sens_{block}"] = np.full(exact_trials, np.nan)
    for trial in range(exact_trials):
        exact = sensitivities(torch.from_numpy(X[trial]), *tensors)
        for block in "QKVO":
            result[f"sens_{block}"][trial] = exact[block]
    return result


def judge(successes: int, trials: int, target: float) -> tuple[str, float, float]:
    """Return ('holds' | 'fails' | 'inconclusive', lower, upper) from one-sided Clopper-Pearson bounds."""
    lower = stats.binomtest(successes, trials, alternative="greater").proportion_ci(CONFIDENCE).low
    upper = stats.binomtest(successes, trials, alternative="less").proportion_ci(CONFIDENCE).high
    if lower >= target:
        return "holds", lower, upper
    if upper < target:
        return "fails", lower, upper
    return "inconclusive", lower, upper


def bound_successes(result: dict[str, np.ndarray], eta: float) -> np.ndarray:
    return np.maximum(result["Q"], result["K"]) <= eta * np.minimum(result["V"], result["O"])


@pytest.mark.parametrize("kind", ["extreme", "random"])
@pytest.mark.claim(CLAIM, role="measure")
def test_vectorised_bounds_match_reference(kind):
    """The batched Eqs. (3)-(6) used by the Monte Carlo equal `theorem3_bounds` on one trial (rel 1e-9:
    the same formula, with spectral norms from different LAPACK drivers)."""
    result = simulation(kind, 1.0, examples(200))
    c = theorem4_constants(**PARAMS).c_min
    tensors = [torch.from_numpy(c * unit_weights(kind)[name]) for name in ("W_Q", "W_K", "W_V", "W_O")]
    reference = theorem3_bounds(torch.from_numpy(result["X"][0]), *tensors)
    for block in "QKVO":
        assert result[block][0] == pytest.approx(reference[block], rel=1e-9)


@pytest.mark.parametrize("kind", ["extreme", "random"])
@pytest.mark.parametrize("c_scale", [1.0, 2.0])
@pytest.mark.claim(CLAIM, role="holds")
@pytest.mark.claim("thm4.lower_bound", role="corrected")
def test_bounds_dominate_at_threshold(kind, c_scale):
    """With n = 8, d = 128, delta = 0.25, eta = 0.5, tau = 1.5, alpha = 0.8, beta = 1.2 and c = c_min or
    2 c_min, max(bound_Q, bound_K) <= eta min(bound_V, bound_O) with probability >= 1 - delta over X
    (one-sided 99% Clopper-Pearson). Weights: 'extreme' meets lambda_min(M_sym) = alpha c^2 and
    ||M|| = beta c^2 with equality and all other norms at tau c; 'random' is generic. Exact comparison
    of the bounds: a failure would show up as a ratio far above eta, not as rounding."""
    constants = theorem4_constants(**PARAMS)
    trials = examples(200)
    result = simulation(kind, c_scale, trials)
    successes = int(bound_successes(result, constants.eta).sum())
    verdict, lower, upper = judge(successes, trials, 1 - constants.delta)
    ratio = np.maximum(result["Q"], result["K"]) / np.minimum(result["V"], result["O"])
    evidence.note(CLAIM, f"{kind}_c{c_scale:g}x_cmin", {
        "c": c_scale * constants.c_min, "trials": trials, "successes": successes,
        "cp_lower_99": lower, "cp_upper_99": upper, "max_bound_ratio": float(ratio.max()),
        "eta": constants.eta, "gram_event_failures": int((~result["event_gram"]).sum()),
        "margin_below_a_c2": int((~result["margin_ok"]).sum()),
        "gershgorin_failures": int((~result["gershgorin_ok"]).sum()), "verdict": verdict})
    evidence.note(CLAIM, "parameters", {**PARAMS, "c_min": constants.c_min})
    if verdict == "inconclusive":
        evidence.note(CLAIM, "verdict", "inconclusive")
    assert verdict != "fails", (
        f"success frequency {successes}/{trials}: 99% upper bound {upper:.4f} < 1 - delta = {1 - constants.delta}")


@pytest.mark.claim(CLAIM, role="measure")
def test_how_conservative_the_threshold_is():
    """Success frequency of the bound comparison below the threshold (c = c_min / 2, / 4, / 8) with the
    'extreme' weights: recorded to show how much smaller c could be in this setting."""
    constants = theorem4_constants(**PARAMS)
    trials = examples(200)
    frequencies = {}
    for c_scale in (0.5, 0.25, 0.125):
        result = simulation("extreme", c_scale, trials)
        frequencies[f"c_min*{c_scale:g}"] = float(bound_successes(result, constants.eta).mean())
    evidence.note(CLAIM, "success_frequency_below_threshold", frequencies)
    assert all(0.0 <= value <= 1.0 for value in frequencies.values())
