"""Read one build folder's FINN reports into typed records.

Every number shown in a report comes from a file FINN wrote, unchanged:
cycles from ``report/estimate_layer_cycles.json``, LUT/BRAM/URAM/DSP from
``report/estimate_layer_resources.json`` (its ``total`` entry is FINN's own
sum), throughput and latency from ``report/estimate_network_performance.json``
(FINN computes them at the build's clock). Matrix shape, folding and data
types (MW, MH, PE, SIMD, weight and accumulator bits) are node attributes of
the accelerator graph, read through FINN's custom-op classes so defaults are
FINN's. Board, part, clock, board capacity (FINN's platform table, recorded
at build time), pruning and the checkpoint's stored accuracy come from the
build's manifest (:class:`build_flows.build_dir.Manifest`), never from the
checkpoint file; the accuracy the simulator measured comes from
``DIR/sim.json`` (written by ``bnnflow sim DIR``) when present.
Post-synthesis figures are read by :mod:`reports.synth`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError
from bnnflow.files import read_json
from build_flows.build_dir import BuildDir, open_build
from reports.synth import Synth, read_synth

CYCLES = "estimate_layer_cycles.json"
RESOURCES = "estimate_layer_resources.json"
PERFORMANCE = "estimate_network_performance.json"
# What the estimate files must hold for a report to be made from them.
RESOURCE_KEYS = ("LUT", "BRAM_18K", "DSP")
PERFORMANCE_KEYS = (
    "max_cycles",
    "max_cycles_node_name",
    "critical_path_cycles",
    "estimated_throughput_fps",
    "estimated_latency_ns",
)
_REBUILD = "rebuild with `bnnflow build`"


@dataclass(frozen=True)
class Layer:
    """One accelerator node: its shape and folding (graph) and FINN's estimates (reports)."""

    name: str
    op_type: str
    mw: int | None = None  # matrix width (input length of the dot products)
    mh: int | None = None  # matrix height (output channels / neurons)
    pe: int | None = None
    simd: int | None = None
    weight_bits: int | None = None
    acc_bits: int | None = None
    cycles: float | None = None
    resources: dict[str, float] = field(default_factory=dict)  # FINN's estimate entry, as written

    @property
    def lut(self) -> float | None:
        return self.resources.get("LUT")

    @property
    def bram18(self) -> float | None:
        return self.resources.get("BRAM_18K")

    @property
    def dsp(self) -> float | None:
        return self.resources.get("DSP")


@dataclass(frozen=True)
class Quality:
    """Accuracy and pruning of the network a build was made from, with where they came from."""

    accuracy: float | None = None
    n: int | None = None
    source: str = ""  # "simulator (DIR/sim.json)" / "checkpoint (path)" / ""
    pfr: float | None = None
    method: str | None = None


@dataclass(frozen=True)
class Build:
    """Everything a report shows about one build folder."""

    root: Path
    label: str
    board: str | None
    part: str | None
    clock_ns: float
    layers: list[Layer]
    total: dict[str, float]  # estimate_layer_resources.json["total"]
    performance: dict[str, Any]  # estimate_network_performance.json
    capacity: dict[str, int] | None  # the board's LUT/FF/BRAM_18K/URAM/DSP (the manifest's)
    quality: Quality
    synth: Synth | None
    target_fps: float | None = None

    def layer(self, name: str) -> Layer | None:
        return next((la for la in self.layers if la.name == name), None)


# ---------------------------------------------------------------- files
def read_report(path: Path, what: str) -> Any:
    """JSON content of a report file; a missing or unreadable file is a BnnflowError naming it."""
    if not path.is_file():
        raise BnnflowError(f"{path}: missing ({what}); {_REBUILD}")
    return read_json(path, f"malformed {what}, not valid JSON", _REBUILD)


