"""Constants of Theorem 4 (Eq. 7), their corrected variant, and inputs that meet its hypotheses.

Theorem 4 takes X with n i.i.d. rows uniform on the sphere S^{d-1}, weights with
c <= ||W_Q||, ||W_K||, ||W_V||, ||W_O|| <= tau c, and M = W_Q^T W_K with
lambda_min(M_sym) >= alpha c^2 and ||M||_2 <= beta c^2. It sets

    t_delta   = sqrt(2 / (d - 1) * log(2 n (n - 1) / delta))
    chi_delta = sqrt(1 + (n - 1) t_delta)
    a         = (alpha - beta t_delta) / sqrt(d)
    K         = eta a sqrt(d) / (2 (n - 1) tau^2 chi_delta^2)
    c^2      >= max{log(2 (n - 1)), -W_{-1}(-K)} / a                         (7)

and concludes that with probability >= 1 - delta over X the Theorem-3 bounds
(Eqs. 3-4) for W_Q and W_K are at most eta times those (Eqs. 5-6) for W_V, W_O.

Facts the test suite establishes, which shape this module:
- K < 1/(2 (n - 1)), so K >= 1/e happens only for n = 2. Then y e^{-y} <= 1/e <= K
  for every y and the Lambert term does not bind (W_{-1}(-K) is undefined for
  K > 1/e). The max of Eq. (7) then leaves log 2 / a.
- When the Lambert term applies, -W_{-1}(-K) > log(2 (n - 1)) always, so the
  log term of Eq. (7) never decides the threshold. It is also unnecessary in
  the proof, because min{x, 1} <= x.
- The proof's step (B.3) bounds x_i^T M x_j by ||M|| |<x_i, x_j>|, which is false
  unless M is a multiple of the identity. Bounding instead the n (n - 1) ordered
  pairs |x_i^T M x_j| <= ||M|| t fails with probability <= delta, so with the
  Gershgorin event (B.2, failure <= delta / 2) the proof as written gives
  probability 1 - 3 delta / 2. `corrected_theorem4_constants` uses
  t = sqrt(2 / (d - 1) * log(3 n (n - 1) / delta)), which splits the failure
  probability as 2 delta / 3 + delta / 3 = delta, and drops the log term.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from blockrank_ref.lambertw import lambertw_0, lambertw_minus1

# Union-bound numerators in t_delta = sqrt(2 / (d - 1) log(UNION * n (n - 1) / delta)).
PAPER_UNION = 2
CORRECTED_UNION = 3


@dataclass(frozen=True)
class Theorem4Constants:
    """Every intermediate quantity of Eq. (7) for one parameter set.

    `lambert_term` is -W_{-1}(-K), or None when K >= 1/e (then `lambert_note`
    explains why it does not bind). `c2_min` is the threshold on c^2 and
    `binding_term` names the term of the max that sets it ('lambert', 'log', or
    'none' when every c > 0 qualifies). `c2_small_max` is the largest c^2 below
    which the proof's ratio bound is also <= eta (see `ratio_bound`).
    `failure_probability_stated` is delta; `failure_probability_proved` is what
    the proof gives once step (B.3) is repaired: 3 delta / 2 for the printed
    t_delta, delta for the corrected one.
    """

    variant: str
    n: int
    d: int
    delta: float
    eta: float
    tau: float
    alpha: float
    beta: float
    t_delta: float
    chi_delta: float
    a: float
    K: float
    lambert_applies: bool
    lambert_term: float | None
    lambert_note: str
    log_term: float
    c2_min: float
    c_min: float
    binding_term: str
    c2_small_max: float
    failure_probability_stated: float
    failure_probability_proved: float

    def to_dict(self) -> dict:
        return asdict(self)


def _require(condition: bool, name: str, value: object, valid: str, why: str = "") -> None:
    if not condition:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name} must be {valid}{reason}; got {value!r}")


def validate_parameters(n: int, d: int, delta: float, eta: float, tau: float, alpha: float,
                        beta: float) -> None:
    """Raise ValueError naming the first parameter outside the range Theorem 4 allows."""
    for name, value in (("n", n), ("d", d)):
        _require(isinstance(value, (int, np.integer)) and not isinstance(value, bool), name, value,
                 "an integer")
    _require(n >= 2, "n", n, "an integer >= 2",
             "with n = 1 the softmax is constant, the W_Q and W_K sensitivities are exactly 0 "
             "and Theorem 4 says nothing")
    _require(d >= 2, "d", d, "an integer >= 2", "t_delta divides by d - 1")
    for name, value in (("delta", delta), ("eta", eta), ("tau", tau), ("alpha", alpha), ("beta", beta)):
        _require(isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
                 and math.isfinite(value), name, value, "a finite real number")
    # The theorem states delta in (0, 1/2) and, two lines later, (0, 1); the proof
    # (B.2 gives failure <= delta / 2) works for every delta in (0, 1).
    _require(0 < delta < 1, "delta", delta, "in (0, 1)", "a failure probability")
    _require(0 < eta < 1, "eta", eta, "in (0, 1)", "the target ratio of Q/K to V/O bounds")
    _require(tau >= 1, "tau", tau, ">= 1", "the weight norms lie in [c, tau c]")
    _require(0 < alpha <= 1, "alpha", alpha, "in (0, 1]", "lambda_min(M_sym) >= alpha c^2")
    _require(beta >= 1, "beta", beta, ">= 1", "||W_Q^T W_K||_2 <= beta c^2")


def _lambert_threshold(K: float) -> tuple[bool, float | None, str]:
    """Return (applies, -W_{-1}(-K) or None, note) for the condition y e^{-y} <= K of (B.6)."""
    if K >= 1 / math.e:
        note = (f"K = {K:.6g} >= 1/e: y e^(-y) <= 1/e <= K holds for every y, so the Lambert-W "
                "condition does not bind")
        return False, None, note
    return True, -lambertw_minus1(-K), "y e^(-y) <= K for y >= -W_{-1}(-K) (and y <= -W_0(-K))"


def _constants(variant: str, union: int, n: int, d: int, delta: float, eta: float, tau: float,
               alpha: float, beta: float) -> Theorem4Constants:
    validate_parameters(n, d, delta, eta, tau, alpha, beta)
    n, d = int(n), int(d)
    delta, eta, tau, alpha, beta = (float(v) for v in (delta, eta, tau, alpha, beta))

    t_delta = math.sqrt(2.0 / (d - 1) * math.log(union * n * (n - 1) / delta))
    chi_delta = math.sqrt(1.0 + (n - 1) * t_delta)
    margin_coefficient = alpha - beta * t_delta
    if margin_coefficient <= 0:
        raise ValueError(
            f"alpha - beta * t_delta = {alpha} - {beta} * {t_delta:.6g} = {margin_coefficient:.6g} <= 0: "
            f"Theorem 4 gives nothing for n = {n}, d = {d}, delta = {delta} (the margin bound (B.3) is "
            "vacuous); it needs alpha > beta * t_delta, so raise d or alpha, or lower beta, n or 1/delta"
        )
    a = margin_coefficient / math.sqrt(d)
    K = eta * a * math.sqrt(d) / (2 * (n - 1) * tau**2 * chi_delta**2)
    applies, lambert_term, note = _lambert_threshold(K)
    log_term = math.log(2 * (n - 1))

    if variant == "paper":
        # Eq. (7) as printed; with K >= 1/e only the log term is left.
        terms = {"log": log_term} if lambert_term is None else {"log": log_term, "lambert": lambert_term}
        binding_term = max(terms, key=terms.get)
        c2_min = terms[binding_term] / a
        proved = 1.5 * delta
    else:
        binding_term = "none" if lambert_term is None else "lambert"
        c2_min = 0.0 if lambert_term is None else lambert_term / a
        proved = delta

    # Small-c region of the ratio bound with Theorem 3's factor 2 min{(n-1) e^{-y}, 1}:
    # it is <= eta when y e^{-y} <= K (y <= -W_0(-K)) or when 2 y tau^2 chi^2 / (a sqrt(d)) <= eta
    # (y <= (n - 1) K); y = a c^2.
    small_y = (n - 1) * K if not applies else max(-lambertw_0(-K), (n - 1) * K)
    c2_small_max = math.inf if not applies else small_y / a

    return Theorem4Constants(
        variant=variant, n=n, d=d, delta=delta, eta=eta, tau=tau, alpha=alpha, beta=beta,
        t_delta=t_delta, chi_delta=chi_delta, a=a, K=K, lambert_applies=applies,
        lambert_term=lambert_term, lambert_note=note, log_term=log_term, c2_min=c2_min,
        c_min=math.sqrt(c2_min), binding_term=binding_term, c2_small_max=c2_small_max,
        failure_probability_stated=delta, failure_probability_proved=proved,
    )


def theorem4_constants(n: int, d: int, delta: float, eta: float, tau: float, alpha: float,
                       beta: float) -> Theorem4Constants:
    """Return t_delta, chi_delta, a, K, -W_{-1}(-K) and the c^2 threshold of Eq. (7) as printed."""
    return _constants("paper", PAPER_UNION, n, d, delta, eta, tau, alpha, beta)


def corrected_theorem4_constants(n: int, d: int, delta: float, eta: float, tau: float, alpha: float,
                                 beta: float) -> Theorem4Constants:
    """Return the constants for which the corrected proof gives probability >= 1 - delta.

    t_delta uses log(3 n (n - 1) / delta) (ordered-pair event for x_i^T M x_j plus
    the Gershgorin event), and c^2 >= -W_{-1}(-K) / a without the log term.
    """
    return _constants("corrected", CORRECTED_UNION, n, d, delta, eta, tau, alpha, beta)


def ratio_bound(constants: Theorem4Constants, c2: float, form: str = "theorem3") -> float:
    """Return the proof's bound on (Q or K bound) / (V or O bound) on the event, at c^2 = c2.

    With y = a c^2 and the common factor tau^2 c^2 chi^2 / sqrt(d), the softmax factor is
    - 'theorem3': 2 min{(n-1) e^{-y}, 1}, the factor of Eqs. (3)-(4);
    - 'proof':    min{2 (n-1) e^{-y}, 1}, the factor as written in appendix B;
    - 'R':        2 (n-1) e^{-y}, the function R(c) of Eq. (B.5).
    """
    if c2 < 0 or not math.isfinite(c2):
        raise ValueError(f"c2 must be a finite number >= 0; got {c2!r}")
    n, y = constants.n, constants.a * c2
    factors = {
        "theorem3": 2 * min((n - 1) * math.exp(-y), 1.0),
        "proof": min(2 * (n - 1) * math.exp(-y), 1.0),
        "R": 2 * (n - 1) * math.exp(-y),
    }
    if form not in factors:
        raise ValueError(f"form must be one of {sorted(factors)}; got {form!r}")
    return factors[form] * constants.tau**2 * c2 * constants.chi_delta**2 / math.sqrt(constants.d)


# Inputs that meet the hypotheses, for Monte Carlo checks of the conclusion.

def sphere_rows(trials: int, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Return `trials` matrices X (trials x n x d) whose rows are i.i.d. uniform on S^{d-1}."""
    X = rng.standard_normal((trials, n, d))
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


