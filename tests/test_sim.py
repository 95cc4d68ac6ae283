"""The bit-exact simulator (hw/) against FINN's own execution, the Brevitas model and FINN's estimates.

Builds are made from real checkpoints (TFC from the zoo) and from narrow CNVs
with trained-like BatchNorm statistics (a physically pruned CNV is exactly a
CNV with other widths; the "pruned" one has 30% negative BatchNorm scales).
Inputs are real test images and random ones.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import copy_build, save_random_net

from bnnflow import data
from bnnflow.errors import BnnflowError
from build_flows.build import build
from build_flows.build_dir import open_build
from conformance.run import compare_with_finn
from hw import run, verify
from hw.artifacts import _code_dir, load_artifacts
from hw.cycles import cycle_report
from hw.graph import load_graph
from hw.runners import accumulator_datatype
from hw.simulate import Simulator

REPO = Path(__file__).resolve().parent.parent
TFC_CKPT = REPO / "models" / "zoo" / "tfc_w1a1.pt"
CNV_CKPT = REPO / "models" / "zoo" / "cnv_w1a1.pt"
BNNFLOW = str(Path(sys.executable).parent / "bnnflow")
NARROW_CNV = [16, 16, 32, 32, 32, 32, 64, 64]
PRUNED_CNV = [24, 72, 40, 36, 80, 48, 96, 40]  # odd widths: few PE/SIMD divisors, >64 channels per word


# ---------------------------------------------------------------- building (via bnnflow's build stage)
def make_build(ckpt: Path, out: Path, target_fps: int) -> Path:
    """A real Vivado-free `bnnflow build` (the export check is skipped: tests below check agreement)."""
    build(ckpt, "Pynq-Z1", out, target_fps=target_fps, n_check=0)
    return out


@pytest.fixture(scope="module")
def tfc(shared_tfc_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_build(shared_tfc_build, tmp_path_factory.mktemp("tfc") / "build")


@pytest.fixture(scope="module", params=["narrow", "pruned"])
def cnv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp(f"cnv_{request.param}")
    widths = NARROW_CNV if request.param == "narrow" else PRUNED_CNV
    ckpt = save_random_net(
        "cnv",
        widths,
        root / "cnv.pt",
        seed=1 if request.param == "narrow" else 2,
        negative_gamma=0.0 if request.param == "narrow" else 0.3,
    )
    return make_build(ckpt, root / "build", target_fps=20000)


def _images(build_dir: Path, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    b = open_build(build_dir)
    ds = verify.dataset_of(b)
    split = data.load(ds, "test").subset(n)
    return split.images, split.labels, ds


# ---------------------------------------------------------------- helpers
def _check_intermediates(build_dir: Path, x: np.ndarray) -> int:
    """Every tensor the simulator and FINN both have must be identical; returns how many were compared."""
    n, diff = compare_with_finn(build_dir, x)
    assert diff is None, diff
    return n


# ---------------------------------------------------------------- TFC
def test_tfc_intermediates_equal_finn(tfc: Path) -> None:
    imgs, _, _ = _images(tfc, 3)
    rng = np.random.default_rng(0)
    x = np.concatenate([imgs, rng.integers(0, 256, size=(3, *imgs.shape[1:]), dtype=np.uint8)])
    n = _check_intermediates(tfc, x)
    layers = load_graph(open_build(tfc).accel).layers
    assert n >= len(layers)  # every layer output was compared


def test_tfc_report_agrees_with_finn_and_torch(tfc: Path) -> None:
    rep = run.sim_report(tfc, limit=500, finn_limit=5)
    assert rep["n"] == 500
    assert rep["agree_with_finn"] == 1.0 and rep["finn_n"] == 5
    assert rep["agree_with_torch"] == 1.0
    assert rep["accuracy"] > 0.85
    assert rep["artifacts_match"] is True
    assert rep["cycles_match_finn"] is True


def test_tfc_cycles_equal_finn_estimates(tfc: Path) -> None:
    b = open_build(tfc)
    rep = cycle_report(load_graph(b.accel, b.parent), b.clock_ns)
    finn = b.report("estimate_layer_cycles.json")
    assert rep["layers"] == {k: int(v) for k, v in finn.items()}
    perf = b.report("estimate_network_performance.json")
    assert rep["initiation_interval_cycles"] == perf["max_cycles"]
    assert rep["latency_cycles"] == perf["critical_path_cycles"]
    assert rep["fps_estimate"] == pytest.approx(perf["estimated_throughput_fps"])


def test_tfc_corrupted_weight_file_is_caught(tfc: Path, tmp_path: Path) -> None:
    b = open_build(tfc)
    g = load_graph(b.accel, b.parent)
    layer = next(layer for layer in g.layers if layer.op == "MVAU")
    mem = _code_dir(layer, b.root) / "memblock.dat"  # the copy's own file, not the original build's
    assert mem.resolve().is_relative_to(tfc.resolve())
    original = mem.read_text()
    lines = original.split("\n")
    first = lines[3]
    lines[3] = format(int(first, 16) ^ 1, "x").zfill(len(first))  # flip one weight bit
    try:
        mem.write_text("\n".join(lines))
        _, mismatches = load_artifacts(g, b.root)
        assert [(m.layer, m.role, m.n_diff) for m in mismatches] == [(layer.name, "weights", 1)]
        res = subprocess.run(
            [BNNFLOW, "sim", str(tfc), "--limit", "20", "--finn-limit", "0", "--from-artifacts", "--json"],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert res.returncode == 1, res.stderr
        assert json.loads(res.stdout)["artifacts_match"] is False
    finally:
        mem.write_text(original)
    _, mismatches = load_artifacts(g, b.root)
    assert mismatches == []


def test_tfc_input_output_files(tfc: Path, tmp_path: Path) -> None:
    imgs, _, _ = _images(tfc, 50)
    np.save(tmp_path / "x.npy", imgs)
    res = subprocess.run(
        [BNNFLOW, "sim", str(tfc), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    y = np.load(tmp_path / "y.npy")
    ref, _ = verify.finn_execute(open_build(tfc), imgs[:3])
    assert y.shape == (50, 1) and np.array_equal(y[:3], ref.astype(np.int64))
    # wrong layout / datatype: one clear line, exit 2, nothing written
    np.save(tmp_path / "bad.npy", imgs.astype(np.float32) / 255.0 + 0.5)
    res = subprocess.run(
        [BNNFLOW, "sim", str(tfc), "--input", str(tmp_path / "bad.npy"), "--output", str(tmp_path / "z.npy")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 2 and "bnnflow: error:" in res.stderr and not (tmp_path / "z.npy").exists()


def test_unsupported_node_is_named(tfc: Path, tmp_path: Path) -> None:
    from qonnx.core.modelwrapper import ModelWrapper

    b = open_build(tfc)
    m = ModelWrapper(str(b.accel))
    node = m.graph.node[-1]
    node.op_type, node.domain = "Softmax", ""
    m.save(str(tmp_path / "bad.onnx"))
    with pytest.raises(BnnflowError, match=rf"{node.name}.*Softmax"):
        load_graph(tmp_path / "bad.onnx")


def test_not_a_build_folder(tmp_path: Path) -> None:
    with pytest.raises(BnnflowError, match="not a build folder"):
        open_build(tmp_path)


# ---------------------------------------------------------------- CNV (narrow and pruned widths)
def test_cnv_intermediates_equal_finn(cnv: Path) -> None:
    imgs, _, _ = _images(cnv, 2)
    rng = np.random.default_rng(1)
    x = np.concatenate([imgs, rng.integers(0, 256, size=(2, *imgs.shape[1:]), dtype=np.uint8)])
    n = _check_intermediates(cnv, x)
    assert n >= len(load_graph(open_build(cnv).accel).layers)


def test_cnv_agrees_with_torch_and_artifacts(cnv: Path) -> None:
    imgs, _, _ = _images(cnv, 300)
    ld = run.load(cnv)
    out, _ = ld.sim.predict(imgs)
    ck = verify.checkpoint_of(ld.build)
    assert np.array_equal(verify.top1(out), verify.torch_top1(ck, imgs))
    assert ld.mismatches == []
    art = run.load(cnv, from_artifacts=True)
    _, a = art.sim.run(imgs[:50], intermediates=True)
    _, g = ld.sim.run(imgs[:50], intermediates=True)
    assert a.keys() == g.keys() and all(np.array_equal(a[k], g[k]) for k in g)


def test_cnv_cycles_equal_finn_estimates(cnv: Path) -> None:
    b = open_build(cnv)
    rep = cycle_report(load_graph(b.accel, b.parent), b.clock_ns)
    assert rep["layers"] == {k: int(v) for k, v in b.report("estimate_layer_cycles.json").items()}
    assert rep["latency_cycles"] == b.report("estimate_network_performance.json")["critical_path_cycles"]


def test_cnv_accumulators_hold_the_popcount(cnv: Path) -> None:
    """Every XNOR accumulator the build generates holds [0, MW]; FINN's sizing alone would not."""
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    b = open_build(cnv)
    xnor = [layer for layer in load_graph(b.accel).layers if layer.op == "MVAU" and layer.attrs["binaryXnorMode"]]
    assert len(xnor) >= 7
    for layer in xnor:
        dt = DataType[accumulator_datatype(layer)]
        assert dt.min() <= 0 and dt.max() >= layer.attrs["MW"], (layer.name, dt.name)
    finn_only = ModelWrapper(str(b.golden)).transform(MinimizeAccumulatorWidth())
    too_narrow = []
    for node in finn_only.graph.node:
        inst = getCustomOp(node) if node.op_type.startswith("MVAU") else None
        if inst and inst.get_nodeattr("binaryXnorMode"):
            if DataType[inst.get_nodeattr("accDataType")].max() < inst.get_nodeattr("MW"):
                too_narrow.append(node.name)
    assert too_narrow, "FINN's own MinimizeAccumulatorWidth no longer undersizes XNOR accumulators"


