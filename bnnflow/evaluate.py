"""Accuracy of a network on a data split."""

from __future__ import annotations

from collections.abc import Callable

import torch

from bnnflow.data import Split, batches
from bnnflow.progress import progress
from models.nets import BinaryNet


@torch.no_grad()
def predict(
    model: BinaryNet,
    split: Split,
    batch_size: int = 500,
    show_progress: bool = False,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Top-1 class of every sample, in order (``forward``: a twin of ``model`` to compute it with)."""
    model.eval()
    if isinstance(forward, torch.nn.Module):
        forward.eval()
    fwd = forward or model
    out = []
    total = (len(split) + batch_size - 1) // batch_size
    for x, _ in progress(batches(split, batch_size, shuffle=False), total=total, desc="eval", enabled=show_progress):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(fwd(x).argmax(dim=1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(
    model: BinaryNet,
    split: Split,
    batch_size: int = 500,
    show_progress: bool = False,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    channels_last: bool = False,
) -> float:
    """Fraction of samples whose top-1 class equals the label."""
    pred = predict(model, split, batch_size, show_progress, forward, channels_last)
    return float((pred == torch.from_numpy(split.labels)).float().mean()) if len(split) else float("nan")
