"""Drive each RTL node of a build through its Verilated HDL and compare with the simulator.

For every ``*_rtl`` node of the accelerator graph, the node's input tensor as
the simulator computes it on real test images is packed into stream words
(:mod:`hw.rtl.streams`), fed through the node's compiled HDL
(:mod:`hw.rtl.compile`, ``harness.cpp``) and the output stream is compared bit
for bit, element by element, with the simulator's output tensor packed the
same way. Each node runs twice: on all images with random input gaps and
output back-pressure (seeded), which exercises the handshake, and on the first
image free-running, whose cycles from the first input word to the last output
word stand beside FINN's estimate (``get_exp_cycles``). Both runs' elements
and mismatches are counted.

Only node types in :data:`DRIVEN` (one input stream, one output stream, no
AXI-lite) are driven; any other RTL node is reported ``not driven: <op_type>``
(with the reason where one is known).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow.errors import BnnflowError
from hw.rtl import streams
from hw.rtl.compile import Compiled, Ports, compile_node, verilator

#: RTL node types whose stream behaviour the harness covers (FINN names, with the suffix).
DRIVEN = frozenset(
    {
        "Thresholding_rtl",
        "ConvolutionInputGenerator_rtl",
        "Reshape_rtl",
        "StreamingDataWidthConverter_rtl",
        "FMPadding_rtl",
        "StreamingFIFO_rtl",
    }
)
GAP_PCT = 30  # percent of cycles the source leaves empty before offering a word
STALL_PCT = 30  # percent of cycles the sink holds TREADY low
IDLE_CYCLES = 20000  # cycles without any handshake before a run counts as hung
RUN_TIMEOUT_S = 600


@dataclass
class NodeResult:
    """One RTL node's verdict (``driven`` False: ``reason`` says why, the counts are None)."""

    node: str
    op_type: str
    driven: bool
    reason: str = ""
    images: int = 0
    elements: int | None = None
    mismatches: int | None = None
    cycles: int | None = None  # free-running, first input to last output, one image
    finn_cycles: int | None = None  # FINN's get_exp_cycles
    cycles_backpressure: int | None = None  # all images with gaps and stalls
    protocol_violations: int | None = None
    timed_out: bool | None = None
    compile_s: float | None = None
    run_s: float | None = None
    cached: bool | None = None

    @property
    def ok(self) -> bool:
        return (not self.driven) or (self.mismatches == 0 and self.protocol_violations == 0 and not self.timed_out)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _finn_settings() -> None:
    """FINN's file lists name finn-rtllib through its global settings, which only its CLI sets up."""
    from finn.util import settings

    try:
        settings.get_settings()
    except Exception:  # FINNUserError: not started through FINN's CLI
        settings.initialize_dummy_settings()


def why_not_driven(inst: Any) -> str | None:
    """None when the harness can drive this RTL node, else the report's reason."""
    op = inst.onnx_node.op_type
    if op not in DRIVEN:
        return f"not driven: {op}"
    if op == "StreamingFIFO_rtl" and inst.get_nodeattr("impl_style") != "rtl":
        return f"not driven: {op} (impl_style {inst.get_nodeattr('impl_style')}: FINN's FIFO-sizing gauge, no hardware)"
    intf = inst.get_verilog_top_module_intf_names()
    if len(intf["s_axis"]) != 1 or len(intf["m_axis"]) != 1 or intf.get("axilite") or intf.get("aximm"):
        return f"not driven: {op} (needs streams or AXI ports beyond one input and one output)"
    if not inst.get_nodeattr("code_gen_dir_ipgen"):
        return f"not driven: {op} (no generated HDL: the build stopped before code generation)"
    return None


def ports_of(inst: Any) -> Ports:
    intf = inst.get_verilog_top_module_intf_names()
    return Ports(
        clk=intf["clk"][0],
        rst_n=intf["rst"][0],
        s_axis=intf["s_axis"][0][0],
        m_axis=intf["m_axis"][0][0],
        in_bytes=inst.get_instream_width_padded() // 8,
        out_bytes=inst.get_outstream_width_padded() // 8,
    )


def compile_inst(inst: Any) -> Compiled:
    """The harness for this node's HDL, exactly the files FINN lists for it."""
    _finn_settings()
    hdl = [Path(p) for p in inst.get_rtl_file_list(abspath=True)]
    return compile_node(inst.onnx_node.name, hdl, inst.get_nodeattr("gen_top_module"), ports_of(inst))


