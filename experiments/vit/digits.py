"""Data and model of the CPU profile: scikit-learn's digits and a small timm ViT.

The 1,797 real 8 x 8 handwritten digits (scikit-learn's copy of the UCI
optical-digits test set) are split by class:
- source task: digits 0-4, used only to pretrain the backbone (`pretrain.py`);
- target task: digits 5-9 (relabelled 0-4), never seen in pretraining, split once
  with a fixed generator into 60 % train and 40 % test images, the same split for
  every run and seed.

The model is a timm `VisionTransformer` built like ViT-B in every respect that
the block-selection question touches (class token read out after the final
LayerNorm, fused `attn.qkv` with bias, `attn.proj`, pre-norm blocks, GELU MLP),
only smaller: 2 x 2 patches (16 patch tokens plus the class token), width 64,
4 heads, depth 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)
TARGET_TEST_FRACTION = 0.4
SPLIT_SEED = 20_240_601

# The tiny ViT (timm VisionTransformer keyword arguments).
MODEL_KWARGS = dict(
    img_size=8, patch_size=2, in_chans=1, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0,
    qkv_bias=True, class_token=True, global_pool="token",
)


@dataclass(frozen=True)
class DigitsSplit:
    """Tensors of one split: images (N, 1, 8, 8) standardised with source statistics, labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def dataset(self) -> TensorDataset:
        return TensorDataset(self.images, self.labels)


def _load_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # pixel values are 0..16
    return images, digits.target.astype(np.int64)


def load_splits() -> dict[str, DigitsSplit]:
    """Return the 'source', 'target_train' and 'target_test' splits.

    Pixels are standardised with the mean and standard deviation of the source
    images, the analogue of a checkpoint's normalisation constants.
    """
    images, labels = _load_raw()
    source = np.isin(labels, SOURCE_CLASSES)
    mean, std = float(images[source].mean()), float(images[source].std())
    images = (images - mean) / std

    target_indices = np.flatnonzero(np.isin(labels, TARGET_CLASSES))
    order = np.random.default_rng(SPLIT_SEED).permutation(target_indices)
    test_count = int(round(TARGET_TEST_FRACTION * len(order)))
    test_indices, train_indices = np.sort(order[:test_count]), np.sort(order[test_count:])

    def make(indices: np.ndarray, offset: int) -> DigitsSplit:
        return DigitsSplit(
            torch.from_numpy(images[indices]).unsqueeze(1),  # (N, 1, 8, 8)
            torch.from_numpy(labels[indices] - offset),
        )

    splits = {
        "source": make(np.flatnonzero(source), 0),
        "target_train": make(train_indices, TARGET_CLASSES[0]),
        "target_test": make(test_indices, TARGET_CLASSES[0]),
    }
    for name, split in splits.items():
        classes = torch.unique(split.labels).tolist()
        assert classes == list(range(5)), f"digits split {name} has classes {classes}, expected 0..4"
    return splits


def create_model(num_classes: int) -> torch.nn.Module:
    """Return a freshly initialised tiny ViT with a `num_classes`-way head (0 for no head)."""
    import timm.models.vision_transformer as vit

    return vit.VisionTransformer(num_classes=num_classes, **MODEL_KWARGS)
