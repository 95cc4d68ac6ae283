"""RTL co-simulation (hw/rtl/): FINN's generated HDL of every RTL node, run with Verilator, against the
simulator, on real builds and real test images, with random input gaps and output back-pressure.

The harness's handshake is checked on a stream buffer FINN generates (StreamingDataWidthConverter_rtl,
finn-rtllib's elastic vpc: it must pass every element unchanged whatever the gaps and stalls, and fill
up and stop taking input when the sink stops). A parameter altered in a copy of a generated wrapper and a
flipped input bit must both show up as mismatches. `make test` installs Verilator (`make verilator`);
without it these tests skip with that hint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from qonnx.core.datatype import DataType

from helpers import save_random_net
from bnnflow import data
from build_flows.build import build
from hw import run, verify
from hw.rtl import compile as rtl_compile
from hw.rtl import cosim, streams

REPO = Path(__file__).resolve().parent.parent
TFC_CKPT = REPO / "models" / "zoo" / "tfc_w1a1.pt"
CNV_PRUNED_CKPT = REPO / "models" / "zoo" / "cnv_w1a1_pruned.pt"

pytestmark = pytest.mark.skipif(shutil.which("verilator") is None,
                                reason="verilator not installed (`make verilator` installs Debian's package)")


def _build(ckpt: Path, out: Path, target_fps: int) -> Path:
    build(ckpt, "Pynq-Z1", out, target_fps=target_fps, n_check=0)
    return out


def _node_inputs(build_dir: Path, n: int) -> tuple[object, dict[str, np.ndarray]]:
    """The accelerator graph and every tensor the simulator computes on the first ``n`` test images."""
    from qonnx.core.modelwrapper import ModelWrapper

    ld = run.load(build_dir)
    split = data.load(verify.dataset_of(ld.build), "test").subset(n)
    _, tensors = ld.sim.run(verify.images_as_input(split.images, ld.graph.input_dtype), intermediates=True)
    return ModelWrapper(str(ld.build.accel)), tensors


def _all_rtl_nodes_exact(build_dir: Path, limit: int = 2) -> dict:
    """Every driven RTL node exact; the others named with Verilator's limit as the reason."""
    rep = cosim.cosim_build(build_dir, limit=limit, seed=5)
    assert rep["nodes"], "the build has no RTL nodes"
    for r in rep["nodes"]:
        if r["op_type"] in cosim.VERILATOR_CANNOT:
            assert not r["driven"] and cosim.VERILATOR_CANNOT[r["op_type"]] in r["reason"], r
            continue
        assert r["driven"], r["reason"]
        assert r["elements"] > 0 and r["mismatches"] == 0, r
        assert r["protocol_violations"] == 0 and not r["timed_out"], r
        assert r["cycles_backpressure"] > r["cycles"] > 0, r  # the gaps and stalls did slow it down
    assert rep["ok"]
    return rep


