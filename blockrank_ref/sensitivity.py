"""Exact first-order sensitivities of attention (Eq. 1) to each of W_Q, W_K, W_V, W_O.

For a block W the sensitivity is the operator norm of the directional derivative
with Frobenius norms on both sides,

    sens_W = sup_{dW != 0} ||D_W F[dW]||_F / ||dW||_F,

the quantity that Theorem 3 bounds. The closed forms of D_W F (appendix A,
extended to H heads with F = sum_h A_h X W_V^h W_O^h) are, with B_h = A_h X,
Qx_h = X W_Q^h^T, Kx_h = X W_K^h^T, U_h = X W_V^h W_O^h and J_h the row-wise
softmax Jacobian at A_h:

    D_Q F[dW] = sum_h J_h(X dW_h^T Kx_h^T / sqrt(d_h)) U_h      (A.1 then A.7)
    D_K F[dW] = sum_h J_h(Qx_h dW_h X^T / sqrt(d_h)) U_h        (A.2 then A.7)
    D_V F[dW] = sum_h B_h dW[:, h] W_O^h
    D_O F[dW] = [B_1 W_V^1, ..., B_H W_V^H] dW

sens_O is the spectral norm of the n x d matrix [B_h W_V^h]_h, and for one head
sens_V = ||A X||_2 ||W_O||_2 (a Kronecker product). Every other case is computed
matrix-free: the largest eigenvalue of D D* (or D* D, whichever acts on the
smaller space) by Lanczos (scipy's ARPACK `eigsh`) using only the closed-form
derivative and its adjoint, so a ViT-B layer (n = 197, d = 768) never builds
its 151k x 590k Jacobian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import Tensor

from blockrank_ref.attention import check_inputs, head_slices

BLOCKS = ("Q", "K", "V", "O")

# Relative tolerance passed to ARPACK for the largest eigenvalue of D D*. The
# norm is its square root, so its relative error is about half of this.
LANCZOS_TOL = 1e-10
# Krylov basis size; a larger basis than ARPACK's default of 20 avoids restarts,
# which cost more matrix-vector products than the basis costs memory.
LANCZOS_BASIS = 24
# Operators acting on at most this many coordinates are materialised and
# decomposed exactly (numpy eigvalsh) instead of using Lanczos.
DENSE_MAX_DIM = 256
# A head's Q/K derivative reduced to the n x n logit space is formed as an
# n^2 x n^2 matrix up to this size (n <= 45), which beats Lanczos there.
DENSE_HEAD_MAX_DIM = 2025


def exclusive_row_sums(V: Tensor) -> Tensor:
    """Return R with R_ij = sum_{k != j} V_ik, computed from prefix and suffix sums.

    Computing it as rowsum - V_ij would cancel catastrophically when V_ij
    dominates the row, which is exactly the sharp-softmax regime that matters.
    """
    zeros = torch.zeros_like(V[..., :1])
    prefix = torch.cat([zeros, torch.cumsum(V, dim=-1)[..., :-1]], dim=-1)
    suffix = torch.flip(torch.cumsum(torch.flip(V, [-1]), dim=-1), [-1])
    suffix = torch.cat([suffix[..., 1:], zeros], dim=-1)
    return prefix + suffix


def stable_softmax_jacobian(a: Tensor, a_rest: Tensor) -> Tensor:
    """Return J(a) = diag(a) - a a^T with the diagonal a_j (1 - a_j) formed as a_j sum_{k != j} a_k."""
    return torch.diag(a * a_rest) - torch.outer(a, a).fill_diagonal_(0.0)


def softmax_jvp(A: Tensor, A_rest: Tensor, E: Tensor) -> Tensor:
    """Apply the row-wise softmax Jacobian J(a_i) = diag(a_i) - a_i a_i^T to the rows of E.

    Uses the identity (J e)_j = a_j sum_{k != j} a_k (e_j - e_k), evaluated as
    a_j (e_j r_j - t_j) with exclusive sums r_j = sum_{k != j} a_k (precomputed in
    `A_rest`) and t_j = sum_{k != j} a_k e_k. The textbook form a_j (e_j - a.e)
    loses all digits when a row is nearly one-hot (J ~ exp(-gamma) is tiny
    but a.e ~ e_j). J is symmetric, so this also applies the adjoint.
    """
    return A * (E * A_rest - exclusive_row_sums(A * E))


@dataclass
class AttentionPoint:
    """Per-head quantities of Eq. (1) at one (X, W_Q, W_K, W_V, W_O), reused by every derivative."""

    X: Tensor
    W_Q: Tensor
    W_K: Tensor
    W_V: Tensor
    W_O: Tensor
    heads: int = 1
    rows: list[slice] = field(init=False)
    A: list[Tensor] = field(init=False)
    A_rest: list[Tensor] = field(init=False)
    queries: list[Tensor] = field(init=False)
    keys: list[Tensor] = field(init=False)
    mixed: list[Tensor] = field(init=False)  # B_h = A_h X
    values: list[Tensor] = field(init=False)  # X W_V^h, n x d_h
    values_out: list[Tensor | None] = field(init=False)  # U_h = X W_V^h W_O^h when that is cheaper to use

    def __post_init__(self) -> None:
        check_inputs(self.X, self.W_Q, self.W_K, self.W_V, self.W_O, self.heads)
        X = self.X
        self.rows = head_slices(X.shape[1], self.heads)
        self.A, self.A_rest, self.queries, self.keys, self.mixed = [], [], [], [], []
        self.values, self.values_out = [], []
        n, d, d_h = X.shape[0], X.shape[1], self.head_dim
        # M U_h for an n x n matrix M costs n*n*d flops with U_h formed.
        # As (M X W_V^h) W_O^h it costs n*d_h*(n + d), so U_h is kept only when cheaper.
        form_values_out = n * d <= d_h * (n + d)
        for rows in self.rows:
            queries = X @ self.W_Q[rows].T  # n x d_h
            keys = X @ self.W_K[rows].T  # n x d_h
            S = queries @ keys.T / math.sqrt(self.head_dim)  # n x n
            A = torch.softmax(S, dim=-1)
            self.A.append(A)
            self.A_rest.append(exclusive_row_sums(A))
            self.queries.append(queries)
            self.keys.append(keys)
            self.mixed.append(A @ X)  # n x d
            self.values.append(X @ self.W_V[:, rows])  # n x d_h
            self.values_out.append(self.values[-1] @ self.W_O[rows, :] if form_values_out else None)

    def _times_values_out(self, h: int, M: Tensor) -> Tensor:
        """Return M U_h (n x d) for an n x n matrix M."""
        if self.values_out[h] is not None:
            return M @ self.values_out[h]
        return (M @ self.values[h]) @ self.W_O[self.rows[h], :]

    def _times_values_out_T(self, h: int, G: Tensor) -> Tensor:
        """Return G U_h^T (n x n) for an n x d matrix G."""
        if self.values_out[h] is not None:
            return G @ self.values_out[h].T
        return (G @ self.W_O[self.rows[h], :].T) @ self.values[h].T

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def head_dim(self) -> int:
        return self.d // self.heads

    def values_mixed(self, h: int) -> Tensor:
        """Return A_h X W_V^h (n x d_h), head h's output before W_O."""
        return self.A[h] @ self.values[h]

    def output_matrix_for_O(self) -> Tensor:
        """Return C = [A_1 X W_V^1, ..., A_H X W_V^H] (n x d), so that D_O F[dW] = C dW."""
        return torch.cat([self.values_mixed(h) for h in range(self.heads)], dim=1)

    # Directional derivatives D_W F[dW] (n x d) and their adjoints (d x d).

    def jvp(self, block: str, dW: Tensor) -> Tensor:
        scale = math.sqrt(self.head_dim)
        F_dot = torch.zeros(self.n, self.d, dtype=self.X.dtype)
        for h, rows in enumerate(self.rows):
            if block == "Q":
                S_dot = self.X @ dW[rows].T @ self.keys[h].T / scale  # n x n
                F_dot += self._times_values_out(h, softmax_jvp(self.A[h], self.A_rest[h], S_dot))
            elif block == "K":
                S_dot = self.queries[h] @ dW[rows] @ self.X.T / scale  # n x n
                F_dot += self._times_values_out(h, softmax_jvp(self.A[h], self.A_rest[h], S_dot))
            elif block == "V":
                F_dot += self.mixed[h] @ dW[:, rows] @ self.W_O[rows, :]
            elif block == "O":
                F_dot += self.values_mixed(h) @ dW[rows, :]
            else:
                raise ValueError(f"block must be one of {BLOCKS}; got {block!r}")
        return F_dot

    def vjp(self, block: str, G: Tensor) -> Tensor:
        """Return the adjoint D_W F^*[G] (d x d) of `jvp` for a cotangent G (n x d)."""
        scale = math.sqrt(self.head_dim)
        W_bar = torch.zeros(self.d, self.d, dtype=self.X.dtype)
        for h, rows in enumerate(self.rows):
            if block in ("Q", "K"):
                A_bar = self._times_values_out_T(h, G)  # n x n
                S_bar = softmax_jvp(self.A[h], self.A_rest[h], A_bar)
                if block == "Q":
                    W_bar[rows] = self.keys[h].T @ S_bar.T @ self.X / scale  # d_h x d
                else:
                    W_bar[rows] = self.queries[h].T @ S_bar @ self.X / scale  # d_h x d
            elif block == "V":
                W_bar[:, rows] = self.mixed[h].T @ (G @ self.W_O[rows, :].T)  # d x d_h
            elif block == "O":
                W_bar[rows, :] = self.values_mixed(h).T @ G  # d_h x d
            else:
                raise ValueError(f"block must be one of {BLOCKS}; got {block!r}")
        return W_bar


