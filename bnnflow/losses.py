"""The distillation objective shared by training (``bnnflow train --teacher``) and the pruning stages."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation(
    logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor, weight: float, temp: float
) -> torch.Tensor:
    """Cross-entropy + weight * T^2 * KL(softmax(t/T) || softmax(s/T)) (Hinton et al.'s scaling,
    so the weight means the same at any temperature); weight 0 is plain cross-entropy."""
    loss = F.cross_entropy(logits, labels)
    if weight > 0:
        kl = F.kl_div(F.log_softmax(logits / temp, 1), F.softmax(teacher_logits / temp, 1), reduction="batchmean")
        loss = loss + weight * temp * temp * kl
    return loss