def test_narrow_accumulator_overflow_is_caught_and_wraps(tfc: Path) -> None:
    """With an accumulator narrower than its popcounts, overflows are counted and the wrapped
    outputs differ exactly on images that overflowed."""
    imgs, _, _ = _images(tfc, 300)
    b = open_build(tfc)

    def sim(wrap: bool) -> Simulator:
        g = load_graph(b.accel, b.parent)
        layer = next(x for x in g.layers if x.op == "MVAU" and x.attrs["binaryXnorMode"] and "thresholds" in x.params)
        layer.param_dtypes["thresholds"] = "UINT5"  # 0..31 for popcounts of MW = 64 inputs
        return Simulator(g, wrap_accumulators=wrap)

    y0, ovf = sim(False).predict(imgs)
    y1, _ = sim(True).predict(imgs)
    overflowed = np.sum(list(ovf.values()), axis=0) > 0
    assert overflowed.any() and not np.array_equal(y0, y1)
    assert np.array_equal(y0[~overflowed], y1[~overflowed])
    assert np.array_equal(y0, run.load(tfc).sim.predict(imgs)[0])  # unbounded semantics unchanged


# ---------------------------------------------------------------- padded conv nets (VGG-11, NIN)
# Random weights, trained-like BatchNorm statistics; seeds picked so that the nets predict
# several classes on real images (a net that always says one class would agree with anything).
PADDED = {"vgg11": ([16] * 8, 2), "nin": ([16] * 8, 1)}


