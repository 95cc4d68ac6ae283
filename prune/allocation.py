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

``fit`` (``--fit BOARD --target-fps F [--budget lut=X,bram=Y]``) drops the
PFR target and prices the hardware itself, with FINN's own estimates
(:mod:`build_flows.cost`): among the width vectors whose layers all take
counts from the probed grid (the points of the sensitivity curves, so no
interpolated loss enters), it takes the one of least summed loss increase
whose FINN estimate at F FPS, every layer folded within the target, is at
most X LUT and Y BRAM18 (:func:`parse_budget`, :func:`budget_limits`). A
layer's cost depends on its input and output width, so the costs couple
neighbouring layers; :func:`chain_front` is an exact dynamic programme over
that chain that keeps every (loss, LUT, BRAM18) Pareto-optimal partial choice
per width. Before the sensitivity probe, :func:`fit_cost_model` checks the
budget against the smallest reachable design and refuses an unreachable one.

The probe leaves network and gates as they were; the schedule then runs with
the allocated counts as its per-layer targets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

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


def allocate(
    curves: Mapping[str, Mapping[int, float]],
    widths: Mapping[str, int],
    total_kept: int,
    granularity: int,
    price: Mapping[str, float] | None = None,
) -> dict[str, int]:
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
    return dict(zip(names, best[budget][1], strict=True))


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

        def hook(
            module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor, path: str = path
        ) -> None:
            w = cast(torch.Tensor, module.weight)  # hooked on weight layers only
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


def allocate_within(
    curves: Mapping[str, Mapping[int, float]],
    widths: Mapping[str, int],
    total_kept: int,
    granularity: int,
    costs: list[UnitCost],
    mac_limit: float,
) -> dict[str, int] | None:
    """:func:`allocate` with at most ``mac_limit`` MACs: the smallest Lagrange price ``mu`` (found by
    bisection) on each layer's MACs, linearised around the full widths, whose allocation meets
    the limit on the exact MAC count. None meets it: returns None."""
    grad = {name: sum(c.macs({**widths, name: widths[name] + 1}) - c.macs(widths) for c in costs) for name in widths}
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


# ---------------------------------------------------------------- fit to a board's budget
#: ``--budget`` keys and FINN's resource names; FINN's platform limits list them in this order
BUDGET_KEYS = {"lut": "LUT", "bram": "BRAM_18K"}
FINN_LIMIT_ORDER = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")


def parse_budget(spec: str | None) -> dict[str, tuple[float, bool]]:
    """``lut=X,bram=Y`` -> {FINN resource: (value, relative to the unpruned design)}.

    ``0.5`` is a fraction of the board, ``0.5x`` a multiple of the unpruned
    network's FINN estimate at the same target FPS. Unnamed resources are
    left out (the board's FINN limit applies, see :func:`budget_limits`).
    """
    out: dict[str, tuple[float, bool]] = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or key.lower() not in BUDGET_KEYS:
            raise BnnflowError(
                f"--budget {spec!r}: give lut=X,bram=Y with X, Y fractions of the board (0.6) "
                "or multiples of the unpruned design's FINN estimate (0.5x)"
            )
        resource = BUDGET_KEYS[key.lower()]
        if resource in out:
            raise BnnflowError(f"--budget {spec!r}: {key} given twice")
        relative = value.lower().endswith("x")
        try:
            v = float(value[:-1] if relative else value)
        except ValueError:
            raise BnnflowError(f"--budget {key}={value!r}: not a number (0.6 or 0.5x)") from None
        if not (v > 0 and (relative or v <= 1)):
            raise BnnflowError(
                f"--budget {key}={value}: a fraction of the board must be in (0, 1], "
                "a multiple of the unpruned design (0.5x) positive"
            )
        out[resource] = (v, relative)
    return out


def budget_limits(spec: str | None, board: str, unpruned: Mapping[str, float]) -> dict[str, float]:
    """Absolute LUT and BRAM18 limits of ``spec`` on ``board``; the unpruned design's FINN totals
    ``unpruned`` scale the relative ones. Unnamed resources get FINN's utilisation limit for the
    board (``finn.util.platforms``: 70% of the LUTs, 80% of the BRAM18 for timing closure); no
    limit exceeds the board (a design over it is not built)."""
    from finn.util.platforms import platforms

    from build_flows.boards import get_board

    capacity = get_board(board).capacity
    finn_limits = dict(zip(FINN_LIMIT_ORDER, (float(x) for x in platforms[board]().res_limits), strict=True))
    asked = parse_budget(spec)
    limits = {}
    for resource in BUDGET_KEYS.values():
        value, relative = asked.get(resource, (finn_limits[resource], False))
        limits[resource] = min(
            value * float(unpruned[resource]) if relative else value * capacity[resource], float(capacity[resource])
        )
    return limits


