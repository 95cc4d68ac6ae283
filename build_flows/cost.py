"""FINN's cost of a zoo network at any widths, without building it: the cost model for pruning to a board.

For a network's widths, a board and a target FPS (and clock) it gives, per
FINN node, the PE/SIMD FINN's auto-folding chooses (with bnnflow's folding
fix), FINN's LUT/BRAM18/... estimates and FINN's cycle estimate, and the
totals: what ``bnnflow build`` writes into ``report/estimate_layer_resources.json``,
``estimate_layer_cycles.json`` and ``auto_folding_config.json``, node for node
(tested against real builds; an MVAU's LUT figure is one of two that the
weights decide between, see *Weights*). Nothing here re-derives a FINN
formula; every number comes from FINN's own transformations and custom-op
methods run on real HW nodes:

1. **Probe.** The zoo network at the widths, with seeded random balanced
   weights (see *Weights* below), goes through what ``bnnflow build`` runs up to specialization: the same
   export (:func:`build_flows.inputs.prepare_input`), the same
   ``DataflowBuildConfig`` (``build_flows.build._config``) and the same step
   functions (FINN's, with bnnflow's replacements from
   :data:`build_flows.steps.STEP_REPLACEMENTS`).
2. **Layer groups.** The HW graph of a chain network (TFC/SFC/LFC, CNV,
   VGG-11, NIN) is a chain of FINN nodes with one MVAU per binary layer and
   one for the classifier. It is cut after every MVAU: group g holds what
   feeds MVAU g (input thresholding, padding, sliding-window generators, the
   max-pool before it) and the MVAU, and the last group also the label
   select. Group g's nodes depend only on its input and output width
   (``w[g]``, ``w[g+1]`` of the chain ``[input channels, *widths, classes]``)
   and the fixed geometry, so a group is kept, per FPGA part, under
   ``(arch, g, w_in, w_out)``: in memory and, given ``cache_dir``, as an
   ONNX file. A layer's cost therefore costs a probe only the first time any
   width vector needs that shape; one probe yields one shape for every group
   (:meth:`CostModel.prepare` picks probes that cover many missing shapes).
3. **Folding and estimates per group**, as FINN's steps would do on the
   whole graph: FINN's ``SetFolding`` for the target cycles per frame
   (its per-node choice depends on the node alone; the one cross-node rule,
   a max-pool's ``Pool`` setting the SIMD of the sliding window feeding it,
   stays inside a group), bnnflow's :class:`~build_flows.transforms.hls_mvau_simd.RaiseHlsMvauSimd`,
   bnnflow's bit-width step (:func:`build_flows.steps.step_minimize_bit_width`),
   then FINN's ``res_estimation`` and ``exp_cycles_per_layer``, the analyses
   ``step_generate_estimate_reports`` writes. Cached per (group, target
   cycles, weight variant).
4. **The one coupling between layers** is FINN's two-pass relaxation: when a
   node cannot reach the target, ``SetFolding`` folds the whole network
   again for the slowest node's cycles. :meth:`CostModel.estimate` does the
   same on the group results (same rule, read from the same config field).

Weights. FINN's estimates depend on them in one place:
``MinimizeAccumulatorWidth`` sizes an MVAU's accumulator from the +1/-1
counts (p, n) of each weight column, and the thresholds' type follows the
accumulator's. The narrowest accumulator comes with balanced columns, the
widest with a column of all +1, so the model computes both, with FINN's own
functions on the same nodes: the probes use balanced weights
(:func:`balanced_net`), and ``one_sided=True`` sets one column of every MVAU
to +1. For the zoo's layers these are the only two outcomes. An XNOR layer,
with ``b = ceil(log2(MW+1))``, gets ``UINT(b)`` from bnnflow's
``WidenXnorAccumulators`` unless some column has ``max(n, p+1) >
2**(b-1)``, when FINN's ``INT(b+1)`` is kept: MW = 504 (b = 9) needs only
257 weights of one sign in a column, which random weights often have,
MW = 144 needs 129, which they practically never have. The first layer of
CNV (signed 8-bit input) spans ``127*MW + max(p, n+1)``, one type for any
split at MW = 27; that of VGG-11 and NIN (unsigned 8-bit input, for the -1
padding) spans ``255*max(n, p+1)``: MW = 27 needs a bit more once a column
has 17 weights of one sign. Every node of a real build equals one of the two
estimates (tested, with the differences shown: about one LUT per PE of a
layer, for the threshold comparators, and BRAM18 unchanged in the tests).
The budget search (:mod:`prune.allocation`) holds the larger of the two per
layer against the budget (:meth:`CostModel.upper`), so a pruned network
meets it whatever its weights; :func:`finn_estimates` gives the figures of a
network's own weights. Residual networks (ResNet-18) are not chains and are
refused.
"""

