"""Attention as Eq. (1) of the paper, and the row logit margins defined under Eq. (2).

Convention (the paper's, kept throughout `blockrank_ref`): rows are tokens, X is
n x d, and

    S = X W_Q^T W_K X^T / sqrt(d),   A = softmax(S) row-wise,   F = A X W_V W_O.

So queries are X W_Q^T and keys X W_K^T: the paper's W_Q and W_K are laid out
like a torch ``nn.Linear`` weight (out x in). Values are X W_V and the output is
(.) W_O: the paper's W_V and W_O are the TRANSPOSES of ``nn.Linear`` weights.
For a torch layer ``value = nn.Linear(d, d)`` use ``W_V = value.weight.T``.

Multi-head attention with H heads splits d into H slices of width d_h = d / H:
head h uses rows h*d_h:(h+1)*d_h of W_Q and W_K, columns of W_V and rows of W_O,
scales its logits by 1/sqrt(d_h), and the heads' outputs A_h X W_V^h are
concatenated before W_O, so F = sum_h A_h X W_V^h W_O^h. With H = 1 this is
exactly Eq. (1).

Explicit matmul-softmax math only: torch's fused CPU attention kernel raises
NotImplementedError under forward-mode AD (torch 2.14), which the tests of the
sensitivity code rely on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def check_inputs(X: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor, W_O: Tensor, heads: int = 1) -> None:
    """Raise ValueError unless X is n x d, every weight is d x d, all are finite, and H divides d."""
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X must be a non-empty n x d matrix; got shape {tuple(X.shape)}")
    d = X.shape[1]
    for name, W in (("W_Q", W_Q), ("W_K", W_K), ("W_V", W_V), ("W_O", W_O)):
        if tuple(W.shape) != (d, d):
            raise ValueError(
                f"{name} must be d x d = {d} x {d} to match X's {d} columns; got shape {tuple(W.shape)}"
            )
    for name, T in (("X", X), ("W_Q", W_Q), ("W_K", W_K), ("W_V", W_V), ("W_O", W_O)):
        if not torch.isfinite(T).all():
            raise ValueError(f"{name} contains NaN or infinite values; pass finite arrays")
    if not isinstance(heads, int) or heads < 1 or d % heads != 0:
        raise ValueError(f"heads must be a positive integer that divides d = {d}; got {heads!r}")


def head_slices(d: int, heads: int) -> list[slice]:
    """Return the H index ranges of width d / H that select each head's coordinates."""
    width = d // heads
    return [slice(h * width, (h + 1) * width) for h in range(heads)]


def logits(X: Tensor, W_Q: Tensor, W_K: Tensor, scale_dim: int | None = None) -> Tensor:
    """Return S = X W_Q^T W_K X^T / sqrt(scale_dim) (Eq. 2); scale_dim defaults to d."""
    scale_dim = X.shape[1] if scale_dim is None else scale_dim
    queries = X @ W_Q.T  # n x d_h
    keys = X @ W_K.T  # n x d_h
    return queries @ keys.T / math.sqrt(scale_dim)  # n x n


def attention_matrices(X: Tensor, W_Q: Tensor, W_K: Tensor, heads: int = 1) -> list[Tensor]:
    """Return the row-stochastic attention matrix A_h = softmax(S_h) of every head."""
    d = X.shape[1]
    matrices = []
    for rows in head_slices(d, heads):
        S = logits(X, W_Q[rows], W_K[rows], scale_dim=rows.stop - rows.start)
        matrices.append(torch.softmax(S, dim=-1))
    return matrices


def attention(X: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor, W_O: Tensor, heads: int = 1) -> Tensor:
    """Return F = sum_h softmax(S_h) X W_V^h W_O^h, which is Eq. (1) for heads = 1 (n x d)."""
    d = X.shape[1]
    F = torch.zeros(X.shape[0], W_O.shape[1], dtype=X.dtype)
    for rows in head_slices(d, heads):
        S = logits(X, W_Q[rows], W_K[rows], scale_dim=rows.stop - rows.start)
        A = torch.softmax(S, dim=-1)
        F = F + A @ X @ W_V[:, rows] @ W_O[rows, :]
    return F


def row_margins(S: Tensor) -> Tensor:
    """Return the logit margin gamma_i = max_j S_ij - (second largest S_ij) of every row.

    Conventions: a tie for the row maximum gives gamma_i = 0, because the second
    largest value then equals the maximum. A row with a single entry (n = 1) has
    no competitor and gets gamma_i = +inf; every bound that uses gamma multiplies
    exp(-gamma) by (n - 1) = 0 there, and callers must treat that product as 0.
    """
    if S.shape[-1] == 1:
        return torch.full(S.shape[:-1], math.inf, dtype=S.dtype)
    top_two = torch.topk(S, k=2, dim=-1).values
    return top_two[..., 0] - top_two[..., 1]


@dataclass(frozen=True)
class MarginSummary:
    """Row margins of every head and their minimum gamma_min over rows and heads."""

    per_head: list[Tensor]
    gamma_min: float


def margins(X: Tensor, W_Q: Tensor, W_K: Tensor, heads: int = 1) -> MarginSummary:
    """Return every head's row margins gamma_i (definition under Eq. 2) and gamma_min."""
    d = X.shape[1]
    per_head = []
    for rows in head_slices(d, heads):
        S = logits(X, W_Q[rows], W_K[rows], scale_dim=rows.stop - rows.start)
        per_head.append(row_margins(S))
    gamma_min = min(float(g.min()) for g in per_head)
    return MarginSummary(per_head=per_head, gamma_min=gamma_min)
