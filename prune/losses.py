"""The training objective of the pruning stages: cross-entropy plus distillation from the unpruned net."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from models.nets import BinaryNet
from prune.config import PruneConfig


def objective(
    logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor, cfg: PruneConfig
) -> torch.Tensor:
    """Cross-entropy + kd_weight * T^2 * KL(softmax(t/T) || softmax(s/T))."""
    loss = F.cross_entropy(logits, labels)
    if cfg.kd_weight > 0:
        T = cfg.kd_temp
        kl = F.kl_div(F.log_softmax(logits / T, 1), F.softmax(teacher_logits / T, 1), reduction="batchmean")
        loss = loss + cfg.kd_weight * T * T * kl
    return loss


def distillation_loss(teacher: BinaryNet, cfg: PruneConfig) -> Callable[..., torch.Tensor]:
    """:func:`objective` against the teacher's logits on the same inputs."""

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = teacher(inputs) if cfg.kd_weight > 0 else logits
        return objective(logits, labels, t, cfg)

    return loss_fn
