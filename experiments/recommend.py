"""Recommend which attention blocks to tune, per layer, from the norms of W_V and W_O.

The rule follows the block ranking of "LoRA in the right place" (section 3.2, TL;DR): in attention layers whose projection norms are comparable
the sensitivity order is W_O >= W_V >> W_Q ~ W_K, and when W_O and W_V differ markedly one should tune
the smaller-norm matrix; with two blocks, tune O and V together. Concretely, with rho = ||W_V|| / ||W_O||
and a threshold tau > 1:

    one block:   V if 1 / rho >= tau (O markedly larger), else O  (O also wins when V is markedly larger)
    two blocks:  O and V in every layer

Q and K are never recommended: their first-order effect is damped by the softmax Jacobian (Theorem 3).
The paper does not quantify "differ markedly"; tau defaults to 2.0 as our choice. For reference, its
controlled "Large O" / "Large V" runs scale one block by 3 and the other by 1/3 (a ratio change of 9),
and it calls the pretrained ViT-B/16 norms of O and V "comparable".
"""

from __future__ import annotations

import logging
import os
import pathlib
from dataclasses import asdict, dataclass

from torch import nn

from experiments.norms import LayerNorms, attention_norms
from experiments.targeting import find_attention_layers

logger = logging.getLogger(__name__)

DEFAULT_RATIO_THRESHOLD = 2.0
NORMS = ("spectral", "frobenius")


@dataclass(frozen=True)
class LayerChoice:
    """The blocks recommended for one attention layer and why."""

    index: int
    name: str
    blocks: str
    ratio_v_to_o: float
    reason: str


@dataclass(frozen=True)
class Recommendation:
    """Per-layer choices, the norms behind them and a peft `target_modules` value."""

    rule: str
    norm: str
    ratio_threshold: float
    layers: list[LayerChoice]
    norms: list[LayerNorms]
    target_modules: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def choose_blocks(norms: LayerNorms, *, blocks: int = 1, norm: str = "spectral",
                  ratio_threshold: float = DEFAULT_RATIO_THRESHOLD) -> LayerChoice:
    """Apply the rule in this module's docstring to one layer."""
    values = norms.spectral if norm == "spectral" else norms.frobenius
    symbol = "||.||_2" if norm == "spectral" else "||.||_F"
    ratio = values["V"] / values["O"]
    if blocks == 2:
        reason = (f"two blocks: O and V avoid the softmax damping of Q and K "
                  f"(V/O {symbol} ratio {ratio:.2f})")
        return LayerChoice(norms.index, norms.name, "OV", ratio, reason)
    if 1.0 / ratio >= ratio_threshold:
        reason = f"O is markedly larger (O/V {symbol} ratio {1 / ratio:.2f} >= {ratio_threshold:g}): tune the smaller V"
        return LayerChoice(norms.index, norms.name, "V", ratio, reason)
    if ratio >= ratio_threshold:
        reason = f"V is markedly larger (V/O {symbol} ratio {ratio:.2f} >= {ratio_threshold:g}): tune the smaller O"
    else:
        reason = (f"O and V comparable (V/O {symbol} ratio {ratio:.2f} within {ratio_threshold:g}x): "
                  "O ranks first")
    return LayerChoice(norms.index, norms.name, "O", ratio, reason)