def _orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """Return a Haar-distributed d x d orthogonal matrix (QR with the sign correction)."""
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def _skew(d: int, rng: np.random.Generator) -> np.ndarray:
    """Return a random skew-symmetric matrix with spectral norm 1."""
    G = rng.standard_normal((d, d))
    S = G - G.T
    return S / np.linalg.norm(S, 2)


def weights_meeting_hypotheses(d: int, c: float, tau: float, alpha: float, beta: float,
                               rng: np.random.Generator, kind: str = "extreme") -> dict[str, np.ndarray]:
    """Return W_Q, W_K, W_V, W_O (paper convention, d x d) that meet Theorem 4's hypotheses.

    W_Q = c U and W_K = c U (P + S) with U orthogonal, P symmetric and S
    skew-symmetric, so M = W_Q^T W_K = c^2 (P + S) and M_sym = c^2 P.
    - 'extreme': P = alpha I and ||S|| chosen so that ||P + S|| = min(beta, tau),
      the smallest admissible diagonal of S and the largest admissible off-diagonal
      part; W_V = W_O = tau c times an orthogonal matrix (largest Q/K bounds).
    - 'random': P with eigenvalues uniform in [alpha, 1] and top eigenvalue 1, the
      largest skew part with ||P + S|| <= min(beta, tau) (by bisection), and W_V, W_O
      with random singular values whose maximum is uniform in [c, tau c].
    """
    if kind not in ("extreme", "random"):
        raise ValueError(f"kind must be 'extreme' or 'random'; got {kind!r}")
    cap = min(beta, tau)  # ||P + S|| <= beta keeps ||M|| <= beta c^2; <= tau keeps ||W_K|| <= tau c
    U = _orthogonal(d, rng)
    S = _skew(d, rng)
    if kind == "extreme":
        # alpha I + s S is normal with eigenvalues alpha +- i s sigma_k, so its norm is sqrt(alpha^2 + s^2).
        P = alpha * np.eye(d)
        core = P + math.sqrt(max(cap**2 - alpha**2, 0.0)) * S
        W_V = tau * c * _orthogonal(d, rng)
        W_O = tau * c * _orthogonal(d, rng)
    else:
        eigenvalues = rng.uniform(alpha, 1.0, size=d)
        eigenvalues[0] = 1.0
        V = _orthogonal(d, rng)
        P = (V * eigenvalues) @ V.T
        low, high = 0.0, 2.0 * cap
        for _ in range(40):  # ||P + s S|| is convex in s and <= cap at s = 0; 2^-40 relative is plenty
            middle = (low + high) / 2
            low, high = (middle, high) if np.linalg.norm(P + middle * S, 2) <= cap else (low, middle)
        core = P + low * S
        W_V, W_O = (_orthogonal(d, rng) * rng.uniform(0.0, 1.0, size=d) @ _orthogonal(d, rng)
                    for _ in range(2))
        W_V = W_V / np.linalg.norm(W_V, 2) * rng.uniform(c, tau * c)
        W_O = W_O / np.linalg.norm(W_O, 2) * rng.uniform(c, tau * c)
    return {"W_Q": c * U, "W_K": c * U @ core, "W_V": W_V, "W_O": W_O}


