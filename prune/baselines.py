"""Rule-based filter selection for the baselines (reconstructions, see prune/README.md).

The paper compares with "MSF-Layerwise" and "MSF-Cascade"; their exact
definitions were not reachable. Reconstructed **(our choice)**: filters are
ranked by the L1 norm of their real-valued latent weights (the per-filter
scaling factor of XNOR-style binarization); Layerwise and Cascade differ only
in the schedule (:mod:`prune.schedule`). A random selection is the control.
"""

from __future__ import annotations

import torch

from models.layers import BinaryUnit
from prune.gates import top_k_mask

__all__ = ["l1_scores", "random_scores", "top_k_mask"]


def l1_scores(unit: BinaryUnit) -> torch.Tensor:
    """L1 norm of each filter's latent real weights."""
    return unit.weight_layer.weight.detach().abs().flatten(1).sum(1)


def random_scores(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random ranking of ``n`` filters."""
    return torch.rand(n, generator=generator)
