"""Build the model of one run: backbone, optional norm modification, block adapters.

Also the per-layer norms of the *effective* weights, which Figure 3(c) and the
switching rule of Figure 1(c) compare, and saving / restoring the adapters
together with the trained classification head.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from experiments.norms import frobenius_norm, spectral_norm
from experiments.targeting import (BLOCKS, apply_block_adapters, find_attention_layers,
                                   split_fused_qkv)
from experiments.vit.config import RunConfig

logger = logging.getLogger(__name__)

HEAD = "head"


def modify_norms(model: nn.Module, modification: str, factor: float, probe: torch.Tensor | None = None) -> None:
    """Rescale W_V and W_O in every layer without changing the model's function (Figure 1).

    'large_o' multiplies W_O by `factor` and divides W_V (and the V bias, which is
    added before W_O) by it; 'large_v' does the opposite. Because the attention
    output is softmax(S) (X W_V + 1 b_V^T) W_O + 1 b_O^T, the product and hence the
    model output are unchanged. With `probe` images, this is checked on them.
    """
    if modification == "none":
        return
    scale_o = {"large_o": factor, "large_v": 1.0 / factor}[modification]
    split_fused_qkv(model)
    before = None
    if probe is not None:
        model.eval()
        with torch.no_grad():
            before = model(probe)
    for layer in find_attention_layers(model):
        value, output = model.get_submodule(layer.modules["V"]), model.get_submodule(layer.modules["O"])
        with torch.no_grad():
            value.weight.div_(scale_o)
            if value.bias is not None:
                value.bias.div_(scale_o)
            output.weight.mul_(scale_o)
    if before is not None:
        with torch.no_grad():
            after = model(probe)
        scale = before.abs().max().clamp_min(1.0)
        error = float((after - before).abs().max() / scale)
        assert error < 1e-4, f"the {modification} rescaling changed the logits by {error:.2e} (relative)"


def attach_adapters(model: nn.Module, config: RunConfig, blocks: str, total_steps: int):
    """Wrap `blocks` of every attention layer with the run's method; return (model, report)."""
    kwargs = {}
    if config.method == "adalora":
        # Our AdaLoRA schedule, because the paper states none: keep the full budget for
        # the first 10 % of steps, prune towards `rank` until the last 20 %, then hold
        # the final mask. Budgets are re-allocated every 10 steps.
        kwargs = dict(total_step=total_steps, tinit=int(0.1 * total_steps), tfinal=int(0.2 * total_steps),
                      deltaT=10, orth_reg_weight=config.adalora_orth_reg, init_r=config.effective_adalora_init_r)
    model, report = apply_block_adapters(model, method=config.method, blocks=blocks, rank=config.rank,
                                         alpha=config.effective_alpha, dropout=config.dropout, head=HEAD,
                                         **kwargs)
    counts = {letter: len(names) for letter, names in report.wrapped_modules.items()}
    logger.info("adapters: %s %s r=%d wrapped %s; trainable %d (expected %d, head %d)", config.method, blocks,
                config.rank, counts, report.trainable_params, report.expected_params, report.head_params)
    logger.debug("wrapped modules: %s", report.wrapped_modules)
    return model, report


def adalora_orthogonal_penalty(model: nn.Module) -> torch.Tensor:
    """Return AdaLoRA's orthogonality regulariser mean ||P P^T - I||_F over all lora_A and lora_B.

    peft adds it inside `AdaLoraModel.forward` only when the output has a `.loss`,
    which timm's logits tensor does not, so the runner adds it to the loss itself,
    with the same definition (A: A A^T, B: B^T B) and `orth_reg_weight`.
    """
    penalties = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad or ("lora_A" not in name and "lora_B" not in name):
            continue
        gram = parameter @ parameter.T if "lora_A" in name else parameter.T @ parameter  # (r, r)
        identity = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        penalties.append(torch.linalg.matrix_norm(gram - identity))
    assert penalties, "AdaLoRA model has no trainable lora_A / lora_B parameters"
    return torch.stack(penalties).mean()


def _unwrap(model: nn.Module) -> nn.Module:
    # A peft PeftModel keeps the timm model under base_model.model.
    return model.base_model.model if hasattr(model, "peft_config") else model


def attention_layers(model: nn.Module) -> list:
    """Return the attention layers of a plain (not yet adapted) timm model, with Q, K, V split."""
    split_fused_qkv(model)
    return find_attention_layers(model)


@torch.no_grad()
def effective_block_norms(model: nn.Module, layers: list) -> dict[str, dict[str, list[float]]]:
    """Return {block: {"spectral": [per layer], "frobenius": [per layer]}} of the effective weights.

    The effective weight of an adapted Linear is the one its forward applies
    (W + s B A for LoRA, the magnitude-rescaled one for DoRA, W + B (E * A) s for
    AdaLoRA). It is read off as f(I) - f(0) with the adapter in eval mode, which is
    exact for any adapter that is linear in its input, and leaves the model untouched.
    `layers` comes from `attention_layers` before the adapters were attached, because
    `find_attention_layers` does not recognise a layer whose `proj` is already wrapped.
    """
    inner = _unwrap(model)
    training = model.training
    model.eval()
    norms = {letter: {"spectral": [], "frobenius": []} for letter in BLOCKS}
    try:
        for layer in layers:
            for letter in BLOCKS:
                module = inner.get_submodule(layer.modules[letter])
                base = module
                while not isinstance(base, nn.Linear):
                    base = base.base_layer
                identity = torch.eye(base.in_features, dtype=base.weight.dtype, device=base.weight.device)
                zero = torch.zeros(1, base.in_features, dtype=base.weight.dtype, device=base.weight.device)
                weight = (module(identity) - module(zero)).T  # (out, in), torch layout
                norms[letter]["spectral"].append(spectral_norm(weight))
                norms[letter]["frobenius"].append(frobenius_norm(weight))
    finally:
        model.train(training)
    return norms


def merge_adapters(model: nn.Module) -> nn.Module:
    """Merge the adapters into the base weights and return the plain model with its trained head."""
    if not hasattr(model, "merge_and_unload"):
        raise ValueError(f"expected a peft model to merge, got {type(model).__name__}")
    merged = model.merge_and_unload()
    assert isinstance(merged.get_submodule(HEAD), nn.Linear), "the trained head did not survive merging"
    return merged


def save_adapters(model: nn.Module, directory: Path) -> Path:
    """Save adapter weights and the trained head (peft `modules_to_save`) to `directory`."""
    model.save_pretrained(str(directory))
    return Path(directory)


def load_adapters(model: nn.Module, directory: Path) -> nn.Module:
    """Return `model` (a freshly built backbone of the same run) with saved adapters and head restored."""
    from peft import PeftModel

    split_fused_qkv(model)
    restored = PeftModel.from_pretrained(model, str(directory))
    restored.eval()
    return restored