def run_harness(
    exe: Path,
    cwd: Path,
    words: np.ndarray,
    n_out: int,
    out_bytes: int,
    seed: int,
    gap_pct: int,
    stall_pct: int,
    idle_cycles: int = IDLE_CYCLES,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Stream ``words`` (n, in_bytes) through the harness; the received words and its statistics.

    It runs in ``cwd`` (the node's code generation folder), where the HDL's
    ``$readmemh`` paths point.
    """
    with tempfile.TemporaryDirectory(prefix="bnnflow-rtl-") as tmp:
        fin, fout = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        fin.write_bytes(np.ascontiguousarray(words, dtype=np.uint8).tobytes())
        cmd = [
            str(exe),
            str(fin),
            str(fout),
            str(len(words)),
            str(n_out),
            str(seed),
            str(gap_pct),
            str(stall_pct),
            str(idle_cycles),
        ]
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
        if res.returncode != 0:
            raise BnnflowError(
                f"{exe}: the RTL harness failed ({res.stderr.strip() or res.returncode}); "
                f"delete {exe.parent} to compile it again"
            )
        stats = json.loads(res.stdout.strip().splitlines()[-1])
        got = np.frombuffer(fout.read_bytes(), dtype=np.uint8).reshape(-1, out_bytes)
    return got, stats


def hw_order(inst: Any, y: np.ndarray) -> np.ndarray:
    """``y`` (a node's output in FINN's Python layout) in the order the node's HDL streams it.

    A depthwise sliding-window generator streams each SIMD-wide channel group's
    whole window before the next group (channel folds outside the kernel
    positions), where FINN's Python model keeps the im2col order (kernel
    positions outside the channels); FINN's downstream depthwise layers read the
    former in hardware and the latter in Python, so both are right in their own
    world and the co-simulation compares in the hardware's.
    """
    if not inst.onnx_node.op_type.startswith("ConvolutionInputGenerator") or not inst.get_nodeattr("depthwise"):
        return y
    k = int(np.prod(inst.get_nodeattr("ConvKernelDim")))
    ch, simd = int(inst.get_nodeattr("IFMChannels")), int(inst.get_nodeattr("SIMD"))
    lead = y.shape[:-1]
    return y.reshape(*lead, k, ch // simd, simd).swapaxes(-3, -2).reshape(y.shape)


def drive(
    inst: Any, x: np.ndarray, y: np.ndarray, seed: int = 0, gap_pct: int = GAP_PCT, stall_pct: int = STALL_PCT
) -> NodeResult:
    """Feed ``x`` (the node's input, N images in FINN's normal layout) through the node's HDL and
    compare its output with ``y`` (the expected output tensor)."""
    from qonnx.core.datatype import DataType

    name, op = inst.onnx_node.name, inst.onnx_node.op_type
    reason = why_not_driven(inst)
    if reason is not None:
        return NodeResult(name, op, False, reason)
    comp = compile_inst(inst)
    ports = ports_of(inst)
    in_dt, out_dt = inst.get_input_datatype(0), inst.get_output_datatype(0)
    fin, fout = tuple(inst.get_folded_input_shape(0)), tuple(inst.get_folded_output_shape(0))
    n = len(x)
    y = hw_order(inst, y)
    words_in = streams.to_words(x, fin, in_dt, ports.in_bytes)
    expected = streams.to_words(y, fout, out_dt, ports.out_bytes)
    per_word, bits = fout[-1], streams.stream_dtype(out_dt).bitwidth()
    if out_dt == DataType["BIPOLAR"]:
        bits = 1
    cwd = Path(inst.get_nodeattr("code_gen_dir_ipgen"))
    finn_cycles = int(inst.get_exp_cycles())
    idle = IDLE_CYCLES + 2 * finn_cycles
    t0 = time.perf_counter()
    got_bp, st_bp = run_harness(comp.exe, cwd, words_in, len(expected), ports.out_bytes, seed, gap_pct, stall_pct, idle)
    per_image_in, per_image_out = len(words_in) // n, len(expected) // n
    got_free, st_free = run_harness(
        comp.exe, cwd, words_in[:per_image_in], per_image_out, ports.out_bytes, seed, 0, 0, idle
    )
    run_s = time.perf_counter() - t0
    mism = streams.element_mismatches(got_bp, expected, per_word, bits) + streams.element_mismatches(
        got_free, expected[:per_image_out], per_word, bits
    )
    free_cycles = (
        st_free["last_output"] - st_free["first_input"] + 1
        if st_free["first_input"] >= 0 and st_free["last_output"] >= 0
        else None
    )
    return NodeResult(
        node=name,
        op_type=op,
        driven=True,
        images=n,
        elements=(len(expected) + per_image_out) * per_word,
        mismatches=mism,
        cycles=free_cycles,
        finn_cycles=finn_cycles,
        cycles_backpressure=st_bp["cycles"],
        protocol_violations=st_bp["protocol_violations"] + st_free["protocol_violations"],
        timed_out=bool(st_bp["timed_out"] or st_free["timed_out"]),
        compile_s=round(comp.seconds, 2),
        run_s=round(run_s, 3),
        cached=comp.cached,
    )


def cosim_build(
    build_dir: Path | str,
    data_dir: Path | str | None = None,
    limit: int = 3,
    seed: int = 0,
    from_artifacts: bool = False,
) -> dict[str, Any]:
    """Every RTL node of a build against the simulator on its data set's first ``limit`` test images."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from bnnflow import data, validate
    from hw import run, verify

    validate.count(limit, "--limit")
    verilator()  # a missing verilator is one line before any work
    ld = run.load(build_dir, from_artifacts)
    dataset = verify.dataset_of(ld.build)
    if dataset is None:
        raise BnnflowError(
            f"{ld.build.root}: manifest.json names no data set or checkpoint, so there are no "
            "test images to drive the RTL nodes with"
        )
    split = data.load(dataset, "test", data_dir).subset(limit)
    x = verify.images_as_input(split.images, ld.graph.input_dtype)
    _, tensors = ld.sim.run(x, intermediates=True)
    model = ModelWrapper(str(ld.build.accel))
    results, hls = [], 0
    for node in model.graph.node:
        if not node.op_type.endswith("_rtl"):
            hls += node.op_type.endswith("_hls")
            continue
        inst = getCustomOp(node)
        src, dst = node.input[0], node.output[0]
        if src not in tensors or dst not in tensors:
            raise BnnflowError(
                f"{ld.build.accel}: the simulator has no tensor {src if src not in tensors else dst} "
                f"of node {node.name}"
            )
        results.append(drive(inst, tensors[src], tensors[dst], seed))
    return {
        "build": str(ld.build.root),
        "dataset": dataset,
        "images": len(split),
        "seed": seed,
        "gap_pct": GAP_PCT,
        "stall_pct": STALL_PCT,
        "hls_nodes_not_cosimulated": hls,
        "nodes": [r.as_dict() for r in results],
        "ok": all(r.ok for r in results),
    }
