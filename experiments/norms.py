"""Per-layer spectral and Frobenius norms of the attention blocks W_Q, W_K, W_V, W_O.

Eq. 1 of "LoRA in the right place" writes F = softmax(X W_Q^T W_K X^T / sqrt(d)) X W_V W_O, so its W_Q and W_K are the
torch Linear weights and its W_V and W_O their transposes. Both norms are invariant under
transposition, so the numbers below are the paper's ||W_b||_2 and ||W_b||_F whichever layout is read.
Biases are not part of W_b and are ignored.

Grouped-query attention (LLaMA 3, num_key_value_heads < num_attention_heads): k_proj and v_proj are
narrower than q_proj. In Eq. 1 every query head uses the key/value head of its group, so the effective
W_K and W_V repeat each key/value head g = heads / kv_heads times. Repeating rows g times multiplies
W^T W by g, hence both norms by sqrt(g) exactly. `expand_kv=True` (the default) reports these
effective norms, which is what Theorem 3's bounds and the V-versus-O comparison need; `expand_kv=False`
reports the norms of the stored k_proj / v_proj weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import scipy.linalg
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from experiments.targeting import BLOCKS, block_weight, find_attention_layers, kv_groups


@dataclass(frozen=True)
class LayerNorms:
    """Norms of one attention layer's blocks, keyed by block letter."""

    index: int
    name: str
    spectral: dict[str, float]
    frobenius: dict[str, float]
    kv_groups: int
    shapes: dict[str, tuple[int, int]]  # torch layout (out, in) of the stored weight


def spectral_norm(weight: torch.Tensor) -> float:
    """Return ||W||_2, the largest singular value, computed in float64.

    It takes the largest eigenvalue of the Gram matrix of the smaller side (k x k, k = min(out, in))
    with LAPACK's dsyevr restricted to that one eigenvalue (scipy), several times cheaper than a full
    SVD for the 4096 x 4096 blocks of LLaMA.
    """
    W = weight.detach().to(device="cpu", dtype=torch.float64).numpy()
    # The tridiagonal reduction gains little from BLAS threads and, on a loaded machine, spinning
    # OpenBLAS threads made it ten times slower (2048 x 2048: 12.5 s with 2 threads, 1.2 s with 1).
    with threadpool_limits(limits=1, user_api="blas"):
        gram = W @ W.T if W.shape[0] <= W.shape[1] else W.T @ W  # (k, k)
        k = gram.shape[0]
        largest = scipy.linalg.eigvalsh(gram, subset_by_index=[k - 1, k - 1], driver="evr")[0]
    return math.sqrt(max(float(largest), 0.0))


def frobenius_norm(weight: torch.Tensor) -> float:
    """Return ||W||_F computed in float64."""
    return float(torch.linalg.vector_norm(weight.detach().to(torch.float64)))


def attention_norms(model: nn.Module, *, expand_kv: bool = True) -> list[LayerNorms]:
    """Compute spectral and Frobenius norms of Q, K, V and O in every attention layer of `model`.

    Works on timm ViT (fused or split qkv), BERT-style and LLaMA-style models, with or without
    adapters attached (adapters are ignored: the base weights are read). Raises ValueError for an
    unknown architecture, naming the attention module types found.
    """
    rows = []
    for index, layer in enumerate(find_attention_layers(model)):
        groups = kv_groups(layer)
        spectral, frobenius, shapes = {}, {}, {}
        for letter in BLOCKS:
            weight = block_weight(model, layer, letter)
            factor = math.sqrt(groups) if expand_kv and letter in "KV" else 1.0
            spectral[letter] = factor * spectral_norm(weight)
            frobenius[letter] = factor * frobenius_norm(weight)
            shapes[letter] = tuple(weight.shape)
        rows.append(LayerNorms(index, layer.name, spectral, frobenius, groups, shapes))
    return rows
