"""Pretraining of the CPU profile's two backbones on the source digits (0-4).

- `digits_mae`: self-supervised masked-patch reconstruction, the analogue of the
  MAE checkpoint. Half of the 16 patch tokens are replaced by a learned mask token
  (SimMIM-style: the encoder receives mask tokens instead of dropping them, which keeps
  every layer's token count the same as at fine-tuning time), and a linear decoder
  predicts the masked patches' pixels from the final normalised tokens; the loss is
  the mean squared error on masked patches only, as in MAE.
- `digits_sup`: supervised 5-way classification of the source digits, the analogue
  of the supervised ImageNet-21k checkpoint.

Both store the backbone without its head (`num_classes=0` state dict) together
with a JSON record of the pretraining loss, under `results/cpu_profile/vit_backbones/`.
Pretraining is seeded and repeated when the file is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from experiments.results import RESULTS_ROOT
from experiments.vit import digits

logger = logging.getLogger(__name__)

BACKBONE_DIR = RESULTS_ROOT / "cpu_profile" / "vit_backbones"
PRETRAIN_BACKBONES = ("digits_mae", "digits_sup")
MASK_RATIO = 0.5
PRETRAIN_EPOCHS = {"digits_mae": 100, "digits_sup": 30}
PRETRAIN_LR = 2e-3
PRETRAIN_BATCH = 64
PRETRAIN_SEED = 0


def _patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Return (B, L, patch*patch*C) pixel patches in the row-major order of timm's patch embedding."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // patch, patch, W // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // patch) * (W // patch), patch * patch * C)


class MaskedReconstruction(nn.Module):
    """Encoder plus mask token plus linear pixel decoder for masked-patch pretraining."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.mask_token = nn.Parameter(torch.zeros(1, 1, encoder.embed_dim))
        patch = encoder.patch_embed.patch_size[0]
        self.decoder = nn.Linear(encoder.embed_dim, patch * patch * encoder.patch_embed.proj.in_channels)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Return the MSE of the predicted pixels on masked patches; `mask` is (B, L) boolean."""
        encoder = self.encoder
        tokens = encoder.patch_embed(images)  # (B, L, D)
        tokens = torch.where(mask.unsqueeze(-1), self.mask_token.expand_as(tokens), tokens)
        tokens = encoder.norm_pre(encoder._pos_embed(tokens))  # (B, 1 + L, D)
        tokens = encoder.norm(encoder.blocks(tokens))
        predicted = self.decoder(tokens[:, encoder.num_prefix_tokens:])  # (B, L, p*p*C)
        target = _patchify(images, encoder.patch_embed.patch_size[0])
        per_patch = ((predicted - target) ** 2).mean(dim=-1)  # (B, L)
        return (per_patch * mask).sum() / mask.sum()


def backbone_path(name: str, directory: Path = BACKBONE_DIR) -> Path:
    return Path(directory) / f"{name}.pt"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def pretrain(name: str, directory: Path = BACKBONE_DIR, epochs: int | None = None) -> Path:
    """Pretrain backbone `name` on the source digits, save it and return the checkpoint path."""
    if name not in PRETRAIN_BACKBONES:
        raise ValueError(f"invalid CPU-profile backbone {name!r}: choose one of {PRETRAIN_BACKBONES}")
    epochs = PRETRAIN_EPOCHS[name] if epochs is None else epochs
    torch.manual_seed(PRETRAIN_SEED)
    source = digits.load_splits()["source"]
    generator = torch.Generator().manual_seed(PRETRAIN_SEED)
    num_patches = (digits.MODEL_KWARGS["img_size"] // digits.MODEL_KWARGS["patch_size"]) ** 2

    if name == "digits_mae":
        encoder = digits.create_model(num_classes=0)
        model: nn.Module = MaskedReconstruction(encoder)
    else:
        model = encoder = digits.create_model(num_classes=len(digits.SOURCE_CLASSES))
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)

    start = time.perf_counter()
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(source.labels), generator=generator)
        total, count = 0.0, 0
        for batch in order.split(PRETRAIN_BATCH):
            images, labels = source.images[batch], source.labels[batch]
            if name == "digits_mae":
                scores = torch.rand(len(batch), num_patches, generator=generator)
                masked_count = int(MASK_RATIO * num_patches)
                mask = scores.argsort(dim=1).argsort(dim=1) < masked_count  # exactly masked_count per image
                loss = model(images, mask)
            else:
                loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            count += len(batch)
        schedule.step()
        losses.append(total / count)
        if epoch % 10 == 0 or epoch == epochs - 1:
            logger.info("pretrain %s epoch %3d/%d loss %.4f", name, epoch + 1, epochs, losses[-1])

    state = {key: value for key, value in encoder.state_dict().items() if not key.startswith("head.")}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = backbone_path(name, directory)
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    temporary.replace(path)
    record = {
        "backbone": name, "epochs": epochs, "lr": PRETRAIN_LR, "batch_size": PRETRAIN_BATCH,
        "mask_ratio": MASK_RATIO if name == "digits_mae" else None, "seed": PRETRAIN_SEED,
        "loss_per_epoch": losses, "seconds": round(time.perf_counter() - start, 2),
        "sha256": file_sha256(path), "source_classes": list(digits.SOURCE_CLASSES),
    }
    path.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    logger.info("pretrained %s in %.1f s, final loss %.4f -> %s", name, record["seconds"], losses[-1], path)
    return path


def ensure_pretrained(name: str, directory: Path = BACKBONE_DIR) -> Path:
    """Return the checkpoint of backbone `name`, pretraining it first when it is missing."""
    path = backbone_path(name, directory)
    return path if path.exists() else pretrain(name, directory)