from __future__ import annotations

import copy
import itertools
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError, NotSupported
from bnnflow.files import atomic_path
from bnnflow.progress import progress
from build_flows.boards import Board, get_board

#: Folding attributes FINN's SetFolding sets, as they appear in auto_folding_config.json.
FOLDING_ATTRS = ("PE", "SIMD", "parallel_window")
#: Resources the totals and budgets are about (FINN's names).
LUT, BRAM = "LUT", "BRAM_18K"
PROBE_SEED = 0


@dataclass(frozen=True)
class NodeEstimate:
    """One FINN node after folding: FINN's folding choice, resource and cycle estimates."""

    op_type: str
    folding: dict[str, int]
    resources: dict[str, float]  # FINN's res_estimation entry for the node, as in the report
    cycles: int


@dataclass(frozen=True)
class GroupEstimate:
    """A layer group folded for one target: its nodes in graph order."""

    nodes: tuple[NodeEstimate, ...]
    #: the slowest node's cycles after SetFolding and before bnnflow's SIMD raise: what FINN's
    #: two-pass relaxation compares with the target
    folded_cycles: int

    def total(self, resource: str) -> float:
        return sum(float(n.resources.get(resource, 0.0)) for n in self.nodes)


@dataclass(frozen=True)
class Estimate:
    """FINN's estimates of a whole network at one width vector and target."""

    widths: tuple[int, ...]
    target_cycles: int  # FINN's cycles per frame for the target FPS
    folded_for: int  # the target SetFolding ended with: target_cycles, or the slowest node's after relaxation
    clock_ns: float
    nodes: dict[str, NodeEstimate]  # by FINN's node name, in graph order
    groups: dict[str, tuple[str, ...]]  # layer name (width names, then "classifier") -> its node names

    def layer_resources(self) -> dict[str, dict[str, float]]:
        """``report/estimate_layer_resources.json`` of ``bnnflow build``: per node, then "total"."""
        from finn.analysis.fpgadataflow.op_and_param_counts import aggregate_dict_keys

        res: dict[str, Any] = {name: dict(n.resources) for name, n in self.nodes.items()}
        res["total"] = aggregate_dict_keys(res)
        return res

    def layer_cycles(self) -> dict[str, int]:
        """``report/estimate_layer_cycles.json``: FINN's expected cycles per node."""
        return {name: n.cycles for name, n in self.nodes.items()}

    def folding(self) -> dict[str, dict[str, int]]:
        """PE/SIMD (and parallel_window) per node, as in ``report/auto_folding_config.json``."""
        return {name: dict(n.folding) for name, n in self.nodes.items()}

    @property
    def totals(self) -> dict[str, float]:
        return self.layer_resources()["total"]

    def layer_totals(self, resource: str) -> dict[str, float]:
        """``resource`` summed over each layer's nodes (its group), by layer name."""
        return {
            layer: sum(float(self.nodes[n].resources.get(resource, 0.0)) for n in names)
            for layer, names in self.groups.items()
        }

    @property
    def max_cycles(self) -> int:
        return max(n.cycles for n in self.nodes.values())

    @property
    def estimated_fps(self) -> float:
        """FINN's estimated throughput (estimate_network_performance.json): clock / slowest node."""
        return 1e9 / self.clock_ns / self.max_cycles

    @property
    def meets_target(self) -> bool:
        return self.max_cycles <= self.target_cycles


def chain_arch(arch: str) -> type[Any]:
    """The zoo class of ``arch`` if its HW graph is a chain of layer groups; else NotSupported."""
    from models import ARCHS
    from models.nets import FC, NIN, ConvChain

    if arch not in ARCHS:
        raise BnnflowError(f"unknown model {arch!r}: choose one of {', '.join(ARCHS)}")
    cls = ARCHS[arch]
    if not issubclass(cls, (FC, ConvChain, NIN)):
        raise NotSupported(
            f"the FINN cost model for {arch}: its accelerator is not a chain of layers "
            "(residual sums fork the stream); it handles TFC/SFC/LFC, CNV, VGG-11 and NIN"
        )
    return cls


