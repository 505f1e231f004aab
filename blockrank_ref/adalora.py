"""AdaLoRA (Zhang et al., 2023): an SVD-shaped update P Lambda Q whose singular values are pruned to a budget.

Per adapted Linear (weight out x in): y = W_0 x + b + (alpha / r_0) P diag(Lambda) Q drop(x), with
P (out x r_0), Lambda (r_0 x 1), Q (r_0 x in), r_0 = init_r. The scale uses r_0 for the whole run: pruning
only zeroes entries of Lambda, it never changes r_0 (peft 0.21 adds 1e-5 to r_0, and so do we).

`RankAllocator` implements the budget: importance of each parameter entry I = |w * dL/dw|, smoothed
I_bar <- beta1 I_bar + (1 - beta1) I, uncertainty U_bar <- beta2 U_bar + (1 - beta2) |I - I_bar|, entry
score I_bar * U_bar; a triplet i of one matrix scores s(Lambda_i) + mean_j s(Q_ij) + mean_j s(P_ji).
The total budget (sum of kept ranks over all matrices) falls cubically from r_0 * n to target_r * n
between steps tinit and total_step - tfinal; every deltaT steps the lowest-scoring triplets are masked
(Lambda_i = 0). These follow the AdaLoRA paper's Eqs. 6-9 and peft 0.21's RankAllocator, one
convention each: the triplet score averages P and Q (the paper's Eq. 10 does as well), and masked
entries stay trainable and may regrow until the final phase, where the final mask is re-applied
every step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


class SVDLinear(nn.Module):
    """A frozen nn.Linear (`base_layer`) plus the AdaLoRA update (alpha / r_0) P diag(Lambda) Q."""

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float, dropout: float = 0.0,
                 zero_init: bool = True) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise ValueError(f"base_layer must be an nn.Linear, got {type(base_layer).__name__}")
        if r < 1:
            raise ValueError(f"initial rank r must be a positive integer, got {r}")
        self.base_layer = base_layer.requires_grad_(False)
        self.r = r
        self.alpha = alpha
        # peft: scaling = alpha if alpha > 0 else r, divided by (r_0 + 1e-5) in every forward.
        self.scaling = (alpha if alpha > 0 else float(r)) / (r + 1e-5)
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.P = nn.Parameter(torch.randn(base_layer.out_features, r, **factory))
        self.Lambda = nn.Parameter(torch.randn(r, 1, **factory))
        self.Q = nn.Parameter(torch.randn(r, base_layer.in_features, **factory))
        if zero_init:
            # Lambda = 0 makes the update vanish at init; P and Q ~ N(0, 0.02^2) as in AdaLoRA and peft.
            nn.init.zeros_(self.Lambda)
            nn.init.normal_(self.P, std=0.02)
            nn.init.normal_(self.Q, std=0.02)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """Return (alpha / r_0) P diag(Lambda) Q, shape (out x in)."""
        return self.scaling * (self.P @ (self.Q * self.Lambda))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:
            return y
        return y + self.scaling * F.linear(F.linear(self.dropout(x), self.Q * self.Lambda), self.P)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight."""
        if self.merged:
            raise ValueError("adapter is already merged; call unmerge() first")
        self.base_layer.weight += self.delta_weight()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update from the base weight again."""
        if not self.merged:
            raise ValueError("adapter is not merged; nothing to unmerge")
        self.base_layer.weight -= self.delta_weight()
        self.merged = False

    def kept_rank(self) -> int:
        """Number of singular values not masked to zero."""
        return int((self.Lambda != 0).sum())

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, kept_rank={self.kept_rank()}"


def orthogonality_penalty(layers: Iterable[SVDLinear]) -> torch.Tensor:
    """Return R = mean over matrices of ||Q Q^T - I||_F and ||P^T P - I||_F (AdaLoRA Eq. 4).

    peft 0.21 also averages over the 2n matrices (P and Q of n layers). It adds orth_reg_weight * R to
    the loss only inside task-specific PeftModels whose output has a `.loss`, so callers of the
    reference adapters add the term themselves.
    """
    terms = []
    for layer in layers:
        eye = torch.eye(layer.r, dtype=layer.Q.dtype, device=layer.Q.device)
        terms.append(torch.linalg.matrix_norm(layer.Q @ layer.Q.T - eye))  # Q Q^T, (r_0 x r_0)
        terms.append(torch.linalg.matrix_norm(layer.P.T @ layer.P - eye))  # P^T P, (r_0 x r_0)
    if not terms:
        raise ValueError("orthogonality_penalty needs at least one SVDLinear layer")
    return torch.stack(terms).mean()


class RankAllocator:
    """Importance scores and the cubic budget schedule over a fixed, ordered set of SVDLinear layers.

    Call `step(t)` once per optimizer step after loss.backward() and before the gradients are zeroed,
    with t = 0, 1, ..., total_step - 1 (steps as peft counts them).
    """

    def __init__(self, layers: dict[str, SVDLinear], *, target_r: int, total_step: int, tinit: int = 0,
                 tfinal: int = 0, deltaT: int = 1, beta1: float = 0.85, beta2: float = 0.85) -> None:
        if not layers:
            raise ValueError("RankAllocator needs at least one SVDLinear layer")
        if total_step is None or total_step <= 0:
            raise ValueError(f"total_step must be a positive number of optimizer steps, got {total_step}")
        if tinit >= total_step - tfinal:
            raise ValueError(f"tinit={tinit} must be smaller than total_step - tfinal = {total_step - tfinal}, "
                             "otherwise no budgeting phase remains")
        for name, value in (("beta1", beta1), ("beta2", beta2)):
            if not 0 < value < 1:
                raise ValueError(f"{name} must lie in (0, 1), got {value}")
        self.layers = dict(sorted(layers.items()))
        self.target_r, self.total_step = target_r, total_step
        self.tinit, self.tfinal, self.deltaT = tinit, tfinal, deltaT
        self.beta1, self.beta2 = beta1, beta2
        self.init_budget = sum(layer.r for layer in self.layers.values())
        self.target_budget = target_r * len(self.layers)
        self.final_mask: dict[str, torch.Tensor] | None = None
        self.reset_importance()

    def reset_importance(self) -> None:
        self.I_bar: dict[tuple[str, str], torch.Tensor] = {}
        self.U_bar: dict[tuple[str, str], torch.Tensor] = {}

    def budget(self, t: int) -> tuple[int, bool]:
        """Return (total kept rank allowed at step t, whether to mask at t)."""
        if t <= self.tinit:
            return self.init_budget, False
        if t > self.total_step - self.tfinal:
            return self.target_budget, True
        progress = (t - self.tinit) / (self.total_step - self.tfinal - self.tinit)
        budget = int((self.init_budget - self.target_budget) * (1 - progress) ** 3 + self.target_budget)
        return budget, t % self.deltaT == 0

    @torch.no_grad()
    def update_importance(self) -> None:
        """Update the smoothed sensitivity I_bar and uncertainty U_bar from the current gradients."""
        for name, layer in self.layers.items():
            for symbol in ("P", "Lambda", "Q"):
                weight = getattr(layer, symbol)
                if weight.grad is None:
                    raise ValueError(f"{name}.{symbol} has no gradient; call step() after loss.backward() "
                                     "and before zero_grad()")
                sensitivity = (weight * weight.grad).abs()
                key = (name, symbol)
                I_bar = self.I_bar.get(key, torch.zeros_like(weight))
                U_bar = self.U_bar.get(key, torch.zeros_like(weight))
                I_bar = self.beta1 * I_bar + (1 - self.beta1) * sensitivity
                # The uncertainty uses the already-updated I_bar, as peft does.
                self.U_bar[key] = self.beta2 * U_bar + (1 - self.beta2) * (sensitivity - I_bar).abs()
                self.I_bar[key] = I_bar

    def triplet_scores(self) -> dict[str, torch.Tensor]:
        """Return, per layer, the score of each of its r_0 triplets (P_:i, Lambda_i, Q_i:)."""
        scores = {}
        for name in self.layers:
            score = {s: self.I_bar[(name, s)] * self.U_bar[(name, s)] for s in ("P", "Lambda", "Q")}
            scores[name] = score["Lambda"].view(-1) + score["Q"].mean(dim=1) + score["P"].mean(dim=0)
        return scores

    @torch.no_grad()
    def mask_to_budget(self, budget: int) -> dict[str, torch.Tensor]:
        """Zero every Lambda_i whose triplet score is at or below the (init - budget)-th smallest score."""
        scores = self.triplet_scores()
        all_scores = torch.cat(list(scores.values()))
        masked_count = self.init_budget - budget
        keep = {}
        for name, layer in self.layers.items():
            if masked_count <= 0:
                keep[name] = torch.ones_like(scores[name], dtype=torch.bool)
                continue
            threshold = torch.kthvalue(all_scores, masked_count).values
            keep[name] = scores[name] > threshold
            layer.Lambda.masked_fill_(~keep[name].view(-1, 1), 0.0)
        return keep

    @torch.no_grad()
    def step(self, t: int) -> dict[str, torch.Tensor] | None:
        """Run the allocator for optimizer step t; return the keep-mask per layer when it masked."""
        final_step = self.total_step - self.tfinal
        if t < final_step:
            self.update_importance()
            budget, mask_now = self.budget(t)
            return self.mask_to_budget(budget) if mask_now else None
        if t == final_step:
            # As in peft, the final allocation reuses the scores of step t - 1 (no update at t).
            self.final_mask = self.mask_to_budget(self.target_budget)
            self.reset_importance()
            return self.final_mask
        if self.final_mask is None:
            raise ValueError(f"step {t} lies after the final allocation at step {final_step}, which never ran")
        for name, layer in self.layers.items():
            layer.Lambda.masked_fill_(~self.final_mask[name].view(-1, 1), 0.0)
        return self.final_mask
