"""Shared test helpers (imported by the test modules; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

import models
from bnnflow import checkpoint


def save_random_net(
    arch: str, widths: list[int], path: Path, seed: int = 1, meta: dict | None = None, negative_gamma: float = 0.0
) -> Path:
    """Save a network with random binary weights and trained-like BatchNorm statistics, so its
    predictions are not degenerate. A fraction ``negative_gamma`` of the BatchNorm scales is
    negative (trained nets have some: the sign activation then flips its comparison)."""
    torch.manual_seed(seed)
    model = models.build(arch, widths=widths).eval()
    for mod in model.modules():
        if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            mod.running_mean.uniform_(-3.0, 3.0)
            mod.running_var.uniform_(0.5, 4.0)
            mod.weight.data.uniform_(0.2, 1.0)
            mod.weight.data[torch.rand(mod.weight.shape) < negative_gamma] *= -1
            mod.bias.data.uniform_(-1.0, 1.0)
    checkpoint.save(model, meta if meta is not None else {"accuracy": None, "n": 0}, path)
    return path


def copy_build(src: Path, dst: Path) -> Path:
    """A copy of the build folder ``src`` at ``dst`` (links kept as links), e.g. of the session's
    ``shared_tfc_build`` for a module that writes into it."""
    shutil.copytree(src, dst, symlinks=True)
    return dst
