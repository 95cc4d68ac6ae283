"""Data sets: MNIST (IDX files) and CIFAR-10 (a tar of JPEG files).

Images are returned as uint8 arrays in NCHW layout (the layout the FINN
accelerator reads after its input transpose), labels as int64. Models take
float input in [0, 1] (uint8 / 255), the preprocessing FINN adds in front of
the exported graph. Nothing is downloaded: files come from a data directory,
by default ``../shared/data`` beside the checkout, overridable with
``--data-dir`` or ``BNNFLOW_DATA_DIR``.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bnnflow.errors import DataError
from bnnflow.files import atomic_path, cache_dir, sha256_file

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "BNNFLOW_DATA_DIR"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
DATASETS = ("mnist", "cifar10")


@dataclass(frozen=True)
class Split:
    """One split of a data set: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int | None) -> Split:
        """The first ``n`` samples (all if ``n`` is None), for quick runs."""
        if n is None or n >= len(self):
            return self
        return Split(self.images[:n], self.labels[:n])


def split_holdout(split: Split, n: int) -> tuple[Split, Split | None]:
    """``split`` without its last ``n`` samples, and those samples (None if ``n`` is 0).

    Why the last ones: a fixed, documented set that training (``bnnflow
    train``) and every pruning stage, probe and fine-tune epoch leave out, so
    an epoch is chosen without the test set. A pruning run's source checkpoint
    was trained without them when it was trained with the same holdout.
    """
    if n == 0:
        return split, None
    if n >= len(split):
        raise DataError(f"--holdout {n}: the training set has only {len(split)} images; hold out fewer")
    keep = len(split) - n
    return split.subset(keep), Split(split.images[keep:], split.labels[keep:])


def default_data_dir() -> Path:
    """``$BNNFLOW_DATA_DIR``, else ``../shared/data`` beside the checkout, else ``./data``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    shared = REPO_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else Path("data")


def load(dataset: str, split: str, data_dir: Path | str | None = None) -> Split:
    """Load ``split`` ('train' or 'test') of ``dataset`` ('mnist' or 'cifar10')."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}: use 'train' or 'test'")
    if dataset == "mnist":
        return _load_mnist(root / "mnist", split)
    if dataset == "cifar10":
        return _load_cifar10(root / "cifar10", split)
    raise DataError(f"unknown data set {dataset!r}: use one of {', '.join(DATASETS)}")


