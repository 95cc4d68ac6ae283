"""Learned allocation of a global PFR target over the prunable layers **(our choice)**.

Why: with a global target every layer normally loses the same share of its
filters (:func:`prune.pfr.kept_counts`), so the methods differ only in *which*
filters they drop. Measured on CNV, that choice hardly matters once the pruned
network is retrained; *how many* filters each layer loses does. The paper's
penalty-driven gates decide per-layer counts themselves; here the subsidiary
component decides them in a probe before the schedule:

1. For every prunable layer alone (the others ungated, the main network
   frozen) its gates are trained as in a subsidiary step, with the uniform
   count as budget, and rank the layer's filters.
2. Keeping the top k of that ranking, for k on a grid of multiples of G, the
   loss of the schedule (cross-entropy + distillation) is measured on a fixed
   probe set of training images: a sensitivity curve per layer.
3. The per-layer counts minimise the sum of the loss increases over all
   layers (treated as additive) at exactly the uniform allocation's total
   kept count, so both allocations reach the same PFR (``learned``). A
   dynamic programme over multiples of G solves this exactly.
4. ``learned-mac`` adds a limit: no more multiply-accumulates per frame than
   the uniform split. It enters as a Lagrange term ``mu * (linearised MACs)``,
   with ``mu`` the smallest found (bisection) whose allocation meets the limit
   on the exact MAC count.

Why the MAC variant: PFR counts filters, and a 512-wide FC layer's filters
are cheap in accuracy *and* in hardware, whereas a conv layer at 32x32 costs
a thousand times more MACs per filter. Measured on CNV at PFR 0.40,
``learned`` kept conv1-4 whole and cut fc1 to 160 filters: 67.2% instead of
58.6% for the uniform split, but FINN's estimate at 3000 FPS was 26,148 LUT
against 12,615 (at a fixed frame rate FINN's LUTs grow with MACs per frame).
``learned-mac`` keeps the comparison at equal PFR *and* equal-or-lower
compute; on CNV it measured worse than the uniform split (BENCHMARKS.md).

The probe leaves network and gates as they were; the schedule then runs with
the allocated counts as its per-layer targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch

from bnnflow.errors import BnnflowError
from models.nets import BinaryNet
from prune.topology import PrunableLayer, unit_at

MAX_PROBE_POINTS = 12  # kept counts measured per layer (plus G); the curve is interpolated between


def probe_counts(n: int, granularity: int) -> list[int]:
    """Kept counts at which a layer of ``n`` filters is measured: multiples of G, evenly thinned
    to at most MAX_PROBE_POINTS down from the largest one <= n, plus G itself."""
    units = n // granularity
    step = max(1, math.ceil(units / MAX_PROBE_POINTS))
    return sorted({u * granularity for u in range(units, 0, -step)} | {granularity})


def _dense_curve(points: Mapping[int, float], n: int, granularity: int) -> dict[int, float]:
    """The curve at every multiple of G (linear between measured points), made non-increasing
    in the kept count: keeping more filters, the best of the smaller sets stays available."""
    xs = sorted(points)
    dense: dict[int, float] = {}
    for k in range(granularity, n // granularity * granularity + 1, granularity):
        hi = next(x for x in xs if x >= k)
        lo = max((x for x in xs if x <= k), default=hi)
        t = 0.0 if hi == lo else (k - lo) / (hi - lo)
        dense[k] = (1 - t) * points[lo] + t * points[hi]
    best = math.inf
    for k in sorted(dense):
        best = min(best, dense[k])
        dense[k] = best
    return dense


def allocate(curves: Mapping[str, Mapping[int, float]], widths: Mapping[str, int], total_kept: int,
             granularity: int, price: Mapping[str, float] | None = None) -> dict[str, int]:
    """Kept count per layer (multiples of G, at least G) summing to ``total_kept`` that minimises
    the summed loss increase ``curve(k) - curve(n)`` of the layers, plus ``price[layer] * k``."""
    if total_kept % granularity:
        raise BnnflowError(f"kept total {total_kept} is not a multiple of the granularity {granularity}")
    names = list(widths)
    dense = {name: _dense_curve(curves[name], widths[name], granularity) for name in names}
    budget = total_kept // granularity
    # best[u] = (cost, counts) of the layers so far keeping u units of G in all
    best: dict[int, tuple[float, list[int]]] = {0: (0.0, [])}
    for name in names:
        full = dense[name][max(dense[name])]
        nxt: dict[int, tuple[float, list[int]]] = {}
        for used, (cost, counts) in best.items():
            for k, loss in dense[name].items():
                u = used + k // granularity
                if u > budget:
                    continue
                c = cost + (loss - full) + (price[name] * k if price else 0.0)
                if u not in nxt or c < nxt[u][0] - 1e-12:
                    nxt[u] = (c, counts + [k])
        best = nxt
    if budget not in best:
        raise BnnflowError(f"no allocation keeps exactly {total_kept} filters at granularity {granularity}")
    return dict(zip(names, best[budget][1]))


@dataclass(frozen=True)
class UnitCost:
    """MACs of one binary unit as a function of the kept counts: ``per_pair * in * out``."""

    per_pair: float  # MACs per frame / (input features * output channels)
    in_layer: str | None  # the prunable layer whose kept count sets the input (None: fixed)
    in_spatial: int  # input features per kept channel of in_layer (flatten: H*W)
    in_fixed: int  # input features when in_layer is None
    out_layer: str | None  # the prunable layer this unit is (None: fixed width)
    out_fixed: int

    def macs(self, kept: Mapping[str, int]) -> float:
        n_in = kept[self.in_layer] * self.in_spatial if self.in_layer else self.in_fixed
        n_out = kept[self.out_layer] if self.out_layer else self.out_fixed
        return self.per_pair * n_in * n_out


def unit_costs(net: BinaryNet, layers: list[PrunableLayer]) -> list[UnitCost]:
    """The MAC model of every unit a prunable layer touches, measured with one forward pass."""
    producer = {c.unit: (layer.name, c.spatial) for layer in layers for c in layer.consumers}
    own = {layer.unit: layer.name for layer in layers}
    shapes: dict[str, tuple[int, int, float]] = {}
    handles = []
    for path in sorted(set(producer) | set(own)):
        wl = unit_at(net, path).weight_layer

        def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor,
                 path: str = path) -> None:
            w = module.weight
            positions = out[0, 0].numel() if out.dim() > 2 else 1
            shapes[path] = (int(w.shape[1]), int(w.shape[0]), float(w[0, 0].numel() * positions))

        handles.append(wl.register_forward_hook(hook))
    try:
        with torch.no_grad():
            net.eval()
            net(torch.zeros((1, *net.input_shape)))
    finally:
        for h in handles:
            h.remove()
    costs = []
    for path, (n_in, n_out, per_pair) in shapes.items():
        in_layer, spatial = producer.get(path, (None, 1))
        costs.append(UnitCost(per_pair, in_layer, spatial, n_in, own.get(path), n_out))
    return costs


def total_macs(costs: list[UnitCost], kept: Mapping[str, int]) -> float:
    return sum(c.macs(kept) for c in costs)


def allocate_within(curves: Mapping[str, Mapping[int, float]], widths: Mapping[str, int], total_kept: int,
                    granularity: int, costs: list[UnitCost], mac_limit: float) -> dict[str, int] | None:
    """:func:`allocate` with at most ``mac_limit`` MACs: the smallest Lagrange price ``mu`` (found by
    bisection) on each layer's MACs, linearised around the full widths, whose allocation meets
    the limit on the exact MAC count. None meets it: returns None."""
    grad = {name: sum(c.macs({**widths, name: widths[name] + 1}) - c.macs(widths) for c in costs)
            for name in widths}
    scale = max(max(abs(v) for c in curves.values() for v in c.values()), 1e-9) / max(max(grad.values()), 1.0)

    def solve(mu: float) -> tuple[dict[str, int], bool]:
        kept = allocate(curves, widths, total_kept, granularity, {n: mu * g for n, g in grad.items()})
        return kept, total_macs(costs, kept) <= mac_limit * (1 + 1e-9)

    kept, ok = solve(0.0)
    if ok:
        return kept
    lo, hi = 0.0, scale
    for _ in range(60):  # grow the price until the limit is met
        kept, ok = solve(hi)
        if ok:
            break
        lo, hi = hi, hi * 4
    else:
        return None
    best = kept
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        kept, ok = solve(mid)
        if ok:
            hi, best = mid, kept
        else:
            lo = mid
    return best
