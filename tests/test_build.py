"""``bnnflow build`` (build_flows.build): FINN's builder without Vivado, its outputs, and bad inputs.

Real networks: TFC from the zoo, a narrow CNV with random weights and
trained-like BatchNorm statistics, a Brevitas bnn_pynq TFC exported to QONNX
by Brevitas (a user's file). Every failure must raise one BnnflowError and
leave neither DIR nor a hidden work folder beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from helpers import save_random_net

from bnnflow.errors import BnnflowError
from build_flows.build import build

REPO = Path(__file__).resolve().parent.parent
TFC_CKPT = REPO / "models" / "zoo" / "tfc_w1a1.pt"
CNV_CKPT = REPO / "models" / "zoo" / "cnv_w1a1.pt"
BNNFLOW = str(Path(sys.executable).parent / "bnnflow")
NARROW_CNV = [16, 16, 32, 32, 32, 32, 64, 64]
MANIFEST_KEYS = {
    "input",
    "input_sha256",
    "board",
    "part",
    "clock_ns",
    "steps",
    "tools",
    "skipped",
    "estimates",
    "outputs",
    "vivado",
    "target_fps",
    "dataset",
}


def _brevitas_qonnx(name: str, path: Path) -> Path:
    """A bnn_pynq network from brevitas_examples (random weights), exported by Brevitas as a user would."""
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    model, _ = model_with_cfg(name, pretrained=False)
    export_qonnx(model.eval(), input_t=torch.rand(1, 1, 28, 28), export_path=str(path))
    return path


def _only(parent: Path, *names: str) -> None:
    """Nothing but ``names`` in ``parent``: no DIR, no hidden work folder."""
    assert sorted(p.name for p in parent.iterdir()) == sorted(names)


def _check_build(d: Path) -> dict:
    m = json.loads((d / "manifest.json").read_text())
    assert MANIFEST_KEYS <= set(m)
    assert m["vivado"] is False and m["skipped"] and "step_synthesize_bitfile" in m["skipped"][0]["steps"]
    assert [s["name"] for s in m["steps"]][-1] == "step_hw_codegen"
    assert all(s["seconds"] >= 0 for s in m["steps"])
    res = json.loads((d / "report" / "estimate_layer_resources.json").read_text())
    perf = json.loads((d / "report" / "estimate_network_performance.json").read_text())
    assert res["total"]["LUT"] > 0 and res["total"]["BRAM_18K"] > 0 and perf["estimated_throughput_fps"] > 0
    assert (d / "report" / "estimate_layer_cycles.json").is_file()
    for f in (
        m["outputs"]["hw_graph_before_specialization"],
        m["outputs"]["final_graph"],
        m["outputs"]["parent_graph"],
        m["folding_applied"],
    ):
        assert (d / f).is_file(), f
    # code generated for every layer, inside DIR, under paths that name DIR
    g = onnx.load(str(d / m["outputs"]["final_graph"]))
    assert len(g.graph.node) > 2
    for node in g.graph.node:
        attrs = {a.name: a.s.decode() for a in node.attribute if a.name == "code_gen_dir_ipgen"}
        cg = Path(attrs["code_gen_dir_ipgen"])
        assert cg.parent == d / "codegen" and any(cg.iterdir()), node.name
    return m


@pytest.fixture(scope="module")
def tfc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tfc") / "build"
    build(TFC_CKPT, "Pynq-Z1", d, target_fps=10000, n_check=50)
    return d


def test_tfc_build_complete(tfc: Path) -> None:
    m = _check_build(tfc)
    assert m["input_kind"] == "checkpoint" and m["dataset"] == "mnist" and m["part"] == "xc7z020clg400-1"
    assert m["export_check"]["top1_agreement"] == 1.0
    _only(tfc.parent, "build")


def test_narrow_cnv_build(tmp_path: Path) -> None:
    ckpt = save_random_net("cnv", NARROW_CNV, tmp_path / "cnv.pt")
    d = tmp_path / "out"
    r = build(ckpt, "Pynq-Z2", d, target_fps=20000, n_check=20)
    m = _check_build(d)
    assert r.estimated_fps == m["estimates"]["estimated_throughput_fps"] > 0
    ops = {n.op_type for n in onnx.load(str(d / m["outputs"]["final_graph"])).graph.node}
    assert {"MVAU_hls", "Pool_hls", "LabelSelect_hls"} <= ops and any(
        o.startswith("ConvolutionInputGenerator") for o in ops
    )
    _only(tmp_path, "cnv.pt", "out")


def test_user_qonnx_builds(tmp_path: Path) -> None:
    src = _brevitas_qonnx("tfc_1w1a", tmp_path / "user_tfc.onnx")
    d = tmp_path / "out"
    build(src, "Pynq-Z1", d, target_fps=5000)
    m = _check_build(d)
    assert m["input_kind"] == "qonnx" and m["accuracy"] is None
    assert any("UINT8" in n for n in m["input_notes"]) and any("TopK" in n for n in m["input_notes"])


def test_folding_file_and_rebuild(tfc: Path, tmp_path: Path) -> None:
    """FINN's own auto folding, handed back as a folding file, gives the same design; DIR is replaced."""
    fold = tmp_path / "fold.json"
    fold.write_text((tfc / "report" / "auto_folding_config.json").read_text())
    d = tmp_path / "out"
    build(TFC_CKPT, "Pynq-Z1", d, target_fps=1000, n_check=0)
    build(TFC_CKPT, "Pynq-Z1", d, folding=fold, n_check=0)
    m = _check_build(d)
    assert m["target_fps"] is None and m["folding_file_sha256"]
    same = json.loads((tfc / "report" / "estimate_layer_cycles.json").read_text())
    assert json.loads((d / "report" / "estimate_layer_cycles.json").read_text()) == same
    _only(tmp_path, "fold.json", "out")