# ---------------------------------------------------------------- packing and handshake
def test_stream_words_are_finns_rtlsim_packing() -> None:
    from finn.util.data_packing import npy_to_rtlsim_input

    rng = np.random.default_rng(0)
    for dt, folded, width in [("UINT8", (1, 4, 4, 3, 1), 8), ("INT8", (1, 5, 3), 24), ("BINARY", (1, 3, 36), 40),
                              ("INT4", (1, 2, 5), 24), ("BIPOLAR", (1, 2, 100), 104)]:
        d = DataType[dt]
        x = rng.integers(d.min(), d.max() + 1, size=(2,) + folded[1:])
        if dt == "BIPOLAR":
            x = 2 * rng.integers(0, 2, size=x.shape) - 1
        words = streams.to_words(x, folded, d, width // 8)
        ref = npy_to_rtlsim_input(x.astype(np.float32) if dt != "BIPOLAR" else (x > 0).astype(np.float32),
                                  streams.stream_dtype(d), width)
        assert [int.from_bytes(bytes(w), "little") for w in words] == ref, dt


@pytest.fixture(scope="module")
def fifo(tmp_path_factory: pytest.TempPathFactory) -> object:
    """FINN's StreamingDataWidthConverter_rtl (5-bit elements, 4 per input word, 2 per output word) with
    its HDL written by FINN's code generation: finn-rtllib's vpc, an elastic stream buffer.

    (The FIFOs themselves, StreamingFIFO_rtl's fifo.sv and finn-rtllib's skid.sv, need a newer
    Verilator than Debian bookworm's 5.006.)"""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    cosim._finn_settings()
    shape = [1, 100, 8]
    node = helper.make_node("StreamingDataWidthConverter_rtl", ["inp"], ["outp"], name="DWC_rtl_0",
                            domain="finn.custom_op.fpgadataflow.rtl", inShape=shape, outShape=shape,
                            inWidth=20, outWidth=10, dataType="INT5")
    graph = helper.make_graph([node], "dwc", [helper.make_tensor_value_info("inp", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("outp", TensorProto.FLOAT, shape)])
    model = ModelWrapper(helper.make_model(graph))
    inst = getCustomOp(model.graph.node[0])
    inst.set_nodeattr("code_gen_dir_ipgen", str(tmp_path_factory.mktemp("dwc")))
    inst.generate_hdl(model, "xc7z020clg400-1", 10.0)
    return inst


def test_stream_buffer_passes_every_element_under_backpressure(fifo: object) -> None:
    x = np.random.default_rng(1).integers(-16, 16, size=(3, 100, 8))
    assert fifo.get_folded_input_shape()[-1] == 4 and fifo.get_folded_output_shape()[-1] == 2
    cycles = {}
    for seed, gap, stall in [(0, 0, 0), (1, 50, 50), (2, 10, 90), (3, 90, 10)]:
        r = cosim.drive(fifo, x, x, seed=seed, gap_pct=gap, stall_pct=stall)
        assert r.mismatches == 0 and r.protocol_violations == 0 and not r.timed_out, (seed, r)
        assert r.elements == 4 * 100 * 8  # three images back-pressured, one free-running
        cycles[stall] = r.cycles_backpressure
    # the sink's stalls reach the source through TREADY: 90% stalls take about 10x the cycles
    assert cycles[0] < 1300 and cycles[90] > 5 * cycles[0]
    # a sink that never takes a word: the buffer fills, stops taking input, and the run times out
    comp = cosim.compile_inst(fifo)
    words = streams.to_words(x, fifo.get_folded_input_shape(), DataType["INT5"], 3)
    got, st = cosim.run_harness(comp.exe, Path(fifo.get_nodeattr("code_gen_dir_ipgen")), words, 1200, 2, 0, 0, 100,
                                idle_cycles=500)
    assert st["timed_out"] and st["received"] == 0 and 0 < st["sent"] <= 4 and st["protocol_violations"] == 0


def test_fifo_output_is_checked(fifo: object) -> None:
    """The comparison can fail: one element expected other than what went in, and missing words count."""
    x = np.zeros((1, 100, 8), dtype=np.int64)
    y = x.copy()
    y[0, 17, 2] = 3
    assert cosim.drive(fifo, x, y, seed=0).mismatches == 2  # that element, in both runs
    comp = cosim.compile_inst(fifo)
    words = streams.to_words(x, fifo.get_folded_input_shape(), DataType["INT5"], 3)
    got, _ = cosim.run_harness(comp.exe, Path(fifo.get_nodeattr("code_gen_dir_ipgen")), words, 400, 2, 0, 30, 30)
    expected = streams.to_words(x, fifo.get_folded_output_shape(), DataType["INT5"], 2)
    assert streams.element_mismatches(got, expected, 2, 5) == 0
    assert streams.element_mismatches(got[:350], expected, 2, 5) == 50 * 2


def test_node_types_not_driven_are_named() -> None:
    from onnx import helper
    from qonnx.custom_op.registry import getCustomOp

    node = helper.make_node("StreamingFIFO_rtl", ["a"], ["b"], domain="finn.custom_op.fpgadataflow.rtl",
                            depth=4, folded_shape=[1, 2], normal_shape=[1, 2], dataType="INT2")
    assert cosim.why_not_driven(getCustomOp(node)).startswith("not driven: StreamingFIFO_rtl (finn-rtllib's fifo.sv")
    mvau = helper.make_node("MVAU_rtl", ["a", "w"], ["b"], domain="finn.custom_op.fpgadataflow.rtl", MW=4, MH=4,
                            SIMD=1, PE=1, inputDataType="INT8", weightDataType="INT8", outputDataType="INT32",
                            numInputVectors=[1])
    r = cosim.drive(getCustomOp(mvau), np.zeros((1, 4)), np.zeros((1, 4)))
    assert not r.driven and r.reason == "not driven: MVAU_rtl" and r.elements is None


# ---------------------------------------------------------------- TFC (a real build, default run)
@pytest.fixture(scope="module")
def tfc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(TFC_CKPT, tmp_path_factory.mktemp("tfc") / "build", target_fps=10000)


def test_tfc_rtl_nodes_equal_simulator_and_cache(tfc: Path) -> None:
    rep = _all_rtl_nodes_exact(tfc)
    assert {r["op_type"] for r in rep["nodes"]} == {"Reshape_rtl", "Thresholding_rtl"}
    thr = next(r for r in rep["nodes"] if r["op_type"] == "Thresholding_rtl")
    assert abs(thr["cycles"] - thr["finn_cycles"]) <= 0.05 * thr["finn_cycles"]
    again = cosim.cosim_build(tfc, limit=2, seed=5)  # a second run compiles nothing
    assert all(r["cached"] and r["compile_s"] == 0 for r in again["nodes"])
    assert [r["mismatches"] for r in again["nodes"]] == [0] * len(again["nodes"])


def test_tfc_altered_wrapper_parameter_is_caught(tfc: Path, tmp_path: Path) -> None:
    """BIAS (the output offset) off by one in a copy of the generated Thresholding wrapper (the node's
    code generation folder copied, the node pointed at the copy; the build stays as it is)."""
    model, tensors = _node_inputs(tfc, 2)
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(model.get_nodes_by_op_type("Thresholding_rtl")[0])
    code = tmp_path / "code"
    shutil.copytree(inst.get_nodeattr("code_gen_dir_ipgen"), code)
    inst.set_nodeattr("code_gen_dir_ipgen", str(code))
    wrapper = code / f"{inst.get_nodeattr('gen_top_module')}.v"
    text = wrapper.read_text()
    bias = [line for line in text.splitlines() if "parameter  BIAS" in line]
    assert len(bias) == 1
    value = int(bias[0].split("=")[1].split(",")[0])
    wrapper.write_text(text.replace(bias[0], bias[0].replace(f"= {value},", f"= {value + 1},")))
    node = inst.onnx_node
    r = cosim.drive(inst, tensors[node.input[0]], tensors[node.output[0]], seed=1)
    assert r.driven and r.mismatches > 0
    wrapper.write_text(text)  # as generated again: exact, and from the cache
    r = cosim.drive(inst, tensors[node.input[0]], tensors[node.output[0]], seed=1)
    assert r.mismatches == 0 and r.cached


def test_tfc_flipped_input_bit_is_caught(tfc: Path) -> None:
    """One bit of one pixel flipped on the way into Reshape_rtl (a pure data mover: it must show)."""
    from qonnx.custom_op.registry import getCustomOp

    model, tensors = _node_inputs(tfc, 2)
    node = model.get_nodes_by_op_type("Reshape_rtl")[0]
    x = tensors[node.input[0]].astype(np.int64)  # UINT8 pixels
    x.reshape(-1)[100] ^= 1
    r = cosim.drive(getCustomOp(node), x, tensors[node.output[0]], seed=2)
    assert r.mismatches == 2  # that one element, in both runs (back-pressured and free-running)


def test_sim_rtl_cli(tfc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bnnflow.cli import main

    assert main(["sim", str(tfc), "--rtl", "--limit", "1", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert {"node", "elements", "mismatches", "cycles"} <= set(rep["nodes"][0]) and rep["ok"]
    assert main(["sim", str(tfc), "--rtl", "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "Thresholding_rtl_0" in out and "0 mismatches" in out and "5 HLS nodes" in out


def test_missing_verilator_is_one_line_from_the_cli(tfc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from bnnflow.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["sim", str(tfc), "--rtl"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.splitlines() == [f"bnnflow: error: {rtl_compile.NO_VERILATOR}"]


# ---------------------------------------------------------------- the shipped pruned CNV, a padded net (slow)
@pytest.mark.slow
def test_pruned_cnv_rtl_nodes_equal_simulator(tmp_path: Path) -> None:
    b = _build(CNV_PRUNED_CKPT, tmp_path / "cnvp", target_fps=3000)
    rep = _all_rtl_nodes_exact(b, limit=3)
    ops = [r["op_type"] for r in rep["nodes"]]
    assert ops.count("ConvolutionInputGenerator_rtl") == 8 and "Thresholding_rtl" in ops


@pytest.mark.slow
def test_padded_vgg11_rtl_nodes_equal_simulator(tmp_path: Path) -> None:
    """VGG-11 (reduced widths, random weights, -1 padding before every conv): every sliding-window
    generator exact; its FMPadding_rtl nodes are named as not driven (Verilator 5.006)."""
    ckpt = save_random_net("vgg11", [8, 8, 16, 16, 16, 16, 16, 16], tmp_path / "vgg.pt", seed=2, negative_gamma=0.3)
    b = _build(ckpt, tmp_path / "vgg", target_fps=2000)
    rep = _all_rtl_nodes_exact(b, limit=2)
    assert "FMPadding_rtl" in {r["op_type"] for r in rep["nodes"]}
