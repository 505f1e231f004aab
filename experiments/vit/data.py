"""Datasets of the ViT experiments: CIFAR-100, SVHN and Food-101 through torchvision.

Nothing is downloaded unless `download=True`. A missing dataset raises
`MissingInputError` naming the directory and what to put there.

Splits and transforms follow AdaptFormer's image pipeline (github.com/ShoufaChen/
AdaptFormer, `datasets/image_datasets.py` and `main_image.py`), which the paper
says it follows:
- train on the official train split (SVHN: `train` only, without `extra`),
  evaluate on the official test split; there is no validation split;
- train transform: RandomResizedCrop(224, bicubic), RandomHorizontalFlip
  (AdaptFormer flips SVHN digits too), ToTensor, Normalize;
- test transform: Resize(256, bicubic), CenterCrop(224), ToTensor, Normalize;
- Normalize uses the backbone checkpoint's mean and std (see `backbones.py`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from torch.utils.data import Dataset


class MissingInputError(FileNotFoundError):
    """A dataset or checkpoint that the run needs is not on disk."""


@dataclass(frozen=True)
class DatasetSpec:
    """Where torchvision expects a dataset under the data root, and its official sizes."""

    name: str
    subdirectory: str
    required: tuple[str, ...]
    num_classes: int
    train_size: int
    test_size: int
    source: str


SPECS = {
    "cifar100": DatasetSpec(
        "cifar100", "cifar100", ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
        num_classes=100, train_size=50_000, test_size=10_000,
        source="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (extract it there)",
    ),
    "svhn": DatasetSpec(
        "svhn", "svhn", ("train_32x32.mat", "test_32x32.mat"),
        num_classes=10, train_size=73_257, test_size=26_032,
        source="http://ufldl.stanford.edu/housenumbers/{train,test}_32x32.mat",
    ),
    "food101": DatasetSpec(
        "food101", "food101", ("food-101/meta/train.json", "food-101/meta/test.json", "food-101/images"),
        num_classes=101, train_size=75_750, test_size=25_250,
        source="http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz (extract it there)",
    ),
}


def dataset_directory(name: str, data_root: Path) -> Path:
    """Return the directory that holds dataset `name` under `data_root`."""
    return Path(data_root) / _spec(name).subdirectory


def _spec(name: str) -> DatasetSpec:
    if name not in SPECS:
        raise ValueError(f"invalid dataset {name!r}: choose one of {sorted(SPECS)} (or 'digits' in the CPU profile)")
    return SPECS[name]


def check_present(name: str, data_root: Path) -> None:
    """Raise MissingInputError unless every file torchvision reads for `name` exists."""
    spec = _spec(name)
    directory = dataset_directory(name, data_root)
    missing = [str(directory / relative) for relative in spec.required if not (directory / relative).exists()]
    if missing:
        raise MissingInputError(
            f"dataset {name!r} not found: missing {', '.join(missing)}. Put the files from {spec.source} "
            f"into {directory}, or pass --download to let torchvision fetch them, or set --data-root."
        )


@contextlib.contextmanager
def _existence_checks_only() -> Iterator[None]:
    """Make torchvision's CIFAR and SVHN loaders check that files exist instead of their MD5 sums."""
    import torchvision.datasets.cifar as cifar_module
    import torchvision.datasets.svhn as svhn_module

    def file_exists(path: str, md5: str | None = None) -> bool:
        return os.path.isfile(path)

    saved = (cifar_module.check_integrity, svhn_module.check_integrity)
    cifar_module.check_integrity = svhn_module.check_integrity = file_exists
    try:
        yield
    finally:
        cifar_module.check_integrity, svhn_module.check_integrity = saved


def build_transforms(image_size: int, mean: tuple[float, ...], std: tuple[float, ...]):
    """Return (train, test) torchvision transforms of AdaptFormer's pipeline at `image_size`."""
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    bicubic = InterpolationMode.BICUBIC
    # 224 / 256 = 0.875: AdaptFormer resizes to 256 and center-crops 224 for evaluation.
    resize = int(round(image_size / 0.875))
    train = transforms.Compose([
        transforms.RandomResizedCrop(image_size, interpolation=bicubic),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    test = transforms.Compose([
        transforms.Resize(resize, interpolation=bicubic),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    return train, test


def load_image_dataset(name: str, data_root: Path, *, train_transform=None, test_transform=None,
                       download: bool = False, verify_checksums: bool = True,
                       check_sizes: bool = True) -> tuple[Dataset, Dataset, int]:
    """Return (train, test, num_classes) for CIFAR-100, SVHN or Food-101 from `data_root`.

    `verify_checksums=False` replaces torchvision's MD5 check of the CIFAR and SVHN
    files by an existence check (for re-packed copies and the tests' small files).
    `check_sizes` asserts the official split sizes and class count; with it off only
    the class count of the labels seen is checked against the dataset's.
    """
    from torchvision import datasets

    spec = _spec(name)
    directory = dataset_directory(name, data_root)
    if download:
        directory.mkdir(parents=True, exist_ok=True)
    else:
        check_present(name, data_root)

    checks = contextlib.nullcontext() if verify_checksums else _existence_checks_only()
    with checks:
        if name == "cifar100":
            train = datasets.CIFAR100(directory, train=True, transform=train_transform, download=download)
            test = datasets.CIFAR100(directory, train=False, transform=test_transform, download=download)
            train_labels, test_labels = train.targets, test.targets
        elif name == "svhn":
            # torchvision maps SVHN's raw label 10 (the digit 0) to 0.
            train = datasets.SVHN(directory, split="train", transform=train_transform, download=download)
            test = datasets.SVHN(directory, split="test", transform=test_transform, download=download)
            train_labels, test_labels = list(train.labels), list(test.labels)
        else:
            train = datasets.Food101(directory, split="train", transform=train_transform, download=download)
            test = datasets.Food101(directory, split="test", transform=test_transform, download=download)
            train_labels, test_labels = train._labels, test._labels

    check_split(spec, len(train), len(test), train_labels, test_labels, check_sizes=check_sizes)
    return train, test, spec.num_classes


def check_split(spec: DatasetSpec, train_size: int, test_size: int, train_labels, test_labels,
                *, check_sizes: bool = True) -> None:
    """Raise ValueError if the split sizes or labels disagree with the dataset's official ones."""
    if check_sizes and (train_size, test_size) != (spec.train_size, spec.test_size):
        raise ValueError(
            f"dataset {spec.name!r} has {train_size} train / {test_size} test images, expected "
            f"{spec.train_size} / {spec.test_size}; the files under the data root are incomplete or a different "
            "release (for SVHN use train_32x32.mat, not extra_32x32.mat)"
        )
    labels = set(int(label) for label in train_labels) | set(int(label) for label in test_labels)
    if labels and (min(labels) < 0 or max(labels) >= spec.num_classes):
        raise ValueError(
            f"dataset {spec.name!r} has labels in [{min(labels)}, {max(labels)}], expected [0, {spec.num_classes - 1}]"
        )
    if check_sizes and len(labels) != spec.num_classes:
        raise ValueError(f"dataset {spec.name!r} has {len(labels)} classes, expected {spec.num_classes}")
