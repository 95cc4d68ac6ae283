"""The bnnflow checkpoint format.

A checkpoint is a plain dict saved with ``torch.save`` and read with
``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts
only, so a checkpoint handed in by someone else stays data. It holds what is
needed to rebuild the network (architecture, widths) and what a user wants to
know about it (data set, accuracy, training config, pruning):

    {"format": "bnnflow-checkpoint", "version": 1,
     "arch": "cnv", "widths": [...], "dataset": "cifar10",
     "state_dict": {...}, "meta": {"accuracy": 0.81, "n": 10000, ...}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import models
from bnnflow.errors import CheckpointError
from bnnflow.files import atomic_path
from models.nets import BinaryNet

FORMAT = "bnnflow-checkpoint"
VERSION = 1


def atomic_torch_save(obj: Any, path: Path | str) -> None:
    """Save to a temporary file beside ``path`` and rename, so no half-written file remains."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def to_dict(model: BinaryNet, meta: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint dict of ``model`` with metadata ``meta``."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "arch": model.arch,
        "widths": list(model.widths),
        "dataset": model.dataset,
        "state_dict": {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
        "meta": meta,
    }


def save(model: BinaryNet, meta: dict[str, Any], path: Path | str) -> None:
    """Write ``model`` and ``meta`` as a bnnflow checkpoint (atomically)."""
    atomic_torch_save(to_dict(model, meta), path)


def read_raw(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint dict safely and check that it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({first[:200]}); "
            "give a .pt file written by 'bnnflow train' or 'bnnflow prune'"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a bnnflow checkpoint (no format={FORMAT!r} entry); "
            "give a .pt file written by 'bnnflow train' or 'bnnflow prune'"
        )
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {obj.get('version')}, this bnnflow reads {VERSION}")
    for key in ("arch", "widths", "state_dict", "meta"):
        if key not in obj:
            raise CheckpointError(f"{path}: checkpoint lacks the {key!r} entry")
    return obj


def from_dict(obj: dict[str, Any], origin: str = "checkpoint") -> tuple[BinaryNet, dict[str, Any]]:
    """Rebuild the network of a checkpoint dict; returns (model in eval mode, meta)."""
    model = models.build(obj["arch"], obj["widths"])
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{origin}: weights do not fit {obj['arch']} {obj['widths']}: {exc}") from None
    model.eval()
    return model, dict(obj["meta"])


def load(path: Path | str) -> tuple[BinaryNet, dict[str, Any]]:
    """Load a checkpoint file; returns (model in eval mode, meta)."""
    return from_dict(read_raw(path), str(path))