def _largest_eigenvalue(apply, dim: int, dtype: torch.dtype, seed: int) -> float:
    """Return lambda_max of a symmetric positive semi-definite operator given as a function."""
    if dim <= DENSE_MAX_DIM:
        basis = torch.eye(dim, dtype=dtype)
        matrix = torch.stack([apply(basis[i]) for i in range(dim)], dim=1).numpy()
        matrix = (matrix + matrix.T) / 2
        return float(max(np.linalg.eigvalsh(matrix)[-1], 0.0))

    def matvec(v: np.ndarray) -> np.ndarray:
        return apply(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)).to(dtype)).numpy()

    start = np.random.default_rng(seed).standard_normal(dim)
    if not np.any(matvec(start)):
        # A random start vector has a component along every eigenvector almost
        # surely, so an exactly zero image means the operator itself is zero.
        return 0.0
    operator = LinearOperator((dim, dim), matvec=matvec, dtype=np.float64)
    value = eigsh(operator, k=1, which="LA", tol=LANCZOS_TOL, v0=start, ncv=min(dim - 1, LANCZOS_BASIS),
                  return_eigenvectors=False)[0]
    return float(max(value, 0.0))


def _logit_space_gram(point: AttentionPoint, block: str):
    """Return G -> D D*(G) for block Q or K on R^{n x d}, passing through n x n matrices only.

    D D* = sum_h L_out,h J_h P_h J_h L_out,h^*, with L_out,h(M) = M U_h and P_h = L_in,h
    L_in,h^*: for Q, P_h(E) = X X^T E Kx_h Kx_h^T / d_h; for K, P_h(E) = Qx_h Qx_h^T E X X^T / d_h.
    This skips the d x d perturbation that jvp and vjp would form.
    """
    gram_X = point.X @ point.X.T  # n x n
    factors = []
    for h in range(point.heads):
        if block == "Q":
            factors.append((gram_X, point.keys[h] @ point.keys[h].T / point.head_dim))
        else:
            factors.append((point.queries[h] @ point.queries[h].T / point.head_dim, gram_X))

    def apply(g: Tensor) -> Tensor:
        G = g.reshape(point.n, point.d)
        result = torch.zeros_like(G)
        for h, (left, right) in enumerate(factors):
            M = point._times_values_out_T(h, G)  # n x n
            E = softmax_jvp(point.A[h], point.A_rest[h], M)
            E = softmax_jvp(point.A[h], point.A_rest[h], left @ E @ right)
            result += point._times_values_out(h, E)
        return result.reshape(-1)

    return apply