@pytest.fixture(scope="module", params=sorted(PADDED))
def padded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp(request.param)
    widths, seed = PADDED[request.param]
    ckpt = save_random_net(request.param, widths, root / "net.pt", seed=seed, negative_gamma=0.3)
    return make_build(ckpt, root / "build", target_fps=5000)


def test_padded_streamlined_scores_are_exactly_brevitas_logits(padded: Path) -> None:
    """The -1 padding survives FINN's streamlining exactly: on real images the scores in front of
    TopK are one positive affine function of the Brevitas logits (FINN absorbed the rest into TopK)."""
    import torch
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from bnnflow import checkpoint

    imgs, _, _ = _images(padded, 12)
    net, _ = checkpoint.load(padded.parent / "net.pt")
    with torch.no_grad():
        logits = net.eval()(torch.from_numpy(imgs.astype(np.float32) / 255.0)).numpy()
    assert len(set(logits.argmax(1))) >= 2
    model = ModelWrapper(str(padded / "intermediate_models" / "step_streamline.onnx"))
    assert not model.get_nodes_by_op_type("Pad")
    scores_name = model.get_nodes_by_op_type("TopK")[0].input[0]
    inp = model.graph.input[0].name
    layout_nhwc = model.get_tensor_shape(inp)[-1] == imgs.shape[1]
    scores = np.stack(
        [
            execute_onnx(
                model,
                {inp: (im[None].transpose(0, 2, 3, 1) if layout_nhwc else im[None]).astype(np.float32)},
                return_full_exec_context=True,
            )[scores_name].reshape(-1)
            for im in imgs
        ]
    )
    a = np.stack([logits.ravel(), np.ones(logits.size)], 1)
    (scale, shift), *_ = np.linalg.lstsq(a, scores.ravel(), rcond=None)
    assert scale > 0 and np.abs(a @ [scale, shift] - scores.ravel()).max() < 1e-6 * np.abs(scores).max()


