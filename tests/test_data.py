"""Data loaders on the real shared data sets, and their errors on broken files."""

from __future__ import annotations

import gzip
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bnnflow import data
from bnnflow.errors import DataError
from bnnflow.files import CACHE_ENV


def test_mnist_shapes_labels_and_range() -> None:
    train, test = data.load("mnist", "train"), data.load("mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    counts = np.bincount(train.labels, minlength=10)
    assert counts.sum() == 60000 and counts.min() > 5000  # every digit well represented
    assert np.bincount(test.labels, minlength=10).sum() == 10000
    assert train.images.min() == 0 and train.images.max() == 255
    assert abs(float(train.images.mean()) - 33.32) < 0.01  # the known MNIST mean


def test_cifar10_shapes_labels_and_range() -> None:
    train, test = data.load("cifar10", "train"), data.load("cifar10", "test")
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert np.array_equal(np.bincount(train.labels), np.full(10, 5000))
    assert np.array_equal(np.bincount(test.labels), np.full(10, 1000))
    assert test.images.dtype == np.uint8 and 0 < test.images.mean() < 255
    # every prefix is class-balanced (the tar is sorted by class; --limit N must not be)
    assert np.array_equal(np.bincount(test.labels[:100], minlength=10), np.full(10, 10))


def test_batches_are_float_in_unit_range_and_cover_split() -> None:
    split = data.load("mnist", "test").subset(250)
    seen = 0
    for x, y in data.batches(split, 100, shuffle=True):
        assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        seen += len(y)
    assert seen == 250


def test_cifar_augmentation_crops_and_flips() -> None:
    x = torch.from_numpy(data.load("cifar10", "test").images[:32])
    out = data.augment_cifar(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    flips = 0
    for i in range(len(x)):
        crops = [padded[i, :, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        plain = any(torch.equal(out[i], c) for c in crops)
        flipped = any(torch.equal(out[i], c.flip(-1)) for c in crops)
        assert plain or flipped, f"sample {i} is not a padded crop of its input"
        flips += int(flipped and not plain)
    assert 0 < flips < len(x)  # both flipped and unflipped samples occur


def _mnist_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "mnist"
    shutil.copytree(data.default_data_dir() / "mnist", dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return tmp_path


def test_truncated_idx_file_names_the_file(tmp_path: Path) -> None:
    root = _mnist_copy(tmp_path)
    bad = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(bad.read_bytes())
    bad.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz.*header promises"):
        data.load("mnist", "test", root)


def test_non_gzip_and_missing_files_are_clear(tmp_path: Path) -> None:
    root = _mnist_copy(tmp_path)
    (root / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(b"not a gzip file at all")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: not a readable gzip"):
        data.load("mnist", "test", root)
    (root / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: file not found"):
        data.load("mnist", "train", root)


def test_corrupt_cifar_tar_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    (tmp_path / "cifar10").mkdir()
    tar_path = tmp_path / "cifar10" / "cifar10-jpeg.tar.gz"
    tar_path.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="cifar10-jpeg.tar.gz: not a readable tar.gz"):
        data.load("cifar10", "test", tmp_path)
    # a well-formed tar with too few images is rejected too, naming the count
    with tarfile.open(tar_path, "w:gz") as tar:
        info = tarfile.TarInfo("test/cat/0001.jpg")
        payload = (data.default_data_dir() / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
        info.size = len(payload)
        import io

        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(DataError, match="0001.jpg is not a JPEG"):
        data.load("cifar10", "test", tmp_path)
    assert not list((tmp_path / "cache").glob("*.npz"))  # nothing half-written cached


def test_data_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    assert data.default_data_dir() == tmp_path
    with pytest.raises(DataError, match=str(tmp_path / "mnist")):
        data.load("mnist", "test")


def test_unknown_dataset_and_split() -> None:
    with pytest.raises(DataError, match="unknown data set"):
        data.load("imagenet", "test")
    with pytest.raises(DataError, match="unknown split"):
        data.load("mnist", "val")
