"""Theorem 4, Eq. (B.3): the margin bound on the event max_{i != j} |<x_i, x_j>| <= t_delta.

The proof bounds |S_ij| = |x_i^T M x_j| / sqrt(d) by ||M|| t_delta / sqrt(d). That needs
|x_i^T M x_j| <= ||M|| |<x_i, x_j>|, which is false unless M is a multiple of the
identity: with x_1 = e_1, x_2 = e_2 and M = I + s (e_1 e_2^T - e_2 e_1^T), <x_1, x_2> = 0 but
x_1^T M x_2 = s. The repair bounds the ordered pairs directly: on
E' = {max_{i != j} |x_i^T M x_j| <= ||M|| t}, gamma_min >= (alpha - beta t) c^2 / sqrt(d)
holds deterministically, and since x_i^T M x_j = <x_i, M x_j> with x_i independent of
x_j, Pr(not E') <= n (n - 1) 2 exp(-(d - 1) t^2 / 2) = delta at t = t_delta. With the
Gershgorin event of (B.2) the repaired proof gives probability 1 - 3 delta / 2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st
from scipy import stats

from blockrank_ref.attention import row_margins
from blockrank_ref.theorem4 import sphere_rows, weights_meeting_hypotheses
from theory_tests import evidence
from theory_tests.profiles import examples
from theory_tests.test_thm4_b1 import exact_log_tail, monte_carlo_rng

import torch

CLAIM = "thm4.B3"


def t_delta(n: int, d: int, delta: float) -> float:
    return math.sqrt(2.0 / (d - 1) * math.log(2 * n * (n - 1) / delta))


def two_token_case(d: int, alpha: float, s: float, phi: float, delta: float) -> dict:
    """Return the quantities of (B.3) for x_1 = e_1, x_2 = cos(phi) e_1 + sin(phi) e_2 and
    M = alpha I + s (e_1 e_2^T - e_2 e_1^T), with c = 1 and beta = max(1, ||M||)."""
    X = np.zeros((2, d))
    X[0, 0] = 1.0
    X[1, 0], X[1, 1] = math.cos(phi), math.sin(phi)
    M = alpha * np.eye(d)
    M[0, 1], M[1, 0] = s, -s
    norm_M = float(np.linalg.norm(M, 2))
    beta = max(1.0, norm_M)
    t = t_delta(2, d, delta)
    S = X @ M @ X.T / math.sqrt(d)
    gamma_min = float(row_margins(torch.from_numpy(S)).min())
    return {
        "d": d, "alpha": alpha, "s": s, "phi": phi, "delta": delta, "beta": beta, "t_delta": t,
        "inner_product": float(X[0] @ X[1]), "lambda_min_M_sym": float(np.linalg.eigvalsh((M + M.T) / 2)[0]),
        "norm_M": norm_M, "S_12": float(S[0, 1]), "claimed_bound_S_12": norm_M * t / math.sqrt(d),
        "gamma_min": gamma_min, "claimed_gamma_min": (alpha - beta * t) / math.sqrt(d),
    }


def breaks_b3(case: dict) -> bool:
    """True when the hypotheses and the event hold (a > 0, |<x_1, x_2>| <= t_delta) but both the step
    |S_12| <= ||M|| t_delta / sqrt(d) and the conclusion gamma_min >= a c^2 fail."""
    return (case["claimed_gamma_min"] > 0 and abs(case["inner_product"]) <= case["t_delta"]
            and abs(case["S_12"]) > case["claimed_bound_S_12"] and case["gamma_min"] < case["claimed_gamma_min"])


@pytest.mark.claim(CLAIM, role="refutes")
def test_counterexample_found():
    """Hypothesis searches two unit tokens and an admissible M (lambda_min(M_sym) = alpha c^2,
    ||M|| <= beta c^2, c = 1) on the event |<x_1, x_2>| <= t_delta with a > 0, where (B.3) fails: both
    the bound on |S_12| and gamma_min >= a c^2. Exact comparisons: the violations are O(0.01), far above
    rounding."""
    strategy = st.builds(two_token_case, d=st.integers(2, 64), alpha=st.floats(0.05, 1.0),
                         s=st.floats(0.0, 2.0), phi=st.floats(0.0, math.pi), delta=st.floats(0.01, 0.99))
    case = find(strategy, breaks_b3, settings=settings(max_examples=2000))
    evidence.note(CLAIM, "counterexample_shrunk", case)
    assert breaks_b3(case)


@pytest.mark.claim(CLAIM, role="refutes")
def test_counterexample_pinned():
    """Pinned counterexample: d = 16, delta = 0.5, x_1 = e_1, x_2 = e_2, M = I + 0.9 (e_1 e_2^T - e_2 e_1^T)
    (lambda_min(M_sym) = 1 = alpha, ||M|| = sqrt(1.81) = beta): <x_1, x_2> = 0 but S_12 = 0.9 / 4 exceeds
    ||M|| t_delta / 4, and gamma_min = 0.1 / 4 < a = (1 - beta t_delta) / 4. Also the pointwise inequality
    behind the step fails for the non-normal M = [[1, 0.9], [0, 1]]: e_1^T M e_2 = 0.9 > ||M|| * 0."""
    case = two_token_case(16, 1.0, 0.9, math.pi / 2, 0.5)
    evidence.note(CLAIM, "counterexample_pinned", case)
    assert breaks_b3(case)
    assert case["gamma_min"] == pytest.approx(0.1 / 4, rel=1e-12)
    upper_triangular = np.array([[1.0, 0.9], [0.0, 1.0]])
    e1, e2 = np.eye(2)
    assert e1 @ upper_triangular @ e2 == pytest.approx(0.9)
    assert e1 @ e2 == 0.0
    assert np.linalg.eigvalsh((upper_triangular + upper_triangular.T) / 2)[0] == pytest.approx(1 - 0.9 / 2)


@settings(max_examples=examples(100))
@given(n=st.integers(2, 6), d=st.integers(2, 12), seed=st.integers(0, 2**32 - 1),
       alpha=st.floats(0.05, 1.0), beta=st.floats(1.0, 3.0), c=st.floats(0.1, 10.0),
       kind=st.sampled_from(["extreme", "random"]), slack=st.floats(0.0, 1.0))
@pytest.mark.claim(CLAIM, role="corrected")
def test_margin_on_ordered_pair_event(n, d, seed, alpha, beta, c, kind, slack):
    """On E'(t) = {max over ordered pairs i != j of |x_i^T M x_j| <= ||M|| t} (any t at or above the smallest
    such t), gamma_min >= (alpha - beta t) c^2 / sqrt(d) for every unit-row X and admissible M. Tolerance
    1e-12 (beta + 1) c^2 / sqrt(d) absolute: a few roundings of entries of size up to beta c^2 / sqrt(d)."""
    rng = np.random.default_rng(seed)
    weights = weights_meeting_hypotheses(d, c, 1.0 + beta, alpha, beta, rng, kind=kind)
    M = weights["W_Q"].T @ weights["W_K"]
    X = sphere_rows(1, n, d, rng)[0]
    products = X @ M @ X.T  # n x n, entry (i, j) = x_i^T M x_j
    off_diagonal = np.abs(products[~np.eye(n, dtype=bool)])
    t = float(off_diagonal.max()) / float(np.linalg.norm(M, 2)) + slack
    S = products / math.sqrt(d)
    gamma_min = float(row_margins(torch.from_numpy(S)).min())
    bound = (alpha - beta * t) * c**2 / math.sqrt(d)
    evidence.count(CLAIM)
    evidence.track_min(CLAIM, "min_gamma_minus_corrected_bound", gamma_min - bound)
    assert gamma_min >= bound - 1e-12 * (beta + 1) * c**2 / math.sqrt(d)


@pytest.mark.claim(CLAIM, role="corrected")
def test_ordered_pair_event_probability():
    """Monte Carlo, n = 8, d = 32, delta = 0.5, M = c^2 (I + J) with J skew and orthogonal (so
    x_i^T M x_j / ||M|| is exactly distributed as <u, v>): Pr(not E') <= delta and
    Pr(not E' or not E) <= 3 delta / 2 (one-sided 99.9% Clopper-Pearson upper bounds), while the literal
    step of (B.3) fails on the Gram event E with positive probability (99.9% lower bound > 0). The count
    of draws with E but gamma_min < a c^2, which (B.3) rules out, is positive too (99.9% lower bound > 0)."""
    n, d, delta = 8, 32, 0.5
    rng = monte_carlo_rng(CLAIM)
    J = np.kron(np.eye(d // 2), np.array([[0.0, 1.0], [-1.0, 0.0]]))  # orthogonal and skew
    M = np.eye(d) + J  # M_sym = I, ||M|| = sqrt(2)
    norm_M = math.sqrt(2.0)
    t = t_delta(n, d, delta)
    a = (1.0 - norm_M * t) / math.sqrt(d)
    trials = examples(20_000)
    mask = ~np.eye(n, dtype=bool)
    not_gram = not_ordered = not_either = step_fails_on_gram = margin_fails = margin_fails_on_gram = 0
    for start in range(0, trials, 5000):
        X = sphere_rows(min(5000, trials - start), n, d, rng)
        gram = np.abs(X @ np.swapaxes(X, 1, 2))[:, mask].max(axis=1)
        products = X @ M @ np.swapaxes(X, 1, 2)  # trials x n x n
        ordered = np.abs(products[:, mask]).max(axis=1) / norm_M
        gamma = row_margins(torch.from_numpy(products / math.sqrt(d))).amin(dim=1).numpy()
        not_gram += int(np.sum(gram > t))
        not_ordered += int(np.sum(ordered > t))
        not_either += int(np.sum((gram > t) | (ordered > t)))
        step_fails_on_gram += int(np.sum((gram <= t) & (ordered > t)))
        margin_fails += int(np.sum(gamma < a))
        margin_fails_on_gram += int(np.sum((gram <= t) & (gamma < a)))

    def upper(k: int) -> float:
        return stats.binomtest(k, trials, alternative="less").proportion_ci(0.999).high

    step_lower = stats.binomtest(step_fails_on_gram, trials, alternative="greater").proportion_ci(0.999).low
    exact_ordered = n * (n - 1) * math.exp(exact_log_tail(d, t))
    evidence.note(CLAIM, "monte_carlo_n8_d32_delta0.5", {
        "trials": trials, "t_delta": t, "not_E_gram": not_gram, "not_E_prime_ordered": not_ordered,
        "not_E_or_not_E_prime": not_either,
        "step_fails_on_E": step_fails_on_gram, "step_fails_on_E_cp_lower": step_lower,
        "gamma_min_below_a_c2": margin_fails, "gamma_min_below_a_c2_on_E": margin_fails_on_gram, "exact_union_sum_ordered": exact_ordered,
        "cp_upper_not_E_prime": upper(not_ordered), "delta": delta})
    evidence.note(CLAIM, "correction", "replace the Gram event by E' (ordered pairs, failure <= delta); "
                  "with (B.4) the proof then gives probability >= 1 - 3 delta / 2, or 1 - delta with "
                  "t from log(3 n (n - 1) / delta)")
    assert upper(not_ordered) < delta
    assert upper(not_either) < 1.5 * delta
    assert upper(margin_fails) < delta
    assert step_lower > 0
    margin_lower = stats.binomtest(margin_fails_on_gram, trials, alternative="greater").proportion_ci(0.999).low
    assert margin_lower > 0
