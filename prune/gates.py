"""The subsidiary component: one binary gate per output filter of a prunable layer.

Each gate has a real parameter ``m_k``; its value is ``g_k = (sign(m_k) + 1) / 2``
in {0, 1} (sign(0) = +1), trained through a clipped straight-through
estimator (gradient 1/2 where ``|m_k| < 1``, as d/dm of the gate with
sign' := 1 on [-1, 1]).

PFR control while learning **(our choice)**: a gate set can be given a
*budget* K, the kept count the target asks for. The gates are then
``(sign(m_k - tau) + 1) / 2`` with ``tau`` halfway between the K-th and the
(K+1)-th largest ``m``, i.e. exactly K filters are open at every step and the
straight-through gradient tells which closed filter should replace which open
one. (A kept-filter penalty with a lambda controller instead, tried first,
closed all gates at once within the few steps a CPU budget allows: under
Adam every ``m_k`` moves at the same speed.) After the step the K largest
``m_k`` are kept, which is the open set of the last step. The ``m_k`` start
equal by default, so the first open set is the first K filters by index;
``PruneConfig.gate_noise`` adds seeded noise (:meth:`FilterGate.reset`), as
the authors' code did, for a random first open set (BENCHMARKS.md, "Where
the subsidiary step starts", measures both).

How a gate acts **(our choice)**: a forward hook on the unit's BatchNorm
replaces channel k's pre-activation ``y_k`` by ``g_k * y_k + (1 - g_k) * c_k``.
In eval mode, multiplying filter k of the binary weights by ``g_k`` (the
paper's formulation) gives ``g_k * y_k + (1 - g_k) * BN_k(0)``, so the two
differ only in the constant a removed channel takes. We fix that constant to
``c_k`` in {-1, +1}, chosen so that the channel can be removed exactly:

* ``c_k = -1`` (the zoo's pad value) when a consumer pads its input: then the
  border positions and the interior agree and the removed channel's
  contribution is the same at every output position;
* otherwise ``c_k = sign(BN_k(0))`` of the network the gate was attached to,
  the sign the paper's weight gating gives in eval mode.

Unlike weight gating, this is also exact in training mode (BatchNorm's batch
statistics never touch a removed channel), so the gated network trained by
the main retraining step is the network that is physically pruned.
The zoo classes are untouched: gates live outside them and act via hooks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import cast

import torch
from torch import nn

from models.nets import BinaryNet
from prune.topology import PrunableLayer, prunable_layers, unit_at

OPEN, LEARN, FIXED = 0, 1, 2  # gate modes: pass-through, trainable, frozen keep-mask


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask of the ``k`` highest scores (ties: lower index first)."""
    order = torch.argsort(-scores.detach().double(), stable=True)
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    mask[order[:k]] = True
    return mask