@dataclass(frozen=True)
class ChainChoice:
    """One width chain and its summed loss and resources."""

    widths: tuple[int, ...]
    loss: float
    lut: float
    bram: float

    def key(self) -> tuple[float, float, float]:
        return (self.loss, self.lut, self.bram)


def _pareto(points: list[ChainChoice]) -> list[ChainChoice]:
    """The points no other point beats or equals in loss, LUT and BRAM at once (first of equals).

    Sorted by loss, each point is held against a staircase of the (LUT, BRAM) pairs
    seen so far (LUT ascending, BRAM descending): the last step at or below its LUT
    has the least BRAM of all points with no more loss and LUT.
    """
    import bisect

    points = sorted(points, key=ChainChoice.key)
    kept: list[ChainChoice] = []
    luts: list[float] = []
    brams: list[float] = []
    for p in points:
        k = bisect.bisect_right(luts, p.lut)
        if k and brams[k - 1] <= p.bram:
            continue
        kept.append(p)
        j = k
        while j < len(luts) and brams[j] >= p.bram:
            j += 1
        luts[k:j], brams[k:j] = [p.lut], [p.bram]
    return kept


def chain_front(
    cands: list[list[int]],
    losses: Sequence[Mapping[int, float]],
    cost: Callable[[int, int, int], tuple[float, float] | None],
    limits: tuple[float, float] = (math.inf, math.inf),
) -> list[ChainChoice]:
    """Every Pareto-optimal width chain within ``limits`` (LUT, BRAM18), by exact dynamic programming.

    A chain takes one value from each ``cands`` entry (the first and last: the
    fixed input channels and classes); ``losses[j][w]`` is entry j's loss at w
    (absent: 0); group g between entries g and g+1 costs ``cost(g, a, b)`` =
    (LUT, BRAM18), or None where FINN cannot fold it for the target. The state
    after entry j is its width, and every partial chain not dominated in (loss,
    LUT, BRAM) at that state is kept: the rest of a chain's cost depends on the
    state only, so no optimum is lost, and since costs are non-negative a
    partial chain over a limit is dropped. The returned chains carry the inner
    widths (without the fixed ends).
    """
    fronts: dict[int, list[ChainChoice]] = {w: [ChainChoice((), 0.0, 0.0, 0.0)] for w in cands[0]}
    for g in range(len(cands) - 1):
        nxt: dict[int, list[ChainChoice]] = {}
        inner = g + 1 < len(cands) - 1
        for b in cands[g + 1]:
            points = []
            for a, front in fronts.items():
                c = cost(g, a, b)
                if c is None:
                    continue
                step = float(losses[g + 1].get(b, 0.0))
                for p in front:
                    lut, bram = p.lut + c[0], p.bram + c[1]
                    if lut <= limits[0] and bram <= limits[1]:
                        points.append(ChainChoice(p.widths + ((b,) if inner else ()), p.loss + step, lut, bram))
            if points:
                nxt[b] = _pareto(points)
        fronts = nxt
    return [p for front in fronts.values() for p in front]


@dataclass(frozen=True)
class Fit:
    """The allocation that fits the budget and what FINN's cost model predicts for it."""

    kept: dict[str, int]
    widths: list[int]  # every width entry of the network
    loss: float  # summed predicted loss increase of the prunable layers
    limits: dict[str, float]
    upper: dict[str, float]  # FINN's LUT and BRAM18 for ``widths`` whatever the weights: what met the limits
    predicted: Any  # build_flows.cost.Estimate of ``widths`` for balanced weights (the lower figures)
    candidates: dict[str, list[int]]
    probes: int  # probe builds the cost model ran


def _fit_candidates(
    net_widths: Sequence[int], names: Sequence[str], index: Mapping[str, int], granularity: int
) -> list[list[int]]:
    """Allowed widths per width entry: the probed counts of a prunable layer, the width of the others."""
    cands = [[int(w)] for w in net_widths]
    for name in names:
        cands[index[name]] = probe_counts(int(net_widths[index[name]]), granularity)
    return cands


