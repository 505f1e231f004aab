"""One ViT fine-tuning run, as a flat, hashable, validated config.

Every field that can change a result is in `RunConfig`, so the result file's
name (a hash of `RunConfig.to_dict()`) changes whenever the run would.

Protocol (appendix D and Table 6 of the paper): AdamW, lr 1e-3, weight decay
0.1, learning rate multiplied by 0.9 after every epoch. Epochs: the appendix
text says 20 for every ViT run, while Table 6 lists 50 for the MAE backbone
(LoRA, AdaLoRA, DoRA) and 20 for the supervised ImageNet-21k one. We default to
Table 6 because it is the more specific statement (one row per backbone and
method) and MAE features are known to need longer adaptation than supervised
ones (MAE's linear-probe accuracy is far below its fine-tuning accuracy).
`--epochs` overrides it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

METHODS = ("lora", "dora", "adalora")
BLOCK_LETTERS = "QKVO"
MODIFICATIONS = ("none", "large_o", "large_v")
PROFILES = ("paper_scale", "cpu_profile")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run's result."""

    experiment: str
    backbone: str
    dataset: str
    method: str
    blocks: str
    rank: int
    seed: int
    epochs: int
    profile: str = "paper_scale"
    # timm model name replacing the backbone's default checkpoint (e.g. "vit_base_patch16_224.augreg_in21k"
    # to compare with AugReg); empty keeps the default of `backbones.PAPER_BACKBONES`.
    checkpoint: str = ""
    lr: float = 1e-3
    weight_decay: float = 0.1
    lr_decay: float = 0.9
    batch_size: int = 128
    image_size: int = 224
    # LoRA scaling alpha / r. peft's default alpha is 8 whatever the rank; the paper does
    # not state alpha, so alpha = rank (scaling 1) keeps the update size rank-independent.
    alpha: float | None = None
    dropout: float = 0.0
    # Figure 1: function-preserving rescaling of W_V and W_O before tuning.
    modification: str = "none"
    modification_factor: float = 3.0
    # Figure 1(c): after `switch_epoch` epochs, merge the adapters into the weights and
    # continue with fresh adapters on `switch_blocks`. Empty means no switch.
    switch_blocks: str = ""
    switch_epoch: int = 0
    # AdaLoRA only (ignored otherwise): start at `adalora_init_r` per matrix (0: round(1.5 rank))
    # and prune to `rank`; orthogonality regulariser weight as in the AdaLoRA repository's examples.
    adalora_init_r: int = 0
    adalora_orth_reg: float = 0.1

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a plain JSON-ready dict (the result file's `config`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown RunConfig fields {unknown}; valid fields are {sorted(known)}")
        return cls(**values)

    @property
    def effective_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    @property
    def effective_adalora_init_r(self) -> int:
        # The paper does not give AdaLoRA's initial budget; the default starts 1.5x above
        # the target rank, peft's default ratio init_r / target_r = 12 / 8.
        return self.adalora_init_r or max(self.rank, round(1.5 * self.rank))


def _check_blocks(name: str, blocks: str, allow_empty: bool = False) -> None:
    if not blocks and allow_empty:
        return
    if not blocks or any(letter not in BLOCK_LETTERS for letter in blocks) or len(set(blocks)) != len(blocks):
        raise ValueError(
            f"invalid {name} {blocks!r}: use distinct letters from 'QKVO', for example 'O', 'V' or 'OV'"
        )


def validate(config: RunConfig) -> None:
    """Raise ValueError naming the field, its value and the fix for any invalid setting."""
    if config.method not in METHODS:
        raise ValueError(f"invalid method {config.method!r}: choose one of {METHODS}")
    _check_blocks("blocks", config.blocks)
    _check_blocks("switch_blocks", config.switch_blocks, allow_empty=True)
    if config.profile not in PROFILES:
        raise ValueError(f"invalid profile {config.profile!r}: choose one of {PROFILES}")
    if config.modification not in MODIFICATIONS:
        raise ValueError(f"invalid modification {config.modification!r}: choose one of {MODIFICATIONS}")
    positive_ints = {"rank": config.rank, "epochs": config.epochs, "batch_size": config.batch_size,
                     "image_size": config.image_size}
    for name, value in positive_ints.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"invalid {name} {value!r}: must be a positive integer")
    if not isinstance(config.seed, int) or config.seed < 0:
        raise ValueError(f"invalid seed {config.seed!r}: must be a non-negative integer")
    reals = {"lr": config.lr, "weight_decay": config.weight_decay, "lr_decay": config.lr_decay,
             "dropout": config.dropout, "modification_factor": config.modification_factor}
    for name, value in reals.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"invalid {name} {value!r}: must be a finite number")
    if config.lr <= 0 or not 0 < config.lr_decay <= 1 or config.weight_decay < 0:
        raise ValueError(
            f"invalid optimiser setting lr={config.lr}, lr_decay={config.lr_decay}, "
            f"weight_decay={config.weight_decay}: need lr > 0, 0 < lr_decay <= 1, weight_decay >= 0"
        )
    if not 0 <= config.dropout < 1:
        raise ValueError(f"invalid dropout {config.dropout}: must be in [0, 1)")
    if config.modification_factor <= 0:
        raise ValueError(f"invalid modification_factor {config.modification_factor}: must be > 0")
    if config.switch_blocks and not 0 < config.switch_epoch < config.epochs:
        raise ValueError(
            f"invalid switch_epoch {config.switch_epoch} for epochs={config.epochs}: "
            "a switch needs 0 < switch_epoch < epochs"
        )
    if config.switch_blocks and config.method == "adalora":
        raise ValueError("switch_blocks is not supported with method 'adalora': use 'lora' or 'dora'")
    if config.alpha is not None and config.alpha <= 0:
        raise ValueError(f"invalid alpha {config.alpha}: must be > 0, or None for alpha = rank")
    if config.method == "adalora" and config.effective_adalora_init_r < config.rank:
        raise ValueError(
            f"invalid adalora_init_r {config.adalora_init_r}: must be >= rank {config.rank} "
            "(AdaLoRA only prunes)"
        )
