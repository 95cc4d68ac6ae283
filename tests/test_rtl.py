"""RTL co-simulation (hw/rtl/): FINN's generated HDL of every RTL node, run with Verilator, against the
simulator, on real builds and real test images, with random input gaps and output back-pressure.

The harness's handshake is checked on FINN's own FIFO (a StreamingFIFO_rtl that FINN's InsertFIFO puts
into the TFC graph: every word out in order whatever the gaps and stalls, full and no longer taking input
when the sink stops, and a copy of its wrapper with the ready wired wrong is caught) and on a width
converter (StreamingDataWidthConverter_rtl). A parameter altered in a copy of a generated wrapper and a
flipped input bit must both show up as mismatches. `make test` installs Verilator (`make verilator`);
without it these tests skip with that hint.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from helpers import copy_build, save_random_net
from qonnx.core.datatype import DataType

from bnnflow import data
from bnnflow.files import CACHE_ENV
from build_flows.build import build
from hw import run, verify
from hw.rtl import compile as rtl_compile
from hw.rtl import cosim, streams

REPO = Path(__file__).resolve().parent.parent
PART = "xc7z020clg400-1"  # Pynq-Z1's
#: words a depth-2 StreamingFIFO_rtl holds: fifo.sv builds shallow FIFOs as at least 4 SRL stages
#: and its output register
FIFO_CAPACITY = 5
TFC_CKPT = REPO / "models" / "zoo" / "tfc_w1a1.pt"
CNV_PRUNED_CKPT = REPO / "models" / "zoo" / "cnv_w1a1_pruned.pt"
VGG_WIDTHS = [8, 8, 16, 16, 16, 16, 16, 16]

pytestmark = pytest.mark.skipif(
    shutil.which("verilator") is None, reason="verilator not installed (`make verilator` installs Debian's package)"
)


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
    """Every RTL node driven and exact."""
    rep = cosim.cosim_build(build_dir, limit=limit, seed=5)
    assert rep["nodes"], "the build has no RTL nodes"
    for r in rep["nodes"]:
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
    for dt, folded, width in [
        ("UINT8", (1, 4, 4, 3, 1), 8),
        ("INT8", (1, 5, 3), 24),
        ("BINARY", (1, 3, 36), 40),
        ("INT4", (1, 2, 5), 24),
        ("BIPOLAR", (1, 2, 100), 104),
    ]:
        d = DataType[dt]
        x = rng.integers(d.min(), d.max() + 1, size=(2,) + folded[1:])
        if dt == "BIPOLAR":
            x = 2 * rng.integers(0, 2, size=x.shape) - 1
        words = streams.to_words(x, folded, d, width // 8)
        ref = npy_to_rtlsim_input(
            x.astype(np.float32) if dt != "BIPOLAR" else (x > 0).astype(np.float32), streams.stream_dtype(d), width
        )
        assert [int.from_bytes(bytes(w), "little") for w in words] == ref, dt


@pytest.fixture(scope="module")
def dwc(tmp_path_factory: pytest.TempPathFactory) -> object:
    """FINN's StreamingDataWidthConverter_rtl (5-bit elements, 4 per input word, 2 per output word) with
    its HDL written by FINN's code generation: finn-rtllib's vpc, an elastic stream buffer."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    cosim._finn_settings()
    shape = [1, 100, 8]
    node = helper.make_node(
        "StreamingDataWidthConverter_rtl",
        ["inp"],
        ["outp"],
        name="DWC_rtl_0",
        domain="finn.custom_op.fpgadataflow.rtl",
        inShape=shape,
        outShape=shape,
        inWidth=20,
        outWidth=10,
        dataType="INT5",
    )
    graph = helper.make_graph(
        [node],
        "dwc",
        [helper.make_tensor_value_info("inp", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("outp", TensorProto.FLOAT, shape)],
    )
    model = ModelWrapper(helper.make_model(graph))
    inst = getCustomOp(model.graph.node[0])
    inst.set_nodeattr("code_gen_dir_ipgen", str(tmp_path_factory.mktemp("dwc")))
    inst.generate_hdl(model, PART, 10.0)
    return inst


def test_width_converter_passes_every_element_under_backpressure(dwc: object) -> None:
    x = np.random.default_rng(1).integers(-16, 16, size=(3, 100, 8))
    assert dwc.get_folded_input_shape()[-1] == 4 and dwc.get_folded_output_shape()[-1] == 2
    cycles = {}
    for seed, gap, stall in [(0, 0, 0), (1, 50, 50), (2, 10, 90), (3, 90, 10)]:
        r = cosim.drive(dwc, x, x, seed=seed, gap_pct=gap, stall_pct=stall)
        assert r.mismatches == 0 and r.protocol_violations == 0 and not r.timed_out, (seed, r)
        assert r.elements == 4 * 100 * 8  # three images back-pressured, one free-running
        cycles[stall] = r.cycles_backpressure
    # the sink's stalls reach the source through TREADY: 90% stalls take about 10x the cycles
    assert cycles[0] < 1300 and cycles[90] > 5 * cycles[0]
    # a sink that never takes a word: the buffer fills, stops taking input, and the run times out
    comp = cosim.compile_inst(dwc)
    words = streams.to_words(x, dwc.get_folded_input_shape(), DataType["INT5"], 3)
    got, st = cosim.run_harness(
        comp.exe, Path(dwc.get_nodeattr("code_gen_dir_ipgen")), words, 1200, 2, 0, 0, 100, idle_cycles=500
    )
    assert st["timed_out"] and st["received"] == 0 and 0 < st["sent"] <= 4 and st["protocol_violations"] == 0


def test_width_converter_output_is_checked(dwc: object) -> None:
    """The comparison can fail: one element expected other than what went in, and missing words count."""
    x = np.zeros((1, 100, 8), dtype=np.int64)
    y = x.copy()
    y[0, 17, 2] = 3
    assert cosim.drive(dwc, x, y, seed=0).mismatches == 2  # that element, in both runs
    comp = cosim.compile_inst(dwc)
    words = streams.to_words(x, dwc.get_folded_input_shape(), DataType["INT5"], 3)
    got, _ = cosim.run_harness(comp.exe, Path(dwc.get_nodeattr("code_gen_dir_ipgen")), words, 400, 2, 0, 30, 30)
    expected = streams.to_words(x, dwc.get_folded_output_shape(), DataType["INT5"], 2)
    assert streams.element_mismatches(got, expected, 2, 5) == 0
    assert streams.element_mismatches(got[:350], expected, 2, 5) == 50 * 2


def test_node_types_not_driven_are_named() -> None:
    from onnx import helper
    from qonnx.custom_op.registry import getCustomOp

    for style, reason in [
        ("virtual", "impl_style virtual: FINN's FIFO-sizing gauge, no hardware"),
        ("rtl", "no generated HDL: the build stopped before code generation"),
    ]:
        node = helper.make_node(
            "StreamingFIFO_rtl",
            ["a"],
            ["b"],
            domain="finn.custom_op.fpgadataflow.rtl",
            depth=4,
            folded_shape=[1, 2],
            normal_shape=[1, 2],
            dataType="INT2",
            impl_style=style,
        )
        assert cosim.why_not_driven(getCustomOp(node)) == f"not driven: StreamingFIFO_rtl ({reason})"
    mvau = helper.make_node(
        "MVAU_rtl",
        ["a", "w"],
        ["b"],
        domain="finn.custom_op.fpgadataflow.rtl",
        MW=4,
        MH=4,
        SIMD=1,
        PE=1,
        inputDataType="INT8",
        weightDataType="INT8",
        outputDataType="INT32",
        numInputVectors=[1],
    )
    r = cosim.drive(getCustomOp(mvau), np.zeros((1, 4)), np.zeros((1, 4)))
    assert not r.driven and r.reason == "not driven: MVAU_rtl" and r.elements is None


def test_cache_folders_honour_the_umask(dwc: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiled harness's folders get the mode a plain mkdir gives (the umask's), as every other output
    does: not the 0o700 of the temporary folder it is compiled in, which would hide a shared cache."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    old = os.umask(0o027)
    try:
        comp = cosim.compile_inst(dwc)
    finally:
        os.umask(old)
    assert not comp.cached and comp.exe.parent == tmp_path / "cache" / "rtl" / comp.key
    for folder in (tmp_path / "cache", tmp_path / "cache" / "rtl", comp.exe.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750, folder
    assert stat.S_IMODE(comp.exe.stat().st_mode) == 0o750
    assert sorted(p.name for p in (tmp_path / "cache" / "rtl").iterdir()) == [comp.key]  # no temporary left


# ---------------------------------------------------------------- TFC (a real build, default run)
@pytest.fixture(scope="module")
def tfc(shared_tfc_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_build(shared_tfc_build, tmp_path_factory.mktemp("tfc") / "build")


@pytest.fixture(scope="module")
def tfc_fifo(tfc: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, np.ndarray]:
    """The StreamingFIFO_rtl that FINN's own FIFO insertion puts behind TFC's Reshape_rtl (InsertDWC,
    InsertFIFO with shallow FIFOs and SpecializeLayers, as FINN's step_set_fifo_depths starts), its HDL
    written by FINN's code generation, and the pixels it carries as the simulator computes them on 3
    MNIST test images (the build itself stays as it is: the transformations work on a copy)."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveUniqueNodeNames

    cosim._finn_settings()
    model, tensors = _node_inputs(tfc, 3)
    model = model.transform(InsertDWC()).transform(InsertFIFO(create_shallow_fifos=True))
    model = model.transform(SpecializeLayers(PART)).transform(GiveUniqueNodeNames())
    node = next(
        n
        for n in model.get_nodes_by_op_type("StreamingFIFO_rtl")
        if (model.find_producer(n.input[0]) or n).op_type == "Reshape_rtl"
    )
    inst = getCustomOp(node)
    inst.set_nodeattr("code_gen_dir_ipgen", str(tmp_path_factory.mktemp("fifo")))
    inst.generate_hdl(model, PART, 10.0)
    return inst, tensors[node.input[0]]


def test_fifo_passes_every_word_in_order_under_backpressure(tfc_fifo: tuple[object, np.ndarray]) -> None:
    inst, x = tfc_fifo
    assert inst.get_nodeattr("depth") == 2 and tuple(inst.get_folded_input_shape()) == (1, 784, 1)
    for seed, gap, stall in [(0, 30, 30), (1, 10, 90), (2, 90, 10)]:
        r = cosim.drive(inst, x, x, seed=seed, gap_pct=gap, stall_pct=stall)
        assert r.driven and r.elements == 4 * 784 and r.mismatches == 0, (seed, r)
        assert r.protocol_violations == 0 and not r.timed_out, (seed, r)
    # exact order: three shuffles of all 256 byte values come out word for word as they went in
    comp = cosim.compile_inst(inst)
    cwd = Path(inst.get_nodeattr("code_gen_dir_ipgen"))
    rng = np.random.default_rng(4)
    words = np.concatenate([rng.permutation(256) for _ in range(3)]).astype(np.uint8).reshape(-1, 1)
    got, st = cosim.run_harness(comp.exe, cwd, words, len(words), 1, seed=5, gap_pct=40, stall_pct=60)
    assert np.array_equal(got, words) and st["protocol_violations"] == 0 and not st["timed_out"]
    # a sink that never takes a word: the FIFO fills to its capacity, then stops taking input
    got, st = cosim.run_harness(comp.exe, cwd, words, len(words), 1, 0, 0, 100, idle_cycles=500)
    assert st["timed_out"] and st["received"] == 0 and st["sent"] == FIFO_CAPACITY


@pytest.mark.parametrize(
    "broken",
    [
        # the FIFO's output stage told the sink always takes a word: it moves on while TVALID waits
        (".ordy(out0_V_TREADY)", ".ordy(1'b1)"),
        # the FIFO tells the source it always takes a word: what arrives while it is full is lost
        (".irdy(in0_V_TREADY)", ".irdy()"),
    ],
    ids=["output-ignores-ready", "input-always-ready"],
)
def test_fifo_broken_handshake_is_caught(
    tfc_fifo: tuple[object, np.ndarray], broken: tuple[str, str], tmp_path: Path
) -> None:
    """A copy of the generated FIFO wrapper with one ready wired wrong: under back-pressure the harness
    must see it (lost or changed words; an output word withdrawn before it was taken)."""
    inst, x = tfc_fifo
    generated = inst.get_nodeattr("code_gen_dir_ipgen")
    code = tmp_path / "code"
    shutil.copytree(generated, code)
    wrapper = code / f"{inst.get_nodeattr('gen_top_module')}.v"
    text = wrapper.read_text()
    old, new = broken
    assert old in text
    text = text.replace(old, new)
    if new == ".irdy()":
        text = text.replace("endmodule", "assign in0_V_TREADY = 1'b1;\nendmodule")
    wrapper.write_text(text)
    inst.set_nodeattr("code_gen_dir_ipgen", str(code))
    try:
        r = cosim.drive(inst, x, x, seed=3)
    finally:
        inst.set_nodeattr("code_gen_dir_ipgen", generated)
    assert r.driven and r.mismatches > 0 and not r.ok, r
    if new == ".ordy(1'b1)":
        assert r.protocol_violations > 0, r


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


def test_missing_verilator_is_one_line_from_the_cli(
    tfc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bnnflow.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["sim", str(tfc), "--rtl"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.splitlines() == [f"bnnflow: error: {rtl_compile.NO_VERILATOR}"]


# ---------------------------------------------------------------- a padded net with max-pools (default run)
@pytest.fixture(scope="module")
def padded(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict[str, np.ndarray]]:
    """VGG-11 at 8-16 channels (random weights, -1 padding before every conv, five max-pools) built, and
    every tensor the simulator computes on 2 CIFAR-10 test images."""
    root = tmp_path_factory.mktemp("vgg")
    ckpt = save_random_net("vgg11", VGG_WIDTHS, root / "vgg.pt", seed=2, negative_gamma=0.3)
    return _node_inputs(_build(ckpt, root / "build", target_fps=2000), 2)


def _padded_node(
    padded: tuple[object, dict[str, np.ndarray]], op: str, **attrs: object
) -> tuple[object, np.ndarray, np.ndarray]:
    """The first ``op`` node with these attribute values, its input and its output tensor."""
    from qonnx.custom_op.registry import getCustomOp

    model, tensors = padded
    for node in model.get_nodes_by_op_type(op):
        inst = getCustomOp(node)
        if all(inst.get_nodeattr(k) == v for k, v in attrs.items()):
            return inst, tensors[node.input[0]], tensors[node.output[0]]
    raise AssertionError(f"no {op} with {attrs}")


def test_padding_equals_simulator(padded: tuple[object, dict[str, np.ndarray]]) -> None:
    """finn-rtllib's fmpadding (compiled with --structs-packed, which Verilator 5.006 needs for it) pads
    a binary 16x16x8 feature map as the simulator does, under back-pressure."""
    inst, x, y = _padded_node(padded, "FMPadding_rtl", ImgDim=[16, 16])
    assert inst.get_nodeattr("Padding") == [1, 1, 1, 1] and y.shape[1:] == (18, 18, 8)
    r = cosim.drive(inst, x, y, seed=6)
    assert r.driven and r.elements == 3 * 18 * 18 * 8 and r.mismatches == 0, r
    assert r.protocol_violations == 0 and not r.timed_out and abs(r.cycles - r.finn_cycles) <= 4, r


def test_depthwise_window_generator_equals_simulator(padded: tuple[object, dict[str, np.ndarray]]) -> None:
    """The sliding-window generator in front of a max-pool (depthwise, 2x2 windows of 16 channels, SIMD 1)
    streams in its channel-group order, which hw_order gives; in that order it equals the simulator."""
    inst, x, y = _padded_node(padded, "ConvolutionInputGenerator_rtl", depthwise=1, IFMDim=[4, 4])
    assert inst.get_nodeattr("IFMChannels") // inst.get_nodeattr("SIMD") == 16
    assert not np.array_equal(cosim.hw_order(inst, y), y)  # the order matters: FINN's Python one would not do
    r = cosim.drive(inst, x, y, seed=7)
    assert r.driven and r.elements == 3 * 2 * 2 * 4 * 16 and r.mismatches == 0, r
    assert r.protocol_violations == 0 and not r.timed_out and 0 < r.cycles <= r.finn_cycles, r


# ---------------------------------------------------------------- the shipped pruned CNV, the whole padded net (slow)
@pytest.mark.slow
def test_pruned_cnv_rtl_nodes_equal_simulator(tmp_path: Path) -> None:
    b = _build(CNV_PRUNED_CKPT, tmp_path / "cnvp", target_fps=3000)
    rep = _all_rtl_nodes_exact(b, limit=3)
    ops = [r["op_type"] for r in rep["nodes"]]
    assert ops.count("ConvolutionInputGenerator_rtl") == 8 and "Thresholding_rtl" in ops


@pytest.mark.slow
def test_padded_vgg11_rtl_nodes_equal_simulator(tmp_path: Path) -> None:
    """VGG-11 (reduced widths, random weights, -1 padding before every conv): every sliding-window
    generator and every FMPadding_rtl exact."""
    ckpt = save_random_net("vgg11", VGG_WIDTHS, tmp_path / "vgg.pt", seed=2, negative_gamma=0.3)
    b = _build(ckpt, tmp_path / "vgg", target_fps=2000)
    rep = _all_rtl_nodes_exact(b, limit=2)
    assert [r["op_type"] for r in rep["nodes"]].count("FMPadding_rtl") == 8
