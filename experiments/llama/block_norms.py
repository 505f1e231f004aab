"""Frobenius norms of the attention blocks of a LLaMA model, before and during fine-tuning.

The figures' panels (c) plot, per layer, the norm of each block's pretrained weight; the history
of a run also records the norm of each tuned block's effective weight W0 + dW and of the update dW
itself. Norms are transpose-invariant, so the torch layout (out x in) gives the paper's ||W_b||_F.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from experiments.norms import attention_norms


def pretrained_norms(model: nn.Module) -> dict[str, dict[str, list[float]]]:
    """Return per-layer Frobenius norms of Q, K, V and O, stored and grouped-query-expanded.

    With grouped-query attention (LLaMA 3) the stored k_proj / v_proj weights are narrower than
    q_proj. "frobenius_effective" repeats each key/value head for the query heads that share it,
    which multiplies the K and V norms by sqrt(heads / kv_heads). Without grouping both agree.
    """
    rows = attention_norms(model, expand_kv=True)
    effective = {block: [row.frobenius[block] for row in rows] for block in "QKVO"}
    stored = {block: [row.frobenius[block] / (math.sqrt(row.kv_groups) if block in "KV" else 1.0)
                      for row in rows] for block in "QKVO"}
    return {"frobenius": stored, "frobenius_effective": effective,
            "kv_groups": [row.kv_groups for row in rows]}


@torch.no_grad()
def tuned_block_norms(modules_by_block: dict[str, list[nn.Module]]) -> dict[str, dict[str, list[float]]]:
    """Return, per tuned block, the per-layer ||W0 + dW||_F ("weight") and ||dW||_F ("update").

    `modules_by_block` maps a block letter to its peft LoRA layers in layer order. dW = s B A for
    LoRA. For DoRA the effective weight is m / ||W0 + dW||_row (W0 + dW), and "update" is its
    difference from W0.
    """
    result = {}
    for block, modules in modules_by_block.items():
        weights, updates = [], []
        for module in modules:
            base = module.get_base_layer().weight.float()
            delta = module.get_delta_weight("default").float()  # (out, in) = scaling * B @ A
            effective = base + delta
            magnitude = getattr(module, "lora_magnitude_vector", {})
            if "default" in magnitude:
                row_norm = effective.norm(dim=1, keepdim=True)  # (out, 1)
                effective = magnitude["default"].weight.float().reshape(-1, 1) / row_norm * effective
            weights.append(float(torch.linalg.vector_norm(effective)))
            updates.append(float(torch.linalg.vector_norm(effective - base)))
        result[block] = {"weight": weights, "update": updates}
    return result