def test_padded_build_has_fmpadding(padded: Path) -> None:
    """One FMPadding per padded convolution of the Brevitas net, with its padding."""
    from bnnflow import checkpoint
    from models.layers import BinaryPad

    net, _ = checkpoint.load(padded.parent / "net.pt")
    want = [m.pad for m in net.modules() if isinstance(m, BinaryPad) and m.pad > 0]
    layers = load_graph(open_build(padded).accel).layers
    pads = [layer for layer in layers if layer.op == "FMPadding"]
    assert want and [layer.attrs["Padding"][0] for layer in pads] == want
    assert any(layer.attrs["inputDataType"] == "BINARY" for layer in pads)  # bipolar -1 is bit 0


def _intermediates_on_real_and_random(build_dir: Path, seed: int) -> None:
    """Every layer's output equals FINN's on two test images and two random ones."""
    imgs, _, _ = _images(build_dir, 2)
    rng = np.random.default_rng(seed)
    x = np.concatenate([imgs, rng.integers(0, 256, size=(2, *imgs.shape[1:]), dtype=np.uint8)])
    assert _check_intermediates(build_dir, x) >= len(load_graph(open_build(build_dir).accel).layers)


def _top1_and_cycles_agree(build_dir: Path) -> None:
    """Top-1 equals Brevitas' on 300 test images (several classes), cycles equal FINN's estimates."""
    imgs, _, _ = _images(build_dir, 300)
    ld = run.load(build_dir)
    out, _ = ld.sim.predict(imgs)
    ref = verify.torch_top1(verify.checkpoint_of(ld.build), imgs)
    assert len(set(ref)) >= 2 and np.array_equal(verify.top1(out), ref)
    b = open_build(build_dir)
    rep = cycle_report(load_graph(b.accel, b.parent), b.clock_ns)
    assert rep["layers"] == {k: int(v) for k, v in b.report("estimate_layer_cycles.json").items()}


def test_padded_intermediates_equal_finn(padded: Path) -> None:
    _intermediates_on_real_and_random(padded, seed=3)


def test_padded_agrees_with_torch_and_finn_estimates(padded: Path) -> None:
    _top1_and_cycles_agree(padded)


# ---------------------------------------------------------------- residual net (ResNet-18)
RESNET = [8, 16, 16, 16, 8, 8, 8, 8, 8, 8, 8, 8]


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resnet")
    ckpt = save_random_net("resnet18", RESNET, root / "net.pt", seed=4, negative_gamma=0.3)
    return make_build(ckpt, root / "build", target_fps=2000)


