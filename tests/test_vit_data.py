"""The ViT datasets: torchvision loaders on tiny files in the real formats, missing paths, split checks."""

from __future__ import annotations

import pytest
import torch

from experiments.vit import data, digits
from experiments.vit.fixtures import write_all, write_cifar100, write_svhn


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("vit_data"))


@pytest.mark.parametrize("name, classes_seen", [("cifar100", {0, 1, 2}), ("svhn", {0, 1, 2}), ("food101", {0, 1, 2})])
def test_loader_reads_real_format(data_root, name, classes_seen):
    train_transform, test_transform = data.build_transforms(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    train, test, num_classes = data.load_image_dataset(
        name, data_root, train_transform=train_transform, test_transform=test_transform,
        verify_checksums=False, check_sizes=False)
    assert (len(train), len(test)) == (12, 6)
    assert num_classes == data.SPECS[name].num_classes
    image, label = train[0]
    assert image.shape == (3, 32, 32)
    assert image.dtype == torch.float32
    assert {int(train[index][1]) for index in range(len(train))} == classes_seen


def test_svhn_label_ten_is_digit_zero(data_root):
    train, _, _ = data.load_image_dataset("svhn", data_root, verify_checksums=False, check_sizes=False)
    labels = [int(label) for label in train.labels]
    assert 10 not in labels
    assert labels[0] == 0  # the fixture stores 10 for every third image, starting with the first


def test_missing_dataset_names_path(tmp_path):
    with pytest.raises(data.MissingInputError) as raised:
        data.load_image_dataset("cifar100", tmp_path)
    message = str(raised.value)
    assert str(tmp_path / "cifar100" / "cifar-100-python" / "train") in message
    assert "cifar-100-python.tar.gz" in message
    assert "--download" in message


def test_missing_svhn_test_file_is_named(tmp_path):
    write_svhn(tmp_path)
    (tmp_path / "svhn" / "test_32x32.mat").unlink()
    with pytest.raises(data.MissingInputError, match="test_32x32.mat"):
        data.load_image_dataset("svhn", tmp_path, verify_checksums=False)


def test_checksums_reject_fixture_files(tmp_path):
    """With MD5 verification on (the default), torchvision rejects files that are not the official ones."""
    write_cifar100(tmp_path)
    with pytest.raises(RuntimeError, match="corrupted"):
        data.load_image_dataset("cifar100", tmp_path)


@pytest.mark.parametrize("name", ["cifar100", "svhn", "food101"])
def test_split_sizes_are_checked(data_root, name):
    with pytest.raises(ValueError, match=f"expected {data.SPECS[name].train_size}"):
        data.load_image_dataset(name, data_root, verify_checksums=False)


def test_out_of_range_labels_rejected():
    with pytest.raises(ValueError, match=r"labels in \[0, 10\]"):
        data.check_split(data.SPECS["svhn"], 3, 1, [0, 5, 10], [1], check_sizes=False)


def test_unknown_dataset_rejected(tmp_path):
    with pytest.raises(ValueError, match="invalid dataset 'imagenet'"):
        data.load_image_dataset("imagenet", tmp_path)


def test_digits_splits_are_disjoint_and_fixed():
    first, second = digits.load_splits(), digits.load_splits()
    assert torch.equal(first["target_test"].images, second["target_test"].images)
    sizes = {name: len(split.labels) for name, split in first.items()}
    assert sizes["source"] + sizes["target_train"] + sizes["target_test"] == 1797
    assert abs(sizes["target_test"] / (sizes["target_train"] + sizes["target_test"]) - 0.4) < 0.01
    train_rows = {tuple(row.flatten().tolist()) for row in first["target_train"].images}
    test_rows = {tuple(row.flatten().tolist()) for row in first["target_test"].images}
    assert len(train_rows & test_rows) <= 2  # the digits set has a few duplicate images, no shared index
    assert first["source"].images.shape[1:] == (1, 8, 8)