def hypothesis_violations(weights: dict[str, np.ndarray], c: float, tau: float, alpha: float, beta: float,
                          rtol: float = 1e-10) -> list[str]:
    """Return a message for each hypothesis of Theorem 4 that the weights break (empty if none).

    `rtol` absorbs the rounding of the spectral norms and eigenvalues (a few ulps
    of a d x d decomposition), so weights built to meet a bound with equality pass.
    """
    problems = []
    for name in ("W_Q", "W_K", "W_V", "W_O"):
        norm = float(np.linalg.norm(weights[name], 2))
        if not c * (1 - rtol) <= norm <= tau * c * (1 + rtol):
            problems.append(f"||{name}||_2 = {norm:.12g} is outside [c, tau c] = [{c:.12g}, {tau * c:.12g}]")
    M = weights["W_Q"].T @ weights["W_K"]
    lambda_min = float(np.linalg.eigvalsh((M + M.T) / 2)[0])
    if lambda_min < alpha * c**2 * (1 - rtol):
        problems.append(f"lambda_min(M_sym) = {lambda_min:.12g} < alpha c^2 = {alpha * c**2:.12g}")
    norm_M = float(np.linalg.norm(M, 2))
    if norm_M > beta * c**2 * (1 + rtol):
        problems.append(f"||M||_2 = {norm_M:.12g} > beta c^2 = {beta * c**2:.12g}")
    return problems
