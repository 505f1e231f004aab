"""Upper bounds of Theorem 3 (Eqs. 3-6) and the softmax-Jacobian chain of its proof (appendix A).

Theorem 3, for one head, X in R^{n x d} and Frobenius norms of perturbations:

    sens_Q <= 2 min{(n-1) e^{-gamma_min}, 1} / sqrt(d) ||W_O|| ||W_V|| ||W_K|| ||X||^3   (3)
    sens_K <= 2 min{(n-1) e^{-gamma_min}, 1} / sqrt(d) ||W_O|| ||W_V|| ||W_Q|| ||X||^3   (4)
    sens_V <= ||W_O|| ||A|| ||X||                                                         (5)
    sens_O <= ||A|| ||W_V|| ||X||                                                         (6)

with spectral norms ||.|| = ||.||_2. The theorem assumes unit-norm rows of X;
the proof never uses that assumption, and the test suite checks the bounds
without it.

For H heads the module also gives the layer-level transfer that a reader would
write first: gamma_min over all heads, sqrt(d_h) for sqrt(d), and max_h ||A_h||
for ||A||. Eqs. (3)-(5) stay valid in that form, but Eq. (6) does not (the
suite shows a counterexample), so `multihead_bounds` also returns the corrected
O bound ||X|| (sum_h ||A_h||^2 ||W_V^h||^2)^{1/2}, which the same proof gives.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from blockrank_ref.attention import attention_matrices, check_inputs, head_slices, margins, row_margins
from blockrank_ref.sensitivity import exclusive_row_sums, stable_softmax_jacobian


def spectral_norm(M: Tensor) -> float:
    return float(torch.linalg.matrix_norm(M, ord=2))


def damping_factor(n: int, gamma: float) -> float:
    """Return min{(n - 1) e^{-gamma}, 1}, the softmax damping factor of Eqs. (3)-(4).

    For n = 1 the factor is 0 whatever gamma is (the convention gamma = +inf of
    `row_margins` would otherwise give the undefined product 0 * e^{-inf}).
    """
    if n == 1:
        return 0.0
    return min((n - 1) * math.exp(-gamma), 1.0)


def _equations_3_to_6(n: int, scale_dim: int, gamma_min: float, norm_X: float, norm_A: float,
                      norm_Q: float, norm_K: float, norm_V: float, norm_O: float) -> dict[str, float]:
    """Return the right-hand sides of Eqs. (3)-(6) from the spectral norms they use, keyed by block."""
    softmax_part = 2 * damping_factor(n, gamma_min) / math.sqrt(scale_dim)
    return {
        "Q": softmax_part * norm_O * norm_V * norm_K * norm_X**3,
        "K": softmax_part * norm_O * norm_V * norm_Q * norm_X**3,
        "V": norm_O * norm_A * norm_X,
        "O": norm_A * norm_V * norm_X,
    }


def theorem3_bounds(X: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor, W_O: Tensor) -> dict[str, float]:
    """Return the right-hand sides of Eqs. (3)-(6) for single-head attention, keyed by block."""
    check_inputs(X, W_Q, W_K, W_V, W_O)
    n, d = X.shape
    A = attention_matrices(X, W_Q, W_K)[0]
    gamma_min = margins(X, W_Q, W_K).gamma_min
    norm_X, norm_A = spectral_norm(X), spectral_norm(A)
    norms = (spectral_norm(W) for W in (W_Q, W_K, W_V, W_O))
    return _equations_3_to_6(n, d, gamma_min, norm_X, norm_A, *norms)


def multihead_bounds(X: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor, W_O: Tensor,
                     heads: int) -> dict[str, float]:
    """Return the layer-level transfer of Eqs. (3)-(6) to H heads, plus the corrected O bound.

    Keys 'Q', 'K', 'V', 'O' map to the literal transfer (see the module docstring)
    and 'O_corrected' to ||X|| (sum_h ||A_h||^2 ||W_V^h||^2)^{1/2}.
    """
    check_inputs(X, W_Q, W_K, W_V, W_O, heads)
    n, d = X.shape
    rows = head_slices(d, heads)
    head_dim = d // heads
    matrices = attention_matrices(X, W_Q, W_K, heads)
    gamma_min = margins(X, W_Q, W_K, heads).gamma_min
    norm_X = spectral_norm(X)
    norm_A = max(spectral_norm(A) for A in matrices)
    norms = (spectral_norm(W) for W in (W_Q, W_K, W_V, W_O))
    bounds = _equations_3_to_6(n, head_dim, gamma_min, norm_X, norm_A, *norms)
    bounds["O_corrected"] = norm_X * math.sqrt(sum(
        spectral_norm(A) ** 2 * spectral_norm(W_V[:, r]) ** 2 for A, r in zip(matrices, rows)
    ))
    return bounds


def head_bounds(X: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor, W_O: Tensor, heads: int,
                h: int) -> dict[str, float]:
    """Return Eqs. (3)-(6) for head h alone: its slices of the weights, its A_h and gamma, sqrt(d_h)."""
    check_inputs(X, W_Q, W_K, W_V, W_O, heads)
    if not 0 <= h < heads:
        raise ValueError(f"head index must be in [0, {heads - 1}]; got {h}")
    n, d = X.shape
    rows = head_slices(d, heads)[h]
    head_dim = d // heads
    A = attention_matrices(X, W_Q, W_K, heads)[h]
    gamma_min = float(margins(X, W_Q, W_K, heads).per_head[h].min())
    norm_X, norm_A = spectral_norm(X), spectral_norm(A)
    norms = (spectral_norm(W) for W in (W_Q[rows], W_K[rows], W_V[:, rows], W_O[rows, :]))
    return _equations_3_to_6(n, head_dim, gamma_min, norm_X, norm_A, *norms)


def softmax_jacobian(a: Tensor) -> Tensor:
    """Return J(a) = diag(a) - a a^T, the Jacobian of softmax at a point whose output is a.

    The diagonal a_j (1 - a_j) is formed as a_j sum_{k != j} a_k so that it keeps
    its digits when a is nearly one-hot.
    """
    return stable_softmax_jacobian(a, exclusive_row_sums(a))


def softmax_chain(s: Tensor) -> dict[str, float]:
    """Return every term of the appendix-A chain for one logit row s (length n).

    ||J(a)||_2 <= 1 - ||a||^2 <= 2 (1 - a_max) <= 2 min{(n-1) e^{-gamma}, 1},
    with a = softmax(s) and gamma the row's logit margin.
    """
    n = s.shape[0]
    a = torch.softmax(s, dim=0)
    jacobian_norm = float(torch.linalg.eigvalsh(softmax_jacobian(a))[-1].clamp_min(0.0))
    gamma = float(row_margins(s[None])[0])
    # 1 - a_max summed from the other entries, so it keeps its digits when a is
    # nearly one-hot (1 - a_max ~ e^{-gamma} can be far below machine epsilon).
    shifted = torch.exp(s - s.max())
    top = int(torch.argmax(s))
    others = torch.cat([shifted[:top], shifted[top + 1:]])
    one_minus_a_max = float(others.sum() / shifted.sum()) if n > 1 else 0.0
    return {
        "jacobian_norm": jacobian_norm,
        # 1 - ||a||^2 = sum_j a_j (1 - a_j), summed without cancellation.
        "one_minus_norm_sq": float((a * exclusive_row_sums(a)).sum()),
        "two_one_minus_a_max": 2 * one_minus_a_max,
        "two_damping": 2 * damping_factor(n, gamma),
    }