def recommend(model: nn.Module, *, blocks: int = 1, norm: str = "spectral",
              ratio_threshold: float = DEFAULT_RATIO_THRESHOLD, expand_kv: bool = True) -> Recommendation:
    """Recommend blocks for every attention layer of a timm ViT, BERT-style or LLaMA-style model."""
    if blocks not in (1, 2):
        raise ValueError(f"blocks must be 1 or 2, got {blocks!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if not ratio_threshold > 1.0:
        raise ValueError(f"ratio_threshold must be greater than 1 (a ratio of norms), got {ratio_threshold!r}")
    layer_norms = attention_norms(model, expand_kv=expand_kv)
    choices = [choose_blocks(n, blocks=blocks, norm=norm, ratio_threshold=ratio_threshold) for n in layer_norms]
    rule = (f"{'one block' if blocks == 1 else 'two blocks'}; {norm} norm; 'differ markedly' means a "
            f"V/O or O/V ratio >= {ratio_threshold:g}")
    return Recommendation(rule, norm, ratio_threshold, choices, layer_norms, target_modules(model, choices))


def target_modules(model: nn.Module, choices: list[LayerChoice]) -> list[str]:
    """Return a peft `target_modules` list that wraps exactly the chosen blocks.

    peft matches a list entry when a module name equals it or ends with "." + entry. When every layer
    chooses the same blocks the entries are the block suffixes (e.g. "attention.output.dense");
    otherwise they are full module names of `model`, which also match inside a model that wraps it
    (e.g. "encoder.layer.3..." inside "bert.encoder.layer.3..."). timm Q, K or V entries name the split
    layers, so call experiments.targeting.split_fused_qkv(model) before peft.get_peft_model.
    """
    layers = dict(enumerate(find_attention_layers(model)))
    names = []
    for choice in choices:
        layer = layers[choice.index]
        for letter in choice.blocks:
            name = layer.modules[letter]
            if layer.fused_qkv and letter in "QKV":
                name = f"{name}.{letter.lower()}"
            names.append(name)
    if len({choice.blocks for choice in choices}) > 1:
        return names
    # Uniform choice: keep the attention module's own last name segment in front of each block suffix,
    # because a bare "dense" or "proj" would also catch MLP or patch-embedding layers.
    first = layers[choices[0].index]
    parent, _, leaf = first.name.rpartition(".")
    strip = len(parent) + 1 if parent else 0
    return [name[strip:] for name in names[:len(choices[0].blocks)]]


def load_model(spec: str, checkpoint: str | None = None) -> nn.Module:
    """Load a local Hugging Face folder (any AutoModel) or a timm model name with optional local weights.

    Raises ValueError with the path or name that failed. Nothing is downloaded when HF_HUB_OFFLINE=1.
    """
    path = pathlib.Path(spec)
    if path.is_dir():
        if checkpoint is not None:
            raise ValueError("--checkpoint applies to timm model names; a Hugging Face folder carries its weights")
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is a folder without config.json, so it is not a Hugging Face model folder")
        import transformers

        transformers.utils.logging.disable_progress_bar()  # one table on stdout, no loading bar
        try:
            return transformers.AutoModel.from_pretrained(path, dtype="auto")
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"could not load the Hugging Face model in {path}: {error}") from error
    if path.is_file():
        raise ValueError(f"{spec} is a file; MODEL must be a Hugging Face model folder or a timm model name "
                         "(pass timm weights with --checkpoint FILE)")
    if os.sep in spec or spec.startswith("."):
        raise ValueError(f"model folder {spec} not found")
    import timm

    if not timm.is_model(spec):
        raise ValueError(f"{spec!r} is neither a local folder nor a timm model name "
                         "(see timm.list_models() for names)")
    if checkpoint is not None:
        if not pathlib.Path(checkpoint).is_file():
            raise ValueError(f"checkpoint file {checkpoint} not found")
        return _timm_with_checkpoint(timm, spec, checkpoint)
    try:
        return timm.create_model(spec, pretrained=True)
    except Exception as error:  # timm raises hub, network and file errors of many types here
        raise ValueError(f"could not load pretrained weights for timm model {spec!r} ({type(error).__name__}: "
                         f"{error}); without network access pass --checkpoint FILE") from error


def _timm_with_checkpoint(timm, spec: str, checkpoint: str) -> nn.Module:
    # The classifier is irrelevant to the attention norms and often has a task-specific size, so the
    # model is built without one and every other weight must load.
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as error:
        raise ValueError(f"could not read checkpoint {checkpoint}: {error}") from error
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    model = timm.create_model(spec, pretrained=False, num_classes=0)
    state = {key.removeprefix("module."): value for key, value in state.items() if not key.startswith("head.")}
    try:
        missing, _ = model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise ValueError(f"checkpoint {checkpoint} does not fit timm model {spec}: {error}") from error
    if missing:
        raise ValueError(f"checkpoint {checkpoint} lacks {len(missing)} weights of timm model {spec}, "
                         f"e.g. {missing[:3]}; is it a checkpoint of this model?")
    return model