def _value_gram(point: AttentionPoint):
    """Return G -> D D*(G) for block V on R^{n x d}: sum_h (B_h B_h^T) G W_O^h^T W_O^h with B_h = A_h X."""
    grams = [B @ B.T for B in point.mixed]  # n x n each

    def apply(g: Tensor) -> Tensor:
        G = g.reshape(point.n, point.d)
        result = torch.zeros_like(G)
        for h, rows in enumerate(point.rows):
            W_O = point.W_O[rows, :]  # d_h x d
            result += (grams[h] @ (G @ W_O.T)) @ W_O
        return result.reshape(-1)

    return apply


def operator_norm(point: AttentionPoint, block: str, seed: int = 0) -> float:
    """Return sens_W = sup ||D_W F[dW]||_F / ||dW||_F exactly (closed form or Lanczos)."""
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}; got {block!r}")
    if block == "O":
        return float(torch.linalg.matrix_norm(point.output_matrix_for_O(), ord=2))
    if block == "V" and point.heads == 1:
        return float(torch.linalg.matrix_norm(point.mixed[0], ord=2) * torch.linalg.matrix_norm(point.W_O, ord=2))
    if block in ("Q", "K") and point.n == 1:
        return 0.0  # softmax of a single logit is constant
    if point.heads == 1:
        return head_operator_norm(point, block, 0, seed=seed)

    n, d = point.n, point.d
    if block in ("Q", "K") and n <= d:
        value = _largest_eigenvalue(_logit_space_gram(point, block), n * d, point.X.dtype, seed)
        return math.sqrt(value)
    if block == "V" and n <= d:
        return math.sqrt(_largest_eigenvalue(_value_gram(point), n * d, point.X.dtype, seed))
    if n * d <= d * d:
        # D D* acts on the output space R^{n x d}, the smaller of the two.
        def apply(g: Tensor) -> Tensor:
            G = g.reshape(n, d)
            return point.jvp(block, point.vjp(block, G)).reshape(-1)

        value = _largest_eigenvalue(apply, n * d, point.X.dtype, seed)
    else:
        def apply(w: Tensor) -> Tensor:
            W = w.reshape(d, d)
            return point.vjp(block, point.jvp(block, W)).reshape(-1)

        value = _largest_eigenvalue(apply, d * d, point.X.dtype, seed)
    return math.sqrt(value)


