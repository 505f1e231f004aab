"""Backbones of the ViT experiments and strict loading of their checkpoints.

Paper scale (timm 1.0 model names, recorded in every result file):
- `mae`: `vit_base_patch16_224.mae`, the MAE self-supervised ViT-B/16
  (facebookresearch/mae `mae_pretrain_vit_base.pth`). ImageNet mean/std.
- `in21k`: `vit_base_patch16_224.orig_in21k`, the original supervised ImageNet-21k
  ViT-B/16 release (google-research/vision_transformer). Inception mean/std 0.5.
  timm's old alias `vit_base_patch16_224_in21k` now resolves to the *AugReg* weights
  (`.augreg_in21k`), a different model; AdaptFormer's `jx_..._in21k` file is the
  original release, so the exact name above is used, never the alias.
Both classify from the class token after the final LayerNorm. This is timm's
`global_pool='token'` (the default in both checkpoints' timm configs) and
AdaptFormer's `--cls_token`, and it is the class-token read-out of Theorem 5 of
"LoRA in the right place". A new trainable `nn.Linear` head (timm's default
init) follows.

CPU profile: `digits_mae` and `digits_sup`, the small ViT of `digits.py`
pretrained inside the project (`pretrain.py`).

A checkpoint loads only if it provides every backbone weight and nothing else
(the head is new): missing or unexpected keys raise `ValueError`, never a
silent `strict=False`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from experiments.vit.data import MissingInputError

logger = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Backbone:
    """One pretrained backbone: its exact checkpoint name and input normalisation."""

    key: str
    checkpoint: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hub_repo: str = ""
    # Extra keyword arguments for timm.create_model; the tests build a small ViT this way.
    model_kwargs: tuple[tuple[str, object], ...] = ()


PAPER_BACKBONES = {
    "mae": Backbone("mae", "vit_base_patch16_224.mae", IMAGENET_MEAN, IMAGENET_STD,
                    hub_repo="timm/vit_base_patch16_224.mae"),
    "in21k": Backbone("in21k", "vit_base_patch16_224.orig_in21k", INCEPTION_MEAN, INCEPTION_STD,
                      hub_repo="timm/vit_base_patch16_224.orig_in21k"),
}
CPU_BACKBONES = {
    # Digits are standardised with source-split statistics in `digits.py`, so no further normalisation.
    "digits_mae": Backbone("digits_mae", "blockrank-digits-vit-mae", (0.0,), (1.0,)),
    "digits_sup": Backbone("digits_sup", "blockrank-digits-vit-supervised", (0.0,), (1.0,)),
}


def get_backbone(key: str) -> Backbone:
    backbones = {**PAPER_BACKBONES, **CPU_BACKBONES}
    if key not in backbones:
        raise ValueError(f"invalid backbone {key!r}: choose one of {sorted(backbones)}")
    return backbones[key]


CHECKPOINT_FILES = ("model.safetensors", "pytorch_model.bin")


def checkpoint_file(backbone: Backbone, checkpoint_dir: Path, download: bool = False) -> Path:
    """Return the local checkpoint file of a paper backbone, downloading it only if `download`.

    Layout: `<checkpoint_dir>/<timm name>/model.safetensors` (what
    `huggingface-cli download <hub repo> --local-dir <checkpoint_dir>/<timm name>` writes),
    or `pytorch_model.bin` there, or a single file `<checkpoint_dir>/<timm name>.pth`
    (for example MAE's original `mae_pretrain_vit_base.pth`, renamed).
    """
    directory = Path(checkpoint_dir) / backbone.checkpoint
    candidates = [directory / name for name in CHECKPOINT_FILES]
    candidates.append(Path(checkpoint_dir) / f"{backbone.checkpoint}.pth")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if download:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(backbone.hub_repo, "model.safetensors", local_dir=directory))
    raise MissingInputError(
        f"checkpoint {backbone.checkpoint!r} not found: looked for {', '.join(map(str, candidates))}. "
        f"Run `huggingface-cli download {backbone.hub_repo} --local-dir {directory}`, "
        "or pass --download, or set --checkpoint-dir."
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    # MAE's release wraps the weights as {"model": state_dict}.
    return state.get("model", state) if isinstance(state, dict) else state


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], checkpoint: str) -> dict[str, list[str]]:
    """Load every backbone weight of `state` into `model`, leaving only `head.*` new.

    Raises ValueError listing the keys when the checkpoint lacks a backbone weight
    or carries a weight the model does not have.
    """
    state = {key: value for key, value in state.items() if not key.startswith("head.")}
    result = model.load_state_dict(state, strict=False)
    missing = [key for key in result.missing_keys if not key.startswith("head.")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"checkpoint {checkpoint!r} does not match the model: missing backbone keys {missing}, "
            f"unexpected keys {list(result.unexpected_keys)}; check that the file is the named checkpoint"
        )
    report = {"missing_keys": list(result.missing_keys), "unexpected_keys": []}
    logger.info("loaded %s: %d tensors, new (trainable) head keys %s", checkpoint, len(state),
                report["missing_keys"])
    return report


def create_backbone(key: str, num_classes: int, *, checkpoint_dir: Path | None = None,
                    download: bool = False, checkpoint_name: str | None = None) -> tuple[nn.Module, dict]:
    """Return (model with a new `num_classes` head, load report) for backbone `key`.

    `checkpoint_name` replaces a paper backbone's timm checkpoint name, keeping its normalisation.
    """
    backbone = get_backbone(key)
    if checkpoint_name:
        if key in CPU_BACKBONES:
            raise ValueError(f"invalid checkpoint {checkpoint_name!r} for CPU-profile backbone {key!r}: "
                             "leave it empty (the digits backbones are pretrained in the project)")
        backbone = dataclasses.replace(backbone, checkpoint=checkpoint_name, hub_repo=f"timm/{checkpoint_name}")
    if key in CPU_BACKBONES:
        from experiments.vit import digits, pretrain

        path = pretrain.ensure_pretrained(key) if checkpoint_dir is None else \
            pretrain.ensure_pretrained(key, checkpoint_dir)
        model = digits.create_model(num_classes)
        report = load_strict(model, torch.load(path, map_location="cpu", weights_only=True), backbone.checkpoint)
        report["sha256"] = pretrain.file_sha256(path)
    else:
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn

        if checkpoint_dir is None:
            raise ValueError(f"backbone {key!r} needs --checkpoint-dir (the folder holding {backbone.checkpoint})")
        path = checkpoint_file(backbone, checkpoint_dir, download)
        model = timm.create_model(backbone.checkpoint, pretrained=False, num_classes=num_classes,
                                  **dict(backbone.model_kwargs))
        # timm's filter converts MAE's and the original Google release's key layouts to timm's.
        state = checkpoint_filter_fn(read_state_dict(path), model)
        report = load_strict(model, state, backbone.checkpoint)
    report.update(checkpoint=backbone.checkpoint, file=str(path))
    return model, report