class _GateSTE(torch.autograd.Function):
    """(sign(m) + 1) / 2 forward; clipped straight-through estimator backward."""

    @staticmethod
    def forward(ctx, m: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(m)
        return (m >= 0).to(m.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (m,) = ctx.saved_tensors
        return 0.5 * grad * (m.abs() < 1).to(grad.dtype)


class FilterGate(nn.Module):
    """Gates of one layer: parameter ``m``, removal constants ``const``, mode and fixed mask."""

    # buffers registered in __init__, typed here (nn.Module's lookup gives Tensor | Module)
    const: torch.Tensor
    keep: torch.Tensor
    mode: torch.Tensor

    def __init__(self, n: int, const: torch.Tensor, init: float = 1e-3) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.full((n,), float(init)))
        self.register_buffer("const", const.detach().clone().float())
        self.register_buffer("keep", torch.ones(n, dtype=torch.bool))
        self.register_buffer("mode", torch.tensor(OPEN))
        self.budget: int | None = None  # LEARN mode: keep exactly this many gates open

    def values(self) -> torch.Tensor:
        """Current gate values g in {0, 1} (differentiable w.r.t. m in LEARN mode)."""
        if int(self.mode) != LEARN:
            return self.keep.to(self.m.dtype)
        if self.budget is None or self.budget >= self.m.numel():
            return _GateSTE.apply(self.m)
        # Budgeted: sign(m - tau) with tau between the budget-th and next largest m, so exactly
        # `budget` gates are open (ties by index); same clipped STE around tau.
        s = torch.sort(self.m.detach(), descending=True, stable=True).values
        tau = 0.5 * (s[self.budget - 1] + s[self.budget])
        soft = 0.5 * torch.clamp(self.m - tau, -1.0, 1.0)
        return top_k_mask(self.m, self.budget).to(self.m.dtype) + (soft - soft.detach())

    def fix(self, keep: torch.Tensor) -> None:
        """Freeze the gates to the keep-mask ``keep``."""
        self.keep.copy_(keep.to(torch.bool))
        self.mode.fill_(FIXED)
        self.budget = None
        self.m.requires_grad_(False)

    def reset(self, init: float, noise: float = 0.0, generator: torch.Generator | None = None) -> None:
        """Back to pass-through with ``m`` at ``init`` (plus uniform noise in ``[-noise, noise]``
        drawn from ``generator``), as before any training."""
        with torch.no_grad():
            self.m.fill_(float(init))
            if noise > 0:
                self.m.add_(torch.empty_like(self.m).uniform_(-noise, noise, generator=generator))
        self.keep.fill_(True)
        self.mode.fill_(OPEN)
        self.budget = None
        self.m.requires_grad_(False)

    def learn(self, budget: int | None = None) -> None:
        """Make the gates trainable; with ``budget``, exactly that many stay open at every step."""
        self.mode.fill_(LEARN)
        self.budget = budget
        self.m.requires_grad_(True)

    def apply_to(self, y: torch.Tensor) -> torch.Tensor:
        """Gate the pre-activation ``y`` (N, C) or (N, C, H, W)."""
        if int(self.mode) == OPEN:
            return y
        shape = (1, -1) + (1,) * (y.dim() - 2)
        g = self.values().view(shape)
        return g * y + (1.0 - g) * self.const.view(shape)


def removal_constants(net: BinaryNet, layer: PrunableLayer) -> torch.Tensor:
    """``c_k`` of every filter of ``layer`` (see the module docstring)."""
    unit = unit_at(net, layer.unit)
    if any(c.padded for c in layer.consumers):
        return -torch.ones(unit.out_channels)
    bn = unit.bn
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:  # torch allows BatchNorm without them; the zoo always tracks them
        raise ValueError(f"{layer.unit}: BatchNorm has no running statistics")
    with torch.no_grad():
        y0 = bn.bias - bn.weight * mean / torch.sqrt(var + bn.eps)
    return torch.where(y0 >= 0, 1.0, -1.0)  # Brevitas' binary sign maps 0 to +1


class GateSet(nn.Module):
    """The subsidiary component of a network: a FilterGate per prunable layer, hooked in."""

    def __init__(self, net: BinaryNet, init: float = 1e-3) -> None:
        super().__init__()
        self.layers = prunable_layers(net)
        self.gates = nn.ModuleList(  # aligned with self.layers (width names may contain dots)
            FilterGate(unit_at(net, layer.unit).out_channels, removal_constants(net, layer), init)
            for layer in self.layers
        )
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.attach(net)

    def attach(self, net: BinaryNet) -> None:
        """Hook every gate into ``net`` (replacing earlier hooks of this set)."""
        self.detach()
        for layer, gate in self:
            bn = unit_at(net, layer.unit).bn
            self._handles.append(bn.register_forward_hook(lambda _m, _i, out, g=gate: g.apply_to(out)))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __iter__(self) -> Iterator[tuple[PrunableLayer, FilterGate]]:
        return iter(zip(self.layers, cast(Iterable[FilterGate], self.gates), strict=True))

    def __getitem__(self, name: str) -> FilterGate:
        return self.at([layer.name for layer in self.layers].index(name))[1]

    def at(self, i: int) -> tuple[PrunableLayer, FilterGate]:
        """Prunable layer ``i`` and its gates (``nn.ModuleList`` indexes as ``nn.Module``)."""
        return self.layers[i], cast(FilterGate, self.gates[i])

    def kept(self) -> dict[str, int]:
        """Kept filters per layer (open gates count as kept)."""
        return {layer.name: int(gate.values().detach().sum()) for layer, gate in self}