def fit_cost_model(
    arch: str,
    net_widths: Sequence[int],
    names: Sequence[str],
    index: Mapping[str, int],
    granularity: int,
    board: str,
    target_fps: float,
    clock_ns: float,
    budget: str | None,
    unpruned: Mapping[str, float],
    cache_dir: Path | None,
    log: Callable[[str], None] = print,
) -> tuple[Any, dict[str, float]]:
    """FINN's cost model with every layer shape the search can meet probed, and the limits of
    ``budget`` (``unpruned``: FINN's totals of the unpruned network, for relative budgets), checked
    to be reachable: a budget no width vector meets is one error naming the smallest reachable
    figures (so it is refused before the sensitivity probe spends its time)."""
    from build_flows.cost import CostModel

    cm = CostModel(arch, board, target_fps, clock_ns, cache_dir, log)
    cands = _fit_candidates(net_widths, names, index, granularity)
    cm.prepare(cands)
    limits = budget_limits(budget, board, unpruned)
    chain = [[cm.ends[0]], *cands, [cm.ends[1]]]
    zero: list[Mapping[int, float]] = [{} for _ in chain]
    if chain_front(chain, zero, _group_cost(cm), (limits["LUT"], limits["BRAM_18K"])):
        return cm, limits
    reachable = chain_front(chain, zero, _group_cost(cm))
    where = (
        f"at {target_fps:g} FPS on {board} ({clock_ns:g} ns clock) with widths in multiples of "
        f"{granularity} (FINN's estimates, whatever the weights)"
    )
    if not reachable:
        slow = [
            f"{cm.names[g]} ({min(cm.group(g, a, b).folded_cycles for a in chain[g] for b in chain[g + 1]):,} "
            f"cycles at best)"
            for g in range(len(chain) - 1)
            if all(_group_cost(cm)(g, a, b) is None for a in chain[g] for b in chain[g + 1])
        ]
        raise BnnflowError(
            f"no width vector reaches {target_fps:g} FPS: FINN cannot fold "
            f"{', '.join(slow) or 'every layer at once'} into the {cm.target_cycles:,} cycles per "
            f"frame of the target; lower --target-fps"
        )
    lut = min(reachable, key=lambda p: (p.lut, p.bram))
    bram = min(reachable, key=lambda p: (p.bram, p.lut))
    raise BnnflowError(
        f"no width vector meets the budget LUT <= {limits['LUT']:,.0f}, BRAM18 <= "
        f"{limits['BRAM_18K']:,.0f} {where}: the smallest reachable are LUT {lut.lut:,.0f} "
        f"(with BRAM18 {lut.bram:,.0f}) and BRAM18 {bram.bram:,.0f} (with LUT {bram.lut:,.0f}); "
        "raise --budget or lower --target-fps"
    )


def _group_cost(cm: Any) -> Callable[[int, int, int], tuple[float, float] | None]:
    """(LUT, BRAM18) of a layer group at the target whatever its weights (FINN's larger estimate
    of the two accumulator widths, :meth:`build_flows.cost.CostModel.upper`), None where FINN's
    folding misses the target (such a design would not reach the FPS, and FINN would fold every
    layer again for it)."""

    def cost(g: int, a: int, b: int) -> tuple[float, float] | None:
        if cm.group(g, a, b).folded_cycles > cm.target_cycles:
            return None
        upper = cm.upper(g, a, b)
        return upper["LUT"], upper["BRAM_18K"]

    return cost


def fit_allocation(
    curves: Mapping[str, Mapping[int, float]],
    net_widths: Sequence[int],
    index: Mapping[str, int],
    granularity: int,
    cm: Any,
    limits: Mapping[str, float],
) -> Fit:
    """Per-layer kept counts (on the probed grid) minimising the summed loss increase of the
    sensitivity ``curves`` within ``limits`` (LUT, BRAM18) at the cost model's target FPS: the
    exact optimum of :func:`chain_front` on each layer's larger estimate of the two weight
    variants. Every layer of the result meets the target, so FINN folds it without relaxation
    and its estimate is the sum of its layers'. ``limits``: from :func:`fit_cost_model`, which
    has checked that some width vector meets them."""
    names = list(curves)
    cands = _fit_candidates(net_widths, names, index, granularity)
    losses: list[dict[int, float]] = [{} for _ in range(len(cands) + 2)]
    for name in names:
        n = int(net_widths[index[name]])
        dense = _dense_curve(curves[name], n, granularity)
        losses[index[name] + 1] = {k: dense[k] - dense[max(dense)] for k in cands[index[name]]}
    chain = [[cm.ends[0]], *cands, [cm.ends[1]]]
    # not empty: fit_cost_model found a chain within the limits, and losses change no feasibility
    best = min(chain_front(chain, losses, _group_cost(cm), (limits["LUT"], limits["BRAM_18K"])), key=ChainChoice.key)
    widths = list(best.widths)
    return Fit(
        kept={name: widths[index[name]] for name in names},
        widths=widths,
        loss=best.loss,
        limits=dict(limits),
        upper={"LUT": best.lut, "BRAM_18K": best.bram},
        predicted=cm.estimate(widths),
        candidates={name: cands[index[name]] for name in names},
        probes=cm.probes,
    )