def test_cli_summary(tfc: Path, tmp_path: Path) -> None:
    d = tmp_path / "cli"
    res = subprocess.run(
        [
            BNNFLOW,
            "build",
            str(TFC_CKPT),
            "--board",
            "Pynq-Z1",
            "--target-fps",
            "10000",
            "--check",
            "20",
            "--out",
            str(d),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    assert "accuracy:" in out and "FPS" in out and "LUT" in out and "BRAM18" in out and str(d) in out
    vivado_lines = [line for line in out.splitlines() if "need Vivado" in line]
    assert len(vivado_lines) == 1 and "step_synthesize_bitfile" in vivado_lines[0]


# ---------------------------------------------------------------- bad inputs
def _fails(src: Path, tmp_path: Path, match: str, **kw: object) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    kw.setdefault("target_fps", 1000)
    with pytest.raises(BnnflowError, match=match):
        build(src, "Pynq-Z1", tmp_path / "out", n_check=0, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no DIR, no work folder


def test_corrupt_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    _fails(bad, tmp_path, "not a readable ONNX model")
    res = subprocess.run(
        [BNNFLOW, "build", str(bad), "--board", "Pynq-Z1", "--target-fps", "100", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "not a readable ONNX model" in res.stderr
    _only(tmp_path, "model.onnx")


def test_non_binary_model(tmp_path: Path) -> None:
    src = _brevitas_qonnx("tfc_2w2a", tmp_path / "tfc_2w2a.onnx")
    _fails(src, tmp_path, r"quantizes (weight|activation)s to 2 bits")


def test_unsupported_layer(tmp_path: Path) -> None:
    from brevitas.export import export_qonnx
    from brevitas.nn import QuantIdentity, QuantLinear

    net = torch.nn.Sequential(
        QuantIdentity(bit_width=1), QuantLinear(16, 8, bias=False, weight_bit_width=1), torch.nn.Tanh()
    )
    src = tmp_path / "tanh.onnx"
    export_qonnx(net.eval(), input_t=torch.rand(1, 16), export_path=str(src))
    _fails(src, tmp_path, r"unsupported layer type\(s\).*Tanh")


def test_integer_1bit_weight_quantizer_is_named(tmp_path: Path) -> None:
    """weight_bit_width=1 on Brevitas' default integer quantizer exports an infinite scale: the error
    says so and names the binary quantizer to use, before FINN runs."""
    from brevitas.export import export_qonnx
    from brevitas.nn import QuantIdentity, QuantLinear

    net = torch.nn.Sequential(QuantIdentity(bit_width=1), QuantLinear(16, 10, bias=False, weight_bit_width=1))
    src = tmp_path / "int1.onnx"
    export_qonnx(net.eval(), input_t=torch.rand(1, 16), export_path=str(src))
    _fails(src, tmp_path, r"int1.onnx: quantizer .* has an infinite scale.*SignedBinaryWeightPerTensorConst")


def test_zero_padding_of_binary_activations_is_refused(tmp_path: Path) -> None:
    """A user's Brevitas net with padding=1 on 1-bit activations: FINN would pad its bits with -1."""
    from brevitas.export import export_qonnx
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
    from brevitas.quant import SignedBinaryWeightPerTensorConst as Binary

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        QuantIdentity(bit_width=1),
        QuantConv2d(3, 8, 3, padding=1, bias=False, weight_quant=Binary),
        torch.nn.BatchNorm2d(8),
        QuantIdentity(bit_width=1),
        torch.nn.Flatten(),
        QuantLinear(8 * 8 * 8, 10, bias=False, weight_quant=Binary),
    )
    src = tmp_path / "zero_pad.onnx"
    export_qonnx(net.eval(), input_t=torch.rand(1, 3, 8, 8), export_path=str(src))
    _fails(
        src,
        tmp_path,
        r"zero_pad.onnx: not supported: the 3x3 convolution on the 8x8x3 binary feature map "
        r"zero-pads 1-bit \(bipolar\)",
    )


def test_padded_conv_net_builds(tmp_path: Path) -> None:
    """VGG-11 pads every conv with -1 (its first layer the 8-bit input): FINN's FMPadding in the
    build, code for every layer. Exactness is checked in test_sim (padded nets)."""
    ckpt = save_random_net("vgg11", [8, 8, 16, 16, 16, 16, 16, 16], tmp_path / "vgg.pt")
    d = tmp_path / "out"
    build(ckpt, "Pynq-Z1", d, target_fps=5000, n_check=20)
    m = _check_build(d)
    assert m["export_check"]["top1_agreement"] == 1.0
    ops = [n.op_type for n in onnx.load(str(d / m["outputs"]["final_graph"])).graph.node]
    assert sum(o.startswith("FMPadding") for o in ops) == 8
    _only(tmp_path, "vgg.pt", "out")


def test_folding_pe_not_dividing_mh(tmp_path: Path) -> None:
    fold = tmp_path / "fold.json"
    fold.write_text(json.dumps({"MVAU_hls_1": {"PE": 3, "SIMD": 4}}))
    _fails(TFC_CKPT, tmp_path, r"MVAU_hls_1: PE=3 does not divide MH=64", target_fps=None, folding=fold)
    fold.write_text(json.dumps({"StreamingMaxPool_0": {"PE": 1}}))
    _fails(TFC_CKPT, tmp_path, r"no node named StreamingMaxPool_0", target_fps=None, folding=fold)


def test_hls_simd_minimum(tmp_path: Path) -> None:
    """An MVAU with MW > 1024 at a low target FPS: FINN's auto-folding leaves SIMD 1, which
    finn-hlslib cannot build; bnnflow raises it (and says so in FINN's folding report), and a
    folding file asking for SIMD 1 there is refused before FINN runs."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    ckpt = save_random_net("cnv", [16, 16, 32, 32, 128, 32, 64, 64], tmp_path / "cnv.pt")
    d = tmp_path / "auto"
    build(ckpt, "Pynq-Z1", d, target_fps=50, n_check=0)
    m = _check_build(d)
    fold = json.loads((d / "report" / "auto_folding_config.json").read_text())
    wide = []
    for node in ModelWrapper(str(d / m["outputs"]["final_graph"])).graph.node:
        if node.op_type == "MVAU_hls":
            mw, simd = getCustomOp(node).get_nodeattr("MW"), getCustomOp(node).get_nodeattr("SIMD")
            assert simd * 1024 >= mw and fold[node.name]["SIMD"] == simd, node.name
            if mw > 1024:
                wide.append(node.name)
    assert wide == ["MVAU_hls_5"] and fold["MVAU_hls_5"]["SIMD"] == 2  # MW = 128 * 9 = 1152
    fold["MVAU_hls_5"]["SIMD"] = 1
    bad = tmp_path / "fold.json"
    bad.write_text(json.dumps(fold))
    _fails(
        ckpt,
        tmp_path,
        r"MVAU_hls_5: SIMD=1 is below finn-hlslib's minimum .* use SIMD >= 2",
        target_fps=None,
        folding=bad,
    )


def test_over_budget_target_fps(tmp_path: Path) -> None:
    assert CNV_CKPT.is_file(), f"{CNV_CKPT} is a shipped checkpoint"
    _fails(CNV_CKPT, tmp_path, r"over Pynq-Z1's budget \((LUT|BRAM_18K) .* > .*--lower-to-fit", target_fps=10**6)


def test_bad_arguments(tmp_path: Path) -> None:
    _fails(TFC_CKPT, tmp_path, "exactly one of", target_fps=None)
    with pytest.raises(BnnflowError, match="unknown board"):
        build(TFC_CKPT, "ZCU104", tmp_path / "out", target_fps=100)
    (tmp_path / "notabuild").mkdir()
    (tmp_path / "notabuild" / "precious.txt").write_text("x")
    with pytest.raises(BnnflowError, match="not a bnnflow build folder"):
        build(TFC_CKPT, "Pynq-Z1", tmp_path / "notabuild", target_fps=100, n_check=0)
    assert (tmp_path / "notabuild" / "precious.txt").read_text() == "x"
    _only(tmp_path, "notabuild")


@pytest.mark.slow
def test_lower_to_fit_cnv(tmp_path: Path) -> None:
    assert CNV_CKPT.is_file(), f"{CNV_CKPT} is a shipped checkpoint"
    r = build(CNV_CKPT, "Pynq-Z1", tmp_path / "out", target_fps=10**6, lower_to_fit=True, n_check=20)
    m = _check_build(r.out_dir)
    assert m["target_fps_used"] < 10**6 and len(m["folding_tries"]) > 1
    assert m["estimates"]["totals"]["LUT"] <= 53200 and m["estimates"]["totals"]["BRAM_18K"] <= 280