def _number(value: Any, path: Path, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BnnflowError(f"{path}: malformed FINN report, {where} is {value!r}, expected a number; {_REBUILD}")
    return value


def _read_cycles(path: Path) -> dict[str, float]:
    obj = read_report(path, "FINN's per-layer cycle estimates")
    if not isinstance(obj, dict) or not obj:
        raise BnnflowError(f"{path}: malformed FINN report, expected an object of layer -> cycles; {_REBUILD}")
    return {k: _number(v, path, f"the cycles of {k}") for k, v in obj.items()}


def _read_resources(path: Path) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    obj = read_report(path, "FINN's per-layer resource estimates")
    if not isinstance(obj, dict) or not isinstance(obj.get("total"), dict):
        raise BnnflowError(
            f"{path}: malformed FINN report, expected layer -> resources and a 'total' entry; {_REBUILD}"
        )
    out: dict[str, dict[str, float]] = {}
    for name, res in obj.items():
        if not isinstance(res, dict):
            raise BnnflowError(f"{path}: malformed FINN report, entry {name!r} is not an object; {_REBUILD}")
        for key in RESOURCE_KEYS:
            if key not in res:
                raise BnnflowError(f"{path}: malformed FINN report, entry {name!r} has no {key}; {_REBUILD}")
        out[name] = {k: _number(v, path, f"{name}.{k}") for k, v in res.items()}
    total = out.pop("total")
    return out, total


def _read_performance(path: Path) -> dict[str, Any]:
    obj = read_report(path, "FINN's network performance estimate")
    if not isinstance(obj, dict):
        raise BnnflowError(f"{path}: malformed FINN report, expected an object; {_REBUILD}")
    for key in PERFORMANCE_KEYS:
        if key not in obj:
            raise BnnflowError(f"{path}: malformed FINN report, no {key!r}; {_REBUILD}")
        if key != "max_cycles_node_name":
            _number(obj[key], path, key)
    return obj


# ---------------------------------------------------------------- graph
def _bits(dtype_name: str) -> int:
    from qonnx.core.datatype import DataType

    return int(DataType[dtype_name].bitwidth())


def graph_layers(accel_path: Path) -> dict[str, dict[str, Any]]:
    """Op type, MW/MH/PE/SIMD and weight/accumulator bits of each accelerator node.

    Weight bits are given for matrix layers only (nodes with an ``MW``
    attribute): elsewhere FINN's ``weightDataType`` means thresholds.
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    try:
        model = ModelWrapper(str(accel_path))
    except Exception as exc:  # onnx raises several types for damaged files
        raise BnnflowError(f"{accel_path}: cannot read the ONNX graph ({exc}); {_REBUILD}") from exc
    out: dict[str, dict[str, Any]] = {}
    for node in model.graph.node:
        info: dict[str, Any] = {"op_type": node.op_type}
        try:
            inst = getCustomOp(node)
        except Exception:  # a plain ONNX node: no FINN attributes
            out[node.name] = info
            continue
        types = inst.get_nodeattr_types()
        for attr, key in (("MW", "mw"), ("MH", "mh"), ("PE", "pe"), ("SIMD", "simd")):
            if attr in types:
                info[key] = int(inst.get_nodeattr(attr))
        if "MW" in types:
            if "weightDataType" in types:
                info["weight_bits"] = _bits(inst.get_nodeattr("weightDataType"))
            if "accDataType" in types:
                info["acc_bits"] = _bits(inst.get_nodeattr("accDataType"))
        out[node.name] = info
    return out


# ---------------------------------------------------------------- quality
def read_sim(path: Path) -> dict[str, Any] | None:
    """``DIR/sim.json``, the simulator's report, or None when there is none; one that is not JSON or
    has no ``accuracy`` between 0 and 1 (or null) is a BnnflowError saying to rerun ``bnnflow sim``."""
    if not path.is_file():
        return None
    redo = f"write it again with `bnnflow sim {path.parent}`"
    rep = read_json(path, "malformed simulator report, not valid JSON", redo)
    acc = rep.get("accuracy") if isinstance(rep, dict) else None
    if (
        not isinstance(rep, dict)
        or "accuracy" not in rep
        or not (acc is None or (isinstance(acc, (int, float)) and not isinstance(acc, bool) and 0 <= acc <= 1))
    ):
        raise BnnflowError(f"{path}: malformed simulator report (no 'accuracy' between 0 and 1); {redo}")
    return rep


def _quality(build: BuildDir) -> Quality:
    """Accuracy from the simulator's report when present, else the checkpoint's stored figures (as
    the manifest recorded them); pruning from the manifest."""
    m = build.manifest
    pruning = m.pruning or {}
    pfr, method = pruning.get("pfr"), pruning.get("method")
    sim = read_sim(build.sim_json)
    if sim is not None:
        return Quality(sim["accuracy"], sim.get("n"), f"simulator ({build.sim_json.name})", pfr, method)
    if m.checkpoint is not None:
        return Quality(m.accuracy, m.accuracy_n, f"checkpoint ({Path(m.checkpoint).name})", pfr, method)
    return Quality(pfr=pfr, method=method)


# ---------------------------------------------------------------- build
def read_build(path: Path | str, label: str | None = None) -> Build:
    """Read a build folder written by ``bnnflow build`` (FINN's builder layout)."""
    build = open_build(path)
    rdir = build.report_dir
    cycles = _read_cycles(rdir / CYCLES)
    resources, total = _read_resources(rdir / RESOURCES)
    performance = _read_performance(rdir / PERFORMANCE)
    graph = graph_layers(build.accel)
    names = list(cycles) + [n for n in resources if n not in cycles]
    unknown = [n for n in names if n not in graph]
    if unknown:
        raise BnnflowError(
            f"{rdir / CYCLES}: layers {unknown} are not in {build.accel}; the reports and the "
            f"graph come from different builds; {_REBUILD}"
        )
    layers = [Layer(name=n, cycles=cycles.get(n), resources=resources.get(n, {}), **graph[n]) for n in names]
    m = build.manifest
    return Build(
        root=build.root,
        label=label or build.root.name,
        board=m.board,
        part=m.part,
        clock_ns=build.clock_ns,
        layers=layers,
        total=total,
        performance=performance,
        capacity=m.capacity,
        quality=_quality(build),
        synth=read_synth(build),
        target_fps=None if m.target_fps is None else float(m.target_fps),
    )
