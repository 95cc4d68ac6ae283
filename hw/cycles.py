"""Cycle model of the dataflow accelerator, from each layer's folding.

Each layer is a pipeline stage that needs a fixed number of cycles per image
(one output word per cycle after folding by PE/SIMD). The initiation interval
of the whole accelerator is its slowest stage, so throughput is
``clock / max(cycles)``; the latency bound is the sum of cycles along the
longest input-to-output path (pessimistic: no overlap between stages), as in
FINN's ``dataflow_performance``. The per-layer formulas restate
finn-plus 1.6.1's ``get_exp_cycles`` from the attributes alone, so the test
suite can hold them against FINN's ``estimate_layer_cycles.json``: a
difference means the folding we read is not the one FINN estimated.
"""

from __future__ import annotations

from math import prod
from typing import Any

from hw.graph import HWGraph, Layer


def _stream(layer: Layer, par_attr: str = "PE") -> int:
    """Cycles of a layer streaming its output once: all but the last axis times last/PE."""
    shape = layer.out_shapes[0]
    par = int(layer.attrs.get(par_attr, 1) or 1)
    return prod(shape[:-1]) * (shape[-1] // par)


def _swg(layer: Layer) -> int:
    a = layer.attrs
    if layer.impl != "rtl":
        return 0  # FINN gives no estimate for the generic or HLS generator
    simd, ch = int(a["SIMD"]), int(a["IFMChannels"])
    k_h, k_w = a["ConvKernelDim"]
    ifm_h, ifm_w = a["IFMDim"]
    ofm_h, ofm_w = a["OFMDim"]
    s_h, s_w = a["Stride"]
    d_h, d_w = a["Dilation"]
    depthwise = int(a.get("depthwise", 0))
    if int(a.get("parallel_window", 0)) or (k_h == 1 and k_w == 1):
        return ifm_h * ifm_w * (ch // simd) + 2
    cf = ch // simd
    if ifm_h == 1 or ifm_w == 1:  # 1D: normalize to [1, D]
        if ifm_w == 1:
            ifm_h, ifm_w, ofm_h, ofm_w = ifm_w, ifm_h, ofm_w, ofm_h
            k_h, k_w, s_h, s_w = k_w, k_h, s_w, s_h
        if depthwise:
            out = ofm_w * k_w * cf + (cf - 1) * k_w
            inp = ifm_w * cf + cf * (k_w - 1) * (s_w - 1)
            return max(out, inp) + 2
        return ofm_w * k_w * cf + 2
    buffer_min = ((k_h - 1) * d_h * ifm_w + (k_w - 1) * d_w + 1) * cf
    write_block = ofm_w * k_w * k_h * cf
    read_block = s_w * ifm_w * cf
    block = max(write_block, read_block)
    if depthwise:
        block += ofm_w * (s_w - 1) * (cf - 1)
    cycles = buffer_min + ofm_h * block
    if depthwise:
        cycles += (s_h - 1) * ifm_w * cf
    return cycles


def layer_cycles(layer: Layer) -> int:
    """Cycles per image of one layer at its folding (0 for layers FINN does not count)."""
    a = layer.attrs
    op = layer.op
    if op == "MVAU":
        return (
            (int(a["MH"]) // int(a["PE"]))
            * (int(a["MW"]) // int(a["SIMD"]))
            * prod(a["numInputVectors"])
            * int(a.get("TH", 1) or 1)
        )
    if op == "VVAU":
        k = prod(a["Kernel"])
        return int(a["Channels"]) * k // int(a["PE"]) // int(a["SIMD"]) * prod(a["Dim"])
    if op in (
        "Thresholding",
        "Reshape",
        "DuplicateStreams",
        "AddStreams",
        "ElementwiseAdd",
        "ElementwiseSub",
        "ElementwiseMul",
    ):
        return _stream(layer)
    if op == "LabelSelect":
        return int(a["Labels"]) // int(a["PE"])
    if op == "Pool":
        k = prod(a["KernelSize"])
        return int(a["Channels"]) * k // int(a["PE"]) * prod(a["OutImgDims"]) * int(a["BatchSize"])
    if op == "FMPadding":
        return int(a["NumChannels"]) // int(a["SIMD"]) * int(a["numInputVectors"]) * prod(layer.out_shapes[0][1:3])
    if op == "GlobalAccPool":
        ch, pe = int(a["NumChannels"]), int(a["PE"])
        return prod(layer.in_shapes[0][:-1]) * (ch // pe) + ch // pe
    if op == "ConvolutionInputGenerator":
        return _swg(layer)
    return 0  # FIFOs, width converters and software nodes take no estimate in FINN


def cycle_report(graph: HWGraph, clock_ns: float) -> dict[str, Any]:
    """Per-layer cycles, initiation interval, latency bound and FPS at ``clock_ns``."""
    layers = graph.hw_layers()
    cycles = {layer.name: int(layer_cycles(layer)) for layer in layers}
    producer = {t: layer.name for layer in layers for t in layer.outputs}
    done: dict[str, int] = {}
    for layer in layers:  # graph order is topological
        preds = [done[producer[t]] for t in layer.inputs if t in producer]
        done[layer.name] = cycles[layer.name] + max(preds, default=0)
    ii = max(cycles.values(), default=0)
    bottleneck = max(cycles, key=lambda k: cycles[k]) if cycles else ""
    latency = max(done.values(), default=0)
    return {
        "layers": cycles,
        "initiation_interval_cycles": ii,
        "bottleneck": bottleneck,
        "latency_cycles": latency,
        "clock_ns": clock_ns,
        "fps_estimate": 1e9 / (clock_ns * ii) if ii else None,
        "latency_ns": latency * clock_ns,
    }
