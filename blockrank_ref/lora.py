"""LoRA on one nn.Linear: y = W_0 x + b + s B A drop(x), s = alpha / r (Hu et al., 2022).

Convention. torch stores a Linear weight as W (out x in) and computes x W^T. Here A is (r x in) and
B is (out x r), so the update is Delta W = s B A (out x in), the same shapes as peft's lora_A / lora_B.
The paper writes layers the other way round (x W_b with W_b in R^{d_in x d_out}) and its update as
Delta W_b = A_b B_b^T with A_b in R^{d_in x r}, B_b in R^{d_out x r}. Transposing, A = A_b^T and B = B_b:
the roles are the same, only A is stored transposed. (The paper's W_Q and W_K are themselves torch
weights, its W_V and W_O are transposes, but the LoRA factorisation above holds for every block.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    """A frozen nn.Linear (`base_layer`) plus the trainable low-rank update s B A.

    zero_init=True starts with B = 0 (so the layer equals the base layer) and A ~ U(-1/sqrt(in),
    1/sqrt(in)), as peft's default; zero_init=False also draws B that way, as peft's
    init_lora_weights=False, which numeric cross-checks need because B = 0 hides most bugs.
    """

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float, dropout: float = 0.0,
                 zero_init: bool = True) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise ValueError(f"base_layer must be an nn.Linear, got {type(base_layer).__name__}")
        if r < 1:
            raise ValueError(f"rank r must be a positive integer, got {r}")
        self.base_layer = base_layer.requires_grad_(False)
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / r
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.A = nn.Parameter(torch.empty(r, base_layer.in_features, **factory))
        self.B = nn.Parameter(torch.empty(base_layer.out_features, r, **factory))
        # kaiming_uniform_ with a = sqrt(5) is nn.Linear's default init, the one LoRA and peft use for A.
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        if zero_init:
            nn.init.zeros_(self.B)
        else:
            nn.init.kaiming_uniform_(self.B, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """Return s B A, shape (out x in)."""
        return self.scaling * (self.B @ self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:
            return y
        # Two thin matmuls, never the (out x in) product: cost r (in + out) per token. The scale is applied
        # to the r-wide intermediate, and the sum is formed in y's buffer (Linear's backward never reads y).
        h = F.linear(self.dropout(x), self.A) * self.scaling  # (..., r)
        return y.add_(F.linear(h, self.B))

    @torch.no_grad()
    def merge(self) -> None:
        """Fold s B A into the base weight; forward then costs as much as the base layer."""
        if self.merged:
            raise ValueError("adapter is already merged; call unmerge() first")
        self.base_layer.weight += self.delta_weight()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract s B A from the base weight again (exact up to floating-point rounding)."""
        if not self.merged:
            raise ValueError("adapter is not merged; nothing to unmerge")
        self.base_layer.weight -= self.delta_weight()
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"