def balanced_net(cls: type[Any], widths: Sequence[int]) -> Any:
    """The probe network: ``cls`` at ``widths`` with seeded random weights in which every filter
    has as many +1 as -1 weights (one more -1 when odd, so that ``max(n, p+1)`` is at most
    ``MW/2 + 1`` and within ``2**(b-1)``): FINN's narrowest accumulators (see the module docstring)."""
    import torch

    from models.layers import BinaryClassifier, BinaryUnit

    gen = torch.Generator().manual_seed(PROBE_SEED)
    net = cls(list(widths)).eval()
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, (BinaryUnit, BinaryClassifier)):
                w = mod.weight_layer.weight
                n = w[0].numel()
                signs = torch.where(torch.arange(n) % 2 == 0, -0.5, 0.5)
                w.copy_(
                    torch.stack([signs[torch.randperm(n, generator=gen)] for _ in range(w.shape[0])]).reshape(w.shape)
                )
    return net


def _run_steps(model_file: Path, cfg: Any, last: str) -> Any:
    """bnnflow build's FINN steps (FINN's functions with bnnflow's replacements) up to ``last``."""
    from finn.builder.build_dataflow_steps import build_dataflow_step_lookup
    from qonnx.core.modelwrapper import ModelWrapper

    from build_flows import finn_env
    from build_flows.steps import STEP_REPLACEMENTS

    lookup = {**build_dataflow_step_lookup, **STEP_REPLACEMENTS}
    steps = list(cfg.steps)
    model = ModelWrapper(str(model_file))
    with finn_env.quiet_builder():
        for step in steps[: steps.index(last) + 1]:
            model = lookup[step](model, cfg)
    return model


def _build_config(out: Path, board: Board, target_fps: float, clock_ns: float) -> Any:
    """The DataflowBuildConfig ``bnnflow build`` uses (no Vivado, no folding file), writing into ``out``."""
    from build_flows import build, finn_env
    from build_flows.fifo import fifo_options

    finn_env.prepare(out / build.CODEGEN_DIR)
    steps, _ = build.step_lists()
    (out / "report").mkdir(parents=True, exist_ok=True)
    return build._config(out, board, target_fps, None, clock_ns, steps, False, fifo_options(None, None), None)


def _flow(net: Any, board: Board, target_fps: float, clock_ns: float, last: str, work: Path) -> Any:
    """Export ``net`` as ``bnnflow build`` does and run its FINN steps up to ``last`` in ``work``."""
    from bnnflow import checkpoint
    from build_flows.inputs import prepare_input

    checkpoint.save(net, {"accuracy": None, "n": 0}, work / "net.pt")
    inp = prepare_input(work / "net.pt", work / "model.onnx", 0, None)
    return _run_steps(inp.path, _build_config(work, board, target_fps, clock_ns), last)


def finn_estimates(net: Any, board: str, target_fps: float, clock_ns: float = 10.0) -> dict[str, Any]:
    """FINN's estimate reports of ``net`` itself (its own weights): ``bnnflow build``'s flow up to
    ``step_generate_estimate_reports`` (no code generation, no budget check). Returns the
    report files by name without ``.json`` (``estimate_layer_resources``, ...)."""
    import json

    from build_flows.build import ESTIMATES_STEP

    b = get_board(board)
    with tempfile.TemporaryDirectory(prefix="bnnflow-estimate-") as tmp:
        work = Path(tmp)
        _flow(net, b, target_fps, clock_ns, ESTIMATES_STEP, work)
        return {p.stem: json.loads(p.read_text()) for p in sorted((work / "report").glob("estimate_*.json"))}


