"""The training objective of the pruning stages: cross-entropy plus distillation from the unpruned net."""

from __future__ import annotations

from collections.abc import Callable

import torch

from bnnflow.losses import distillation
from models.nets import BinaryNet
from prune.config import PruneConfig


def objective(
    logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor, cfg: PruneConfig
) -> torch.Tensor:
    """:func:`bnnflow.losses.distillation` with the run's weight and temperature."""
    return distillation(logits, labels, teacher_logits, cfg.kd_weight, cfg.kd_temp)


def distillation_loss(teacher: BinaryNet, cfg: PruneConfig) -> Callable[..., torch.Tensor]:
    """:func:`objective` against the teacher's logits on the same inputs."""

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = teacher(inputs) if cfg.kd_weight > 0 else logits
        return objective(logits, labels, t, cfg)

    return loss_fn