# ---------------------------------------------------------------- MNIST
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Parse one gzip-compressed IDX file, checking magic number and size."""
    hint = "re-copy it from the original MNIST distribution or point --data-dir elsewhere"
    if not path.is_file():
        raise DataError(f"{path}: file not found; put the MNIST IDX files there or pass --data-dir")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc}); {hint}") from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; {hint}")
    got_magic, *dims = struct.unpack(">" + "I" * (1 + ndim), raw[:header])
    if got_magic != magic:
        raise DataError(f"{path}: IDX magic 0x{got_magic:08x}, expected 0x{magic:08x}; {hint}")
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{path}: {len(raw) - header} data bytes, header promises {expected}; {hint}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _load_mnist(root: Path, split: str) -> Split:
    img_name, lbl_name = _MNIST_FILES[split]
    images = _read_idx(root / img_name, 0x00000803, 3)
    labels = _read_idx(root / lbl_name, 0x00000801, 1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels in the {split} split")
    if labels.max() > 9:
        raise DataError(f"{root / lbl_name}: label {labels.max()} outside 0..9")
    return Split(images[:, None, :, :].copy(), labels.astype(np.int64))


# ---------------------------------------------------------------- CIFAR-10
_CIFAR_TAR = "cifar10-jpeg.tar.gz"


def _decode_cifar_tar(path: Path) -> dict[str, np.ndarray]:
    """Decode every JPEG of the tar into uint8 arrays, classes interleaved."""
    from PIL import Image  # imported here: only CIFAR-10 needs it

    hint = "re-copy the CIFAR-10 JPEG tar or point --data-dir elsewhere"
    found: dict[str, list[tuple[str, int, np.ndarray]]] = {"train": [], "test": []}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if not member.isfile() or not member.name.endswith(".jpg"):
                    continue
                parts = Path(member.name).parts
                if len(parts) < 3 or parts[-3] not in found or parts[-2] not in CIFAR10_CLASSES:
                    continue
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                try:
                    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                except Exception as exc:  # PIL raises many types for bad JPEG data
                    raise DataError(f"{path}: member {member.name} is not a JPEG ({exc}); {hint}") from None
                if img.shape != (32, 32, 3):
                    raise DataError(f"{path}: member {member.name} has shape {img.shape}, not 32x32x3")
                found[parts[-3]].append((member.name, CIFAR10_CLASSES.index(parts[-2]), img))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable tar.gz ({exc}); {hint}") from None
    out: dict[str, np.ndarray] = {}
    for split, expected in (("train", 50000), ("test", 10000)):
        # Interleave the classes (file number first, then class), so that every
        # prefix ("the first N test images", --limit) is class-balanced; the tar
        # itself is sorted by class.
        items = sorted(found[split], key=lambda t: (Path(t[0]).stem, t[1]))
        if len(items) != expected:
            raise DataError(f"{path}: {len(items)} {split} images, expected {expected}; {hint}")
        out[f"{split}_x"] = np.stack([t[2] for t in items]).transpose(0, 3, 1, 2).copy()
        out[f"{split}_y"] = np.array([t[1] for t in items], dtype=np.int64)
    return out


def _load_cifar10(root: Path, split: str) -> Split:
    path = root / _CIFAR_TAR
    if not path.is_file():
        raise DataError(f"{path}: file not found; put {_CIFAR_TAR} there or pass --data-dir")
    cached = cache_dir() / f"cifar10-v2-{sha256_file(path)[:16]}.npz"
    if not cached.is_file():
        arrays = _decode_cifar_tar(path)
        with atomic_path(cached) as tmp, tmp.open("wb") as f:
            np.savez(f, allow_pickle=False, **arrays)  # plain numeric arrays; the loader refuses pickles
    try:
        with np.load(cached, allow_pickle=False) as z:
            images, labels = z[f"{split}_x"], z[f"{split}_y"]
    except Exception as exc:  # numpy/zipfile raise many types for a damaged archive
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(
            f"{cached}: damaged cache of the decoded {path.name} ({type(exc).__name__}: {why}); "
            "delete it, the next run decodes the tar again"
        ) from None
    if images.ndim != 4 or images.shape[1:] != (3, 32, 32) or labels.shape != (images.shape[0],):
        raise DataError(
            f"{cached}: damaged cache of the decoded {path.name} (arrays of shapes {images.shape} "
            f"and {labels.shape}); delete it, the next run decodes the tar again"
        )
    return Split(images, labels)


# ---------------------------------------------------------------- batching
def to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]: the /255 that FINN's exported graph starts with."""
    t = torch.as_tensor(images)
    return t.to(torch.float32) / 255.0


def augment_cifar(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop with 4-pixel zero padding and random horizontal flip (uint8 in, uint8 out)."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=generator)
    dy = torch.randint(0, 9, (n,), generator=generator)
    rows = dy[:, None] + torch.arange(h)[None, :]  # (n, h)
    cols = dx[:, None] + torch.arange(w)[None, :]  # (n, w)
    idx_n = torch.arange(n)[:, None, None, None]
    idx_c = torch.arange(images.shape[1])[None, :, None, None]
    out = padded[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def batches(
    split: Split,
    batch_size: int,
    shuffle: bool,
    augment: bool = False,
    generator: torch.Generator | None = None,
):
    """Yield (float images in [0,1], labels) batches from an in-memory split."""
    n = len(split)
    gen = generator or torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    images = torch.from_numpy(split.images)
    labels = torch.from_numpy(split.labels)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        x = images[idx]
        if augment:
            x = augment_cifar(x, gen)
        yield to_float(x), labels[idx]
