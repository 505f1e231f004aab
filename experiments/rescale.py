"""Function-preserving V/O rescaling ("Large O", "Large V") and switching the tuned block by merging.

Rescaling. Per head, attention computes softmax(S) (X W_V + 1 b_V^T) W_O + b_O in the layout of
"LoRA in the right place" (Eq. 1)
(torch: v = x W_v^T + b_v, out = concat_heads(A v) W_o^T + b_o). Every row of A = softmax(S) sums to 1,
so replacing (W_V, b_V, W_O) by (W_V / s, b_V / s, s W_O) leaves the output unchanged for any s > 0.
b_V must be divided together with W_V, because A 1 b_V^T = 1 b_V^T passes through W_O; b_O must not be
touched, because it is added after W_O. The paper's "Large O" enlarges O by 3 and shrinks V by 3
(s = 3); "Large V" is s = 1/3. The identity needs nothing but a linear map between A v and W_O:
timm's optional `scale_norm` (a LayerNorm on the attention output) breaks it and is rejected.

Switching. The paper tunes V for five epochs, then O. `switch_blocks` merges the current adapters into
the base weights, removes them and attaches fresh adapters to the new blocks; with the usual B = 0
init the model computes the same function just after the switch as just before it.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from experiments.targeting import (
    TargetingReport,
    adapter_modules,
    apply_block_adapters,
    find_attention_layers,
)

logger = logging.getLogger(__name__)


def rescale_value_output(model: nn.Module, scale: float, layers: list[int] | None = None) -> int:
    """Set W_V <- W_V / s, b_V <- b_V / s, W_O <- s W_O (b_O unchanged) in the chosen layers, in place.

    s > 1 is the paper's "Large O", s < 1 "Large V". `layers` lists attention-layer indices (all when
    None). Works on timm ViT (fused or split qkv), BERT-style and LLaMA-style models without adapters.
    Returns the number of layers rescaled.
    """
    if not (isinstance(scale, (int, float)) and scale > 0 and scale != float("inf")):
        raise ValueError(f"scale must be a finite positive number, got {scale!r}")
    if adapter_modules(model):
        raise ValueError("rescale the base model before attaching adapters (found adapter modules)")
    found = find_attention_layers(model)
    chosen = range(len(found)) if layers is None else layers
    for index in chosen:
        if not 0 <= index < len(found):
            raise ValueError(f"layer index {index} out of range; the model has {len(found)} attention layers")
        layer = found[index]
        attention = model.get_submodule(layer.name)
        if not isinstance(getattr(attention, "norm", nn.Identity()), nn.Identity):
            raise ValueError(f"{layer.name} normalises the attention output before its projection "
                             "(timm scale_norm), so rescaling V and O would change the function")
        with torch.no_grad():
            _scale_value(model, layer, 1.0 / scale)
            model.get_submodule(layer.modules["O"]).weight.mul_(scale)
    logger.info("rescaled V by 1/%g and O by %g in %d layers", scale, scale, len(chosen))
    return len(chosen)


def _scale_value(model: nn.Module, layer, factor: float) -> None:
    value = model.get_submodule(layer.modules["V"])
    if layer.fused_qkv:
        # Rows [2a, 3a) of timm's fused qkv weight and bias are V (a = heads * head_dim).
        attn_dim = layer.num_heads * layer.head_dim
        rows = slice(2 * attn_dim, 3 * attn_dim)
        value.weight[rows] *= factor
        if value.bias is not None:
            value.bias[rows] *= factor
        return
    value.weight.mul_(factor)
    if value.bias is not None:
        value.bias.mul_(factor)


def large_o(model: nn.Module, factor: float = 3.0) -> int:
    """Apply "Large O" (section 4.1.3 of the paper): O x factor, V / factor (default 3), in every layer."""
    return rescale_value_output(model, factor)


def large_v(model: nn.Module, factor: float = 3.0) -> int:
    """Apply "Large V" (section 4.1.3 of the paper): V x factor, O / factor (default 3), in every layer."""
    return rescale_value_output(model, 1.0 / factor)


def merge_and_remove_adapters(model: nn.Module) -> nn.Module:
    """Merge every adapter into its base weight and return the plain model (peft or reference backend).

    A peft `modules_to_save` head is replaced by its trained copy, as peft's merge_and_unload does.
    """
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    for name, module in adapter_modules(model).items():
        if not module.merged:
            module.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, module.base_layer)
    return model


def switch_blocks(model: nn.Module, *, blocks: str, **apply_kwargs) -> tuple[nn.Module, TargetingReport]:
    """Merge the current adapters, then attach new ones to `blocks` (e.g. "V" then "O").

    apply_kwargs go to `apply_block_adapters` (method, rank, backend, head, ...). The base weights keep
    what the first adapters learned; the new adapters start from their usual init.
    """
    merged = merge_and_remove_adapters(model)
    return apply_block_adapters(merged, blocks=blocks, **apply_kwargs)