def test_residual_block_constants_are_exact() -> None:
    """[a (2 pc - K) + b + s >= t] == [pc + E sb >= W] for every pc in [0, K] and s = +-1."""
    from build_flows.transforms.residual import block_constants

    rng = np.random.default_rng(0)
    k = 27
    a = np.concatenate([rng.uniform(0.01, 2, 200), np.zeros(40)])
    b, t = rng.uniform(-30, 30, 240), rng.uniform(-3, 3, 240)
    b[200:] = rng.choice([-2.0, -0.5, 0.0, 0.5, 2.0], 40)  # a = 0: the sign depends on s only
    e, w = block_constants(a, b, t, k)
    pc = np.arange(k + 1)[:, None]
    for s in (-1, 1):
        want = a * (2 * pc - k) + b + s >= t
        got = pc + e * (s + 1) // 2 >= w
        assert np.array_equal(want, got)


def test_resnet_block_outputs_equal_brevitas(resnet: Path) -> None:
    """Every residual block's output in FINN's streamlined graph is Brevitas' block output (as
    bits), on real images: the integer sum the residual rewrite builds is exact."""
    import torch
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from bnnflow import checkpoint

    imgs, _, _ = _images(resnet, 4)
    net, _ = checkpoint.load(resnet.parent / "net.pt")
    outs: list[np.ndarray] = []
    hooks = [blk.register_forward_hook(lambda _m, _i, o: outs.append(o.detach().numpy())) for blk in net.blocks]
    with torch.no_grad():
        net.eval()(torch.from_numpy(imgs.astype(np.float32) / 255.0))
    for h in hooks:
        h.remove()
    model = ModelWrapper(str(resnet / "intermediate_models" / "step_streamline.onnx"))
    joins = [
        n for n in model.graph.node if n.op_type == "Add" and all(model.get_initializer(i) is None for i in n.input)
    ]
    assert len(joins) == 8
    block_out = [model.find_consumer(j.output[0]).output[0] for j in joins]
    inp = model.graph.input[0].name
    for i, im in enumerate(imgs):
        ctx = execute_onnx(model, {inp: im[None].astype(np.float32)}, return_full_exec_context=True)
        for k, name in enumerate(block_out):
            want = (outs[k][i].transpose(1, 2, 0) + 1) / 2  # NCHW +-1 -> NHWC bits
            assert np.array_equal(ctx[name][0], want), f"block {k + 1}, image {i}"


def test_resnet_build_streams_the_residuals(resnet: Path) -> None:
    ops = [layer.op for layer in load_graph(open_build(resnet).accel).layers]
    assert ops.count("ElementwiseAdd") == 8 and ops.count("DuplicateStreams") >= 7
    assert "ElementwiseMul" in ops and ops.count("Thresholding") >= 8


def test_resnet_intermediates_equal_finn(resnet: Path) -> None:
    """Includes the residual streams (DuplicateStreams, ElementwiseMul/Add) against FINN's execution."""
    _intermediates_on_real_and_random(resnet, seed=4)


def test_resnet_agrees_with_torch_and_finn_estimates(resnet: Path) -> None:
    _top1_and_cycles_agree(resnet)


# ---------------------------------------------------------------- full CNV (slow)
@pytest.mark.slow
def test_full_cnv_end_to_end(tmp_path: Path) -> None:
    assert CNV_CKPT.is_file(), "models/zoo/cnv_w1a1.pt is a shipped checkpoint"
    ck = tmp_path / "cnv.pt"
    shutil.copy(CNV_CKPT, ck)
    build = make_build(ck, tmp_path / "build", target_fps=3000)
    imgs, _, _ = _images(build, 3)
    _check_intermediates(build, imgs)
    rep = run.sim_report(build, limit=2000, finn_limit=5)
    assert rep["agree_with_finn"] == 1.0 and rep["agree_with_torch"] == 1.0
    assert rep["artifacts_match"] is True and rep["cycles_match_finn"] is True
