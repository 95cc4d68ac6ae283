"""Folding with the board in mind: folding JSON checks and the resource budget.

Auto-folding for a target FPS is FINN's own ``SetFolding`` (builder step
``step_target_fps_parallelization``): it only tries PE/SIMD values that divide
the layer's dimensions, so pruned widths with few divisors end at PE/SIMD 1 or
the full width (the cycle estimate then shows it). What FINN does not do is
hold the result against the board: :func:`over_budget` compares the estimated
totals (``report/estimate_layer_resources.json``) with the board's capacity,
and :func:`lowered_target` proposes the next, lower target FPS when the
builder is asked to fit.

A folding JSON is FINN's format (``{"Defaults": {...}, "<node>": {"PE": 4,
"SIMD": 8, ...}}``) keyed by finn-plus's node names, i.e. the names of the
specialized graph (``MVAU_hls_0``, ``ConvolutionInputGenerator_rtl_0``,
``Pool_hls_0``, ...). finn-plus lowers MaxPool to a sliding-window generator
plus a ``Pool`` node, so files written for upstream FINN (``StreamingMaxPool``)
name nodes that do not exist; :func:`check_folding` says so before FINN runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError
from bnnflow.files import read_json
from build_flows.boards import RESOURCES, Board

#: Which node attribute each folding factor must divide, by op type (without _hls/_rtl).
DIVIDES: dict[str, dict[str, str]] = {
    "MVAU": {"PE": "MH", "SIMD": "MW"},
    "VVAU": {"PE": "Channels"},
    "ConvolutionInputGenerator": {"SIMD": "IFMChannels"},
    "Thresholding": {"PE": "NumChannels"},
    "Pool": {"PE": "Channels"},
    "LabelSelect": {"PE": "Labels"},
    "FMPadding": {"SIMD": "NumChannels"},
    "StreamingMaxPool": {"PE": "NumChannels"},
    "ChannelwiseOp": {"PE": "NumChannels"},
}


def split_impl(op_type: str) -> tuple[str, str]:
    """A specialized FINN op type as (base op, implementation): ``MVAU_hls`` -> (``MVAU``, ``hls``);
    ``""`` for a node not specialized yet."""
    for suffix in ("_hls", "_rtl"):
        if op_type.endswith(suffix):
            return op_type[: -len(suffix)], suffix[1:]
    return op_type, ""


#: ``mem_mode`` values bnnflow builds: the weights inside the accelerator (FINN's "external" streams
#: them from outside, so neither the simulator nor a bitfile alone has them)
MEM_MODES = ("internal_embedded", "internal_decoupled")


def read_folding(path: Path) -> dict[str, Any]:
    """Load a folding JSON file (FINN's format) or say what is wrong with it."""
    if not path.is_file():
        raise BnnflowError(f"{path}: folding file not found")
    cfg = read_json(
        path,
        "not a valid JSON folding file",
        'a folding file maps node names to attribute objects, e.g. {"MVAU_hls_0": {"PE": 4}}',
    )
    if not isinstance(cfg, dict) or not all(isinstance(v, dict) for v in cfg.values()):
        raise BnnflowError(
            f"{path}: a folding file maps node names to attribute objects, "
            'e.g. {"MVAU_hls_0": {"PE": 4, "SIMD": 8}}'
        )
    for name, attrs in cfg.items():
        if name == "Defaults":
            for attr, value in attrs.items():
                _defaults_entries(path, attr, value)
    for name, _, val in _mem_modes(cfg, path):
        if val not in MEM_MODES:
            raise BnnflowError(
                f"{path}: {name}: mem_mode {val!r} is not supported by bnnflow (the weights must be inside the "
                f"accelerator for `bnnflow sim` and the bitfile); use one of {', '.join(MEM_MODES)}"
            )
    return cfg


def _defaults_entries(path: Path, attr: str, value: Any) -> list[tuple[Any, Any]]:
    """FINN's ``"Defaults": {attr: [value, op_types, value, op_types, ...]}`` as (value, op_types) pairs,
    op_types being "all" or a list of op types; a malformed entry is a BnnflowError."""
    example = f'"Defaults": {{"{attr}": [4, ["MVAU_hls"]]}}'
    if not isinstance(value, list) or not value or len(value) % 2:
        raise BnnflowError(
            f"{path}: Defaults: {attr} must be a list of value, op types pairs, e.g. {example}; got {value!r}"
        )
    pairs = list(zip(value[::2], value[1::2], strict=True))
    for _, ops in pairs:
        if not (isinstance(ops, str) or (isinstance(ops, list) and all(isinstance(o, str) for o in ops))):
            raise BnnflowError(
                f'{path}: Defaults: {attr}: the op types must be "all" or a list of op type '
                f"names, e.g. {example}; got {ops!r}"
            )
        if ops == "all" and len(pairs) > 1:
            raise BnnflowError(f'{path}: Defaults: {attr}: "all" must be its only entry')
    return pairs


def _mem_modes(cfg: dict[str, Any], path: Path) -> list[tuple[str, str, Any]]:
    out = []
    for name, attrs in cfg.items():
        if "mem_mode" not in attrs:
            continue
        if name == "Defaults":
            out += [
                (f"Defaults for {ops}", "mem_mode", v)
                for v, ops in _defaults_entries(path, "mem_mode", attrs["mem_mode"])
            ]
        else:
            out.append((name, "mem_mode", attrs["mem_mode"]))
    return out


def effective_folding(cfg: dict[str, Any], graph: Any, path: Path) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    """Per node of ``graph``: the attributes FINN's ``ApplyConfig`` sets from ``cfg`` (its defaults for
    the node's op type, then the node's own entry) and, per attribute, where it came from."""
    defaults = {attr: _defaults_entries(path, attr, v) for attr, v in cfg.get("Defaults", {}).items()}
    out: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
    for node in graph.graph.node:
        attrs: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for attr, pairs in defaults.items():
            for val, ops in pairs:
                if ops == "all" or node.op_type in ops:
                    attrs[attr], origin[attr] = val, "Defaults"
        for attr, val in cfg.get(node.name, {}).items():
            attrs[attr], origin[attr] = val, node.name
        if attrs:
            out[node.name] = (attrs, origin)
    return out


def check_folding(cfg: dict[str, Any], graph: Any, path: Path) -> None:
    """Check a folding config against the specialized graph (a qonnx ModelWrapper).

    Every named node must exist; PE and SIMD, given for the node or by a
    ``Defaults`` entry for its op type, must be positive integers that
    divide the dimension they fold (MH/MW for an MVAU, the channel count for
    sliding windows, pooling, thresholds), and every HLS MVAU's SIMD (given
    here or left as the graph has it) must be at least MW / 1024, which
    finn-hlslib needs. Raises one BnnflowError naming the node and the values.
    """
    from qonnx.custom_op.registry import getCustomOp

    from build_flows.transforms.hls_mvau_simd import HLS_MVAU_MAX_SF, hls_simd_fits, min_hls_simd

    nodes = {n.name: n for n in graph.graph.node}
    unknown = [k for k in cfg if k != "Defaults" and k not in nodes]
    if unknown:
        raise BnnflowError(
            f"{path}: no node named {', '.join(unknown)} in this network's accelerator; its nodes are "
            f"{', '.join(nodes)} (finn-plus names, e.g. MaxPool becomes ConvolutionInputGenerator + Pool)"
        )
    effective = effective_folding(cfg, graph, path)
    for name, (attrs, origin) in effective.items():
        node = nodes[name]
        rules = DIVIDES.get(split_impl(node.op_type)[0], {})
        for factor in ("PE", "SIMD"):
            if factor not in attrs:
                continue
            val = attrs[factor]
            where = f"{name} ({factor} from Defaults)" if origin[factor] == "Defaults" else name
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise BnnflowError(f"{path}: {where}: {factor} must be a positive integer, got {val!r}")
            if factor in rules:
                dim_name = rules[factor]
                dim = int(getCustomOp(node).get_nodeattr(dim_name))
                if dim % val:
                    divisors = [d for d in range(1, dim + 1) if dim % d == 0]
                    prefix = (
                        f"Defaults: {factor}={val} for {node.op_type} does not fit {name}; "
                        if origin[factor] == "Defaults"
                        else ""
                    )
                    raise BnnflowError(
                        f"{path}: {prefix}{name}: {factor}={val} does not divide {dim_name}={dim}; "
                        f"use one of {divisors}"
                    )
    for node in graph.graph.node:
        if node.op_type != "MVAU_hls":
            continue
        inst = getCustomOp(node)
        mw = int(inst.get_nodeattr("MW"))
        simd = effective.get(node.name, ({}, {}))[0].get("SIMD", inst.get_nodeattr("SIMD"))
        if not hls_simd_fits(mw, simd):
            raise BnnflowError(
                f"{path}: {node.name}: SIMD={simd} is below finn-hlslib's minimum MW / {HLS_MVAU_MAX_SF} for "
                f"MW={mw}; use SIMD >= {min_hls_simd(mw)} (a divisor of {mw})"
            )


def over_budget(totals: dict[str, float], board: Board) -> list[str]:
    """Resources whose estimated total exceeds the board, as 'LUT 61,234 > 53,200' strings."""
    out = []
    for r in RESOURCES:
        used, cap = float(totals.get(r, 0.0)), board.capacity.get(r, 0)
        if used > cap:
            out.append(f"{r} {used:,.0f} > {cap:,}")
    return out


def utilization(totals: dict[str, float], board: Board) -> dict[str, float]:
    """Estimated fraction of the board used, per resource the board has."""
    return {r: float(totals.get(r, 0.0)) / board.capacity[r] for r in RESOURCES if board.capacity.get(r)}


def lowered_target(target_fps: float, totals: dict[str, float], board: Board) -> int:
    """The next target FPS to try when ``target_fps`` does not fit.

    Scales by the worst over-use ratio (resources grow at most about linearly
    with parallelism) and by at least 0.8, so a search ends in a few builds.
    """
    worst = max(float(totals.get(r, 0.0)) / board.capacity[r] for r in RESOURCES if board.capacity.get(r))
    factor = min(0.8, 1.0 / worst) if worst > 0 else 0.8
    return max(1, int(target_fps * factor))
