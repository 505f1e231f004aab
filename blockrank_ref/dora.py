"""DoRA on one nn.Linear: W' = m * (W_0 + s B A) / ||W_0 + s B A|| (Liu et al., 2024, Eq. 5).

The norm is the L2 norm of each output row (over the `in` dimension, torch.linalg.norm(..., dim=1)),
giving one magnitude per output feature, as in peft 0.21. m starts at that norm, so the layer equals
its base layer at init whatever B is. The bias is added after the rescaling and is not rescaled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blockrank_ref.lora import LoRALinear


class DoRALinear(LoRALinear):
    """LoRALinear plus a trainable magnitude m (out,) that rescales each output row of W_0 + s B A."""

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float, dropout: float = 0.0,
                 zero_init: bool = True) -> None:
        super().__init__(base_layer, r, alpha, dropout, zero_init)
        with torch.no_grad():
            self.m = nn.Parameter(self.weight_norm())
        self._merged_norm: torch.Tensor | None = None

    def weight_norm(self) -> torch.Tensor:
        """Return ||W_0 + s B A|| per output row, shape (out,), detached from the graph.

        DoRA section 4.3 treats this norm as a constant in backpropagation: the gradient of m / ||.||
        then reaches B A only through the numerator, which saves memory and, per the DoRA paper,
        changes accuracy negligibly. peft and the NVlabs code do the same.
        """
        with torch.no_grad():
            return torch.linalg.norm(self.base_layer.weight + self.delta_weight(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:
            return y
        g = (self.m / self.weight_norm()).view(1, -1)  # (1, out), broadcast over tokens

        # g (W_0 x + s B A x) + b, written as y + (g - 1) W_0 x + g s B A x to reuse y. With dropout
        # active, peft feeds drop(x) to both W_0 x and B A x in the correction. We do the same, so that
        # training matches peft step for step, although it is not exactly g (W_0 + s B A) drop(x) + b.
        if isinstance(self.dropout, nn.Identity) or not self.training:
            x_drop = x
            base_term = y if self.base_layer.bias is None else y - self.base_layer.bias
        else:
            x_drop = self.dropout(x)
            base_term = F.linear(x_drop, self.base_layer.weight)
        lora_term = self.scaling * F.linear(F.linear(x_drop, self.A), self.B)
        return y + (g - 1) * base_term + g * lora_term

    @torch.no_grad()
    def merge(self) -> None:
        """Replace W_0 by m / ||W_0 + s B A|| * (W_0 + s B A), remembering the norm for unmerge."""
        if self.merged:
            raise ValueError("adapter is already merged; call unmerge() first")
        self._merged_norm = self.weight_norm()
        g = (self.m / self._merged_norm).view(-1, 1)  # (out, 1)
        self.base_layer.weight.copy_(g * (self.base_layer.weight + self.delta_weight()))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore W_0 = W' ||W_0 + s B A|| / m - s B A with the norm stored at merge time."""
        if not self.merged:
            raise ValueError("adapter is not merged; nothing to unmerge")
        g = (self.m / self._merged_norm).view(-1, 1)
        self.base_layer.weight.copy_(self.base_layer.weight / g - self.delta_weight())
        self._merged_norm = None
        self.merged = False

    def extra_repr(self) -> str:
        return super().extra_repr() + ", magnitude=row-wise"
