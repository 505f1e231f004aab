"""Hypothesis strategies for attention inputs (float64, small sizes so exact norms are cheap)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

# Multiples of 1/1000 in [-1, 1]: no subnormal entries, whose squares would
# underflow and make a non-zero matrix report a zero norm.
UNIT = st.integers(-1000, 1000).map(lambda k: k / 1000.0)
# Weight scales from 0.1 to 30 reach both flat softmax (small logits) and
# sharp softmax (logits of several hundred, margins far beyond e^{-gamma} ~ eps).
LOG10_SCALE = st.floats(-1.0, 1.5, allow_nan=False)


@dataclass(frozen=True)
class AttentionCase:
    """One input of Eq. (1), with how it was drawn (shown in counterexamples)."""

    X: torch.Tensor
    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    heads: int
    unit_rows: bool
    tied_rows: bool

    @property
    def weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.W_Q, self.W_K, self.W_V, self.W_O

    def describe(self) -> dict:
        return {"n": self.X.shape[0], "d": self.X.shape[1], "heads": self.heads, "unit_rows": self.unit_rows,
                "tied_rows": self.tied_rows, "X": self.X.tolist(), "W_Q": self.W_Q.tolist(),
                "W_K": self.W_K.tolist(), "W_V": self.W_V.tolist(), "W_O": self.W_O.tolist()}


def _normalise_rows(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    X = np.where(norms > 1e-12, X / np.where(norms > 1e-12, norms, 1.0), 0.0)
    X[np.linalg.norm(X, axis=1) == 0.0, 0] = 1.0  # a zero row becomes e_1, still unit norm
    return X


@st.composite
def attention_cases(draw, max_n: int = 6, max_d: int = 6, multihead: bool = False) -> AttentionCase:
    """Draw X (n x d) and four d x d weights; rows unit-norm or not, sometimes with tied rows.

    Tied rows (a token repeated) make two logit columns equal, so a row whose
    maximum sits there has margin gamma = 0.
    """
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(2 if multihead else 1, max_d))
    if multihead:
        heads = draw(st.sampled_from([h for h in range(2, d + 1) if d % h == 0]))
    else:
        heads = 1
    X = draw(arrays(np.float64, (n, d), elements=UNIT))
    tied_rows = n >= 2 and draw(st.booleans())
    if tied_rows:
        X[1] = X[0]
    unit_rows = draw(st.booleans())
    if unit_rows:
        X = _normalise_rows(X)
    else:
        X = X * 10.0 ** draw(st.floats(-1.0, 1.0))
    weights = []
    for _ in range(4):
        W = draw(arrays(np.float64, (d, d), elements=UNIT))
        weights.append(torch.from_numpy(W * 10.0 ** draw(LOG10_SCALE)))
    return AttentionCase(torch.from_numpy(X), *weights, heads=heads, unit_rows=unit_rows, tied_rows=tied_rows)
