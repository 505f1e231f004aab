"""Tiny CIFAR-100, SVHN and Food-101 copies in the on-disk formats torchvision reads.

The tests use them, and so can a dry run of the pipeline without the real data.
Every image is random noise, and labels cycle through a few classes. The layout
under `root` matches `experiments.vit.data.SPECS`.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np


def write_cifar100(root: Path, train: int = 12, test: int = 6, classes: int = 3) -> Path:
    """Write cifar100/cifar-100-python/{train,test,meta} pickles like the official release."""
    directory = Path(root) / "cifar100" / "cifar-100-python"
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, count in (("train", train), ("test", test)):
        entry = {
            "data": rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8),  # rows are CHW-flattened
            "fine_labels": [index % classes for index in range(count)],
            "coarse_labels": [0] * count,
            "filenames": [f"image_{index}.png" for index in range(count)],
        }
        (directory / name).write_bytes(pickle.dumps(entry))
    meta = {"fine_label_names": [f"class_{index}" for index in range(100)], "coarse_label_names": ["all"] * 20}
    (directory / "meta").write_bytes(pickle.dumps(meta))
    return directory


def write_svhn(root: Path, train: int = 12, test: int = 6) -> Path:
    """Write svhn/{train,test}_32x32.mat; labels run 1..10, where 10 is the digit 0 as in SVHN."""
    from scipy.io import savemat

    directory = Path(root) / "svhn"
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name, count in (("train", train), ("test", test)):
        images = rng.integers(0, 256, size=(32, 32, 3, count), dtype=np.uint8)  # SVHN stores H x W x C x N
        labels = np.array([[10 if index % 3 == 0 else index % 3] for index in range(count)], dtype=np.uint8)
        savemat(directory / f"{name}_32x32.mat", {"X": images, "y": labels})
    return directory


def write_food101(root: Path, train: int = 12, test: int = 6, classes: tuple[str, ...] = ("apple_pie", "sushi", "waffles")) -> Path:
    """Write food101/food-101/{meta/{train,test}.json, images/<class>/<id>.jpg}."""
    from PIL import Image

    base = Path(root) / "food101" / "food-101"
    (base / "meta").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    identifier = 0
    for name, count in (("train", train), ("test", test)):
        listing: dict[str, list[str]] = {label: [] for label in classes}
        for index in range(count):
            label = classes[index % len(classes)]
            (base / "images" / label).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(base / "images" / label / f"{identifier}.jpg")
            listing[label].append(f"{label}/{identifier}")
            identifier += 1
        (base / "meta" / f"{name}.json").write_text(json.dumps(listing))
    (base / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    return base


def write_all(root: Path) -> Path:
    write_cifar100(root)
    write_svhn(root)
    write_food101(root)
    return Path(root)