def sensitivities(X: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor, W_O: Tensor,
                  heads: int = 1, seed: int = 0) -> dict[str, float]:
    """Return the exact sensitivity of Eq. (1) to each block, keyed by 'Q', 'K', 'V', 'O'.

    Runs with one torch thread and restores the setting: the work is many small
    matrix products, and a ViT-B layer with 12 heads took 11.6 s on two threads
    against 5.1 s on one (2-core CPU, `make bench`).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        point = AttentionPoint(X, W_Q, W_K, W_V, W_O, heads=heads)
        return {block: operator_norm(point, block, seed=seed) for block in BLOCKS}
    finally:
        torch.set_num_threads(threads)


def _row_factor(M: Tensor) -> Tensor:
    """Return R (k x m, k = min(m, p)) with M = R^T Q^T for an m x p matrix M and orthonormal Q.

    From the QR decomposition of M^T, so ||E M||_F = ||E R^T||_F for every E: the
    factor keeps M's action without forming the Gram matrix M M^T, whose square
    root would amplify rounding to sqrt(eps) in M's null directions.
    """
    return torch.linalg.qr(M.T, mode="reduced").R


def head_operator_norm(point: AttentionPoint, block: str, h: int, seed: int = 0) -> float:
    """Return the exact sensitivity of head h's output A_h X W_V^h W_O^h to its own slice of W.

    For Q and K the derivative factors through the n x n logit space as
    dW -> J_h(L_in(dW)) U_h. With X = R_X^T Q_X^T, only Z = Q_X^T dW^T (for Q) or
    Z = dW Q_X (for K) reaches the logits, and ||M U_h||_F = ||M R_U^T||_F, so the
    norm equals that of the small map Z -> J_h(L(Z)) R_U^T with
    L(Z) = R_X^T Z Kx_h^T / sqrt(d_h) for Q and Qx_h Z R_X / sqrt(d_h) for K.
    """
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}; got {block!r}")
    if not 0 <= h < point.heads:
        raise ValueError(f"head index must be in [0, {point.heads - 1}]; got {h}")
    rows = point.rows[h]
    if block == "V":
        return float(torch.linalg.matrix_norm(point.mixed[h], ord=2)
                     * torch.linalg.matrix_norm(point.W_O[rows, :], ord=2))
    if block == "O":
        return float(torch.linalg.matrix_norm(point.values_mixed(h), ord=2))
    n = point.n
    if n == 1:
        return 0.0

    scale = math.sqrt(point.head_dim)
    R_X = _row_factor(point.X)  # k x n
    R_U = _row_factor(point.values[h] @ point.W_O[rows, :])  # k_U x n
    if block == "Q":
        left, right = R_X.T, point.keys[h].T / scale  # L(Z) = left Z right
    else:
        left, right = point.queries[h] / scale, R_X
    A, A_rest = point.A[h], point.A_rest[h]
    input_dim = left.shape[1] * right.shape[0]
    output_dim = n * R_U.shape[0]

    if n * n <= DENSE_HEAD_MAX_DIM and input_dim * output_dim <= DENSE_HEAD_MAX_DIM * 2025:
        # Row-major vec: vec(L Z R) = (L kron R^T) vec(Z), the row-wise softmax
        # derivative is block-diagonal with blocks J(a_i), and vec(M R_U^T) = (I kron R_U) vec(M).
        jacobian = torch.block_diag(*[stable_softmax_jacobian(A[i], A_rest[i]) for i in range(n)])
        into_logits = torch.kron(left.contiguous(), right.T.contiguous())  # n^2 x input_dim
        out_of_logits = torch.kron(torch.eye(n, dtype=A.dtype), R_U.contiguous())  # output_dim x n^2
        return float(torch.linalg.matrix_norm(out_of_logits @ jacobian @ into_logits, ord=2))

    def apply(g: Tensor) -> Tensor:
        # D D* on the output space R^{n x k_U}: out^*, J, L L^*, J, out.
        M = g.reshape(n, R_U.shape[0]) @ R_U  # n x n
        E = softmax_jvp(A, A_rest, M)
        E = left @ (left.T @ E @ right.T) @ right
        return (softmax_jvp(A, A_rest, E) @ R_U.T).reshape(-1)

    return math.sqrt(_largest_eigenvalue(apply, output_dim, point.X.dtype, seed))