def _subgraph(model: Any, lo: int, hi: int) -> Any:
    """Nodes ``lo:hi`` of a chain graph as a model of their own (their tensors, shapes, datatypes)."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import RemoveUnusedTensors

    proto = copy.deepcopy(model.model)
    nodes = list(proto.graph.node)[lo:hi]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    first, last = nodes[0].input[0], nodes[-1].output[0]
    for field, name in ((proto.graph.input, first), (proto.graph.output, last)):
        del field[:]
        field.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, model.get_tensor_shape(name)))
    kept = [vi for vi in proto.graph.value_info if vi.name not in (first, last)]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept)
    sub = ModelWrapper(proto)
    for name in (first, last):
        sub.set_tensor_datatype(name, model.get_tensor_datatype(name))
    return sub.transform(RemoveUnusedTensors())


def split_groups(model: Any, n_groups: int, what: str) -> list[Any]:
    """The layer groups of a specialized HW graph (see the module docstring), checked to be a chain
    with ``n_groups`` MVAUs."""
    nodes = list(model.graph.node)
    for prev, node in itertools.pairwise(nodes):
        extra = [i for i in node.input[1:] if model.get_initializer(i) is None]
        if node.input[0] != prev.output[0] or extra or len(prev.output) != 1:
            raise NotSupported(f"the FINN cost model for {what}: its HW graph is not a chain at {node.name}")
    cuts = [k + 1 for k, n in enumerate(nodes) if n.op_type.startswith("MVAU")]
    if len(cuts) != n_groups:
        raise NotSupported(
            f"the FINN cost model for {what}: {len(cuts)} MVAUs in its HW graph, "
            f"expected one per binary layer ({n_groups})"
        )
    cuts[-1] = len(nodes)
    return [_subgraph(model, lo, hi) for lo, hi in zip([0, *cuts[:-1]], cuts, strict=True)]


class CostModel:
    """FINN's per-node folding and estimates of ``arch`` at any widths, on ``board`` at ``target_fps``.

    Layer groups are probed once per shape and cached (``cache_dir``: as ONNX
    files, shared by every target FPS and clock, one folder per finn-plus
    version and FPGA part; clear it after changing bnnflow's own FINN steps);
    folded estimates are cached per shape, target and weight variant.
    """

    def __init__(
        self,
        arch: str,
        board: str,
        target_fps: float,
        clock_ns: float = 10.0,
        cache_dir: Path | str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        from importlib.metadata import version

        if not target_fps > 0:
            raise BnnflowError(f"--target-fps must be positive, got {target_fps}")
        if not clock_ns > 0:
            raise BnnflowError(f"--clock-ns must be positive, got {clock_ns}")
        self.cls = chain_arch(arch)
        self.arch, self.board = arch, get_board(board)
        self.target_fps, self.clock_ns = float(target_fps), float(clock_ns)
        self.names = [*self.cls.width_names(), "classifier"]
        self.ends = (int(self.cls.input_shape[0]), int(self.cls.num_classes))
        self.log = log or (lambda _msg: None)
        self.cache_dir = (
            Path(cache_dir) / f"finn-plus-{version('finn-plus')}" / self.board.part / arch
            if cache_dir is not None
            else None
        )
        self._work = tempfile.TemporaryDirectory(prefix="bnnflow-cost-")
        self.cfg = _build_config(Path(self._work.name), self.board, target_fps, clock_ns)
        self.target_cycles = int(self.cfg._resolve_cycles_per_frame())
        self._groups: dict[tuple[int, int, int], Any] = {}
        self._folded: dict[tuple[int, int, int, int, bool], GroupEstimate] = {}
        self.probes = 0  # probe builds run by this instance

    # ------------------------------------------------------------ shapes
    def chain(self, widths: Sequence[int]) -> list[int]:
        """``[input channels, *widths, classes]``: group g reads chain[g] channels and writes chain[g+1]."""
        widths = [int(w) for w in widths]
        if len(widths) != len(self.cls.default_widths) or min(widths) < 1:
            raise BnnflowError(
                f"{self.arch} takes {len(self.cls.default_widths)} positive widths "
                f"({', '.join(self.cls.width_names())}), got {widths}"
            )
        return [self.ends[0], *widths, self.ends[1]]

    def _file(self, key: tuple[int, int, int]) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"g{key[0]}_{key[1]}_{key[2]}.onnx"

    def _have(self, key: tuple[int, int, int]) -> bool:
        if key in self._groups:
            return True
        path = self._file(key)
        if path is None or not path.is_file():
            return False
        from qonnx.core.modelwrapper import ModelWrapper

        self._groups[key] = ModelWrapper(str(path))
        return True

    def probe(self, widths: Sequence[int]) -> None:
        """Run one probe build at ``widths`` and keep every group shape it yields."""
        chain = self.chain(widths)
        net = balanced_net(self.cls, chain[1:-1])
        with tempfile.TemporaryDirectory(prefix="probe-", dir=self._work.name) as tmp:
            from build_flows.build import LAST_BEFORE_FOLDING

            model = _flow(net, self.board, self.target_fps, self.clock_ns, LAST_BEFORE_FOLDING, Path(tmp))
        groups = split_groups(model, len(chain) - 1, self.arch)
        self.probes += 1
        for g, sub in enumerate(groups):
            key = (g, chain[g], chain[g + 1])
            self._groups[key] = sub
            path = self._file(key)
            if path is not None and not path.is_file():
                with atomic_path(path) as tmp_file:
                    sub.save(str(tmp_file))

    def prepare(self, candidates: Sequence[Sequence[int]]) -> int:
        """Make sure every group shape that width vectors drawn from ``candidates`` (allowed widths
        per width entry) can have is cached; returns the number of probe builds this took.

        One probe gives one shape per group, so the probes are chosen greedily to cover
        as many missing shapes as possible: about as many as the largest group has shapes.
        """
        cands = [[self.ends[0]], *[sorted({int(w) for w in c}) for c in candidates], [self.ends[1]]]
        if len(cands) != len(self.names) + 1 or not all(cands):
            raise BnnflowError(f"{self.arch}: give allowed widths for each of {', '.join(self.names[:-1])}")
        missing = [
            {(a, b) for a in cands[g] for b in cands[g + 1] if not self._have((g, a, b))} for g in range(len(cands) - 1)
        ]
        vectors = _covering_chains(cands, missing)
        if vectors:
            self.log(
                f"FINN cost model: {len(vectors)} probe builds of {self.arch} for "
                f"{sum(map(len, missing))} layer shapes not cached"
            )
        for chain in progress(vectors, desc="FINN cost probes"):
            self.probe(chain[1:-1])
        return len(vectors)

    # ------------------------------------------------------------ folding and estimates
    def group(
        self, g: int, w_in: int, w_out: int, target_cycles: int | None = None, one_sided: bool = False
    ) -> GroupEstimate:
        """Group ``g`` (reading ``w_in``, writing ``w_out`` channels) folded for ``target_cycles``
        (default: the target FPS's) with FINN's and bnnflow's steps. ``one_sided``: with one weight
        column of every MVAU all +1 (FINN's widest accumulator, see the module docstring) instead
        of the probe's balanced weights (its narrowest)."""
        cycles = self.target_cycles if target_cycles is None else int(target_cycles)
        key = (g, int(w_in), int(w_out))
        if (*key, cycles, one_sided) in self._folded:
            return self._folded[(*key, cycles, one_sided)]
        if not self._have(key):
            raise BnnflowError(
                f"no cached FINN graph for {self.arch} layer {self.names[g]} with {w_in} -> "
                f"{w_out} channels; call prepare() or estimate() with such widths first"
            )
        est = self._fold(self._groups[key], cycles, one_sided)
        self._folded[(*key, cycles, one_sided)] = est
        return est

    def upper(self, g: int, w_in: int, w_out: int) -> dict[str, float]:
        """Per resource, the larger of the group's two estimates at the target: what FINN estimates
        for it whatever the weights (for the zoo's layers its accumulator is one of the two types)."""
        lo, hi = self.group(g, w_in, w_out), self.group(g, w_in, w_out, one_sided=True)
        return {r: max(lo.total(r), hi.total(r)) for r in (LUT, BRAM)}

    def _fold(self, group: Any, cycles: int, one_sided: bool) -> GroupEstimate:
        from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
        from finn.analysis.fpgadataflow.res_estimation import res_estimation
        from finn.transformation.fpgadataflow.set_folding import SetFolding
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.custom_op.registry import getCustomOp

        from build_flows import finn_env
        from build_flows.steps import step_minimize_bit_width
        from build_flows.transforms.hls_mvau_simd import RaiseHlsMvauSimd

        if one_sided:
            group = ModelWrapper(copy.deepcopy(group.model))
            for node in group.graph.node:
                if node.op_type.startswith("MVAU"):
                    w = group.get_initializer(node.input[1]).copy()  # (MW, MH); 1 is +1 (binary or bipolar)
                    w[:, 0] = 1
                    group.set_initializer(node.input[1], w)
        with finn_env.quiet_builder():
            model = group.transform(
                SetFolding(cycles, mvau_wwidth_max=self.cfg.mvau_wwidth_max, two_pass_relaxation=False)
            )
            folded = max(int(getCustomOp(n).get_exp_cycles()) for n in model.graph.node)
            model = model.transform(RaiseHlsMvauSimd())
            model = step_minimize_bit_width(model, self.cfg)
            res = res_estimation(model, self.cfg._resolve_fpga_part())
            cyc = exp_cycles_per_layer(model)
        nodes = []
        for node in model.graph.node:
            inst = getCustomOp(node)
            types = inst.get_nodeattr_types()
            nodes.append(
                NodeEstimate(
                    op_type=node.op_type,
                    resources=dict(res[node.name]),
                    cycles=int(cyc[node.name]),
                    folding={a: inst.get_nodeattr(a) for a in FOLDING_ATTRS if a in types},
                )
            )
        return GroupEstimate(nodes=tuple(nodes), folded_cycles=folded)

    def estimate(self, widths: Sequence[int], one_sided: bool = False) -> Estimate:
        """FINN's folding and estimates of the whole network at ``widths`` (probed if not cached),
        for balanced weights or (``one_sided``) an all-+1 weight column in every MVAU."""
        chain = self.chain(widths)
        keys = [(g, chain[g], chain[g + 1]) for g in range(len(chain) - 1)]
        if not all(self._have(k) for k in keys):
            self.probe(widths)
        groups = [self.group(*k, one_sided=one_sided) for k in keys]
        folded_for = self.target_cycles
        slowest = max(e.folded_cycles for e in groups)
        if self.cfg.folding_two_pass_relaxation and slowest > self.target_cycles:
            folded_for = slowest  # FINN's second SetFolding pass, without relaxation
            groups = [self.group(*k, target_cycles=slowest, one_sided=one_sided) for k in keys]
        nodes: dict[str, NodeEstimate] = {}
        members: dict[str, tuple[str, ...]] = {}
        count: dict[str, int] = {}
        for layer, est in zip(self.names, groups, strict=True):
            names = []
            for node in est.nodes:  # FINN's GiveUniqueNodeNames over the whole graph
                name = f"{node.op_type}_{count.get(node.op_type, 0)}"
                count[node.op_type] = count.get(node.op_type, 0) + 1
                nodes[name] = node
                names.append(name)
            members[layer] = tuple(names)
        return Estimate(
            widths=tuple(chain[1:-1]),
            target_cycles=self.target_cycles,
            folded_for=folded_for,
            clock_ns=self.clock_ns,
            nodes=nodes,
            groups=members,
        )


def _covering_chains(cands: list[list[int]], missing: list[set[tuple[int, int]]]) -> list[list[int]]:
    """Width chains (one value from each ``cands`` entry) that together contain every pair in
    ``missing[g]`` as their (chain[g], chain[g+1]): greedily, starting each chain at a missing
    pair of the group with the most left and extending it through missing pairs where it can
    (else through the narrowest width: a cheaper probe)."""
    missing = [set(m) for m in missing]
    chains = []
    while any(missing):
        g = max(range(len(missing)), key=lambda i: len(missing[i]))
        a, b = min(missing[g])
        chain: list[int | None] = [None] * len(cands)
        chain[g], chain[g + 1] = a, b
        for j in range(g + 2, len(cands)):  # rightwards: pair (chain[j-1], chain[j]) is group j-1's
            opts = sorted(y for x, y in missing[j - 1] if x == chain[j - 1] and y in cands[j])
            chain[j] = opts[0] if opts else cands[j][0]
        for j in range(g - 1, -1, -1):  # leftwards: pair (chain[j], chain[j+1]) is group j's
            opts = sorted(x for x, y in missing[j] if y == chain[j + 1] and x in cands[j])
            chain[j] = opts[0] if opts else cands[j][0]
        full = [int(w) for w in chain if w is not None]
        for i in range(len(missing)):
            missing[i].discard((full[i], full[i + 1]))
        chains.append(full)
    return chains
