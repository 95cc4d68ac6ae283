"""Checkpoint -> QONNX export (build_flows.export) against the Brevitas model on real test images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnnflow import checkpoint, data
from bnnflow.errors import BnnflowError
from build_flows.export import export, qonnx_logits_top1

REPO = Path(__file__).resolve().parent.parent
ZOO = REPO / "models" / "zoo"
BNNFLOW = str(Path(sys.executable).parent / "bnnflow")


@pytest.mark.parametrize("name,n", [("tfc", 200), ("cnv", 100)])
def test_export_agrees_with_brevitas_on_real_images(name: str, n: int, tmp_path: Path) -> None:
    ckpt = ZOO / f"{name}_w1a1.pt"
    assert ckpt.is_file(), f"{ckpt} is a shipped checkpoint"
    out = tmp_path / f"{name}.onnx"
    r = export(ckpt, out, n_check=n)
    assert r.path == out and out.is_file()
    assert r.n == n and r.images.endswith("test")
    assert r.top1_agreement == 1.0
    assert r.max_logit_diff < 1e-3
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp or external-data files left

    # The file holds UINT8 input and ends in TopK; its top-1 is the model's on fresh images.
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    m = ModelWrapper(str(out))
    assert m.get_tensor_datatype(m.graph.input[0].name) == DataType["UINT8"]
    assert m.graph.node[-1].op_type == "TopK"
    model, _ = checkpoint.load(ckpt)
    split = data.load(model.dataset, "test")
    imgs = split.images[-20:]
    _, top1 = qonnx_logits_top1(out, imgs)
    from bnnflow.evaluate import predict

    assert np.array_equal(top1, predict(model, data.Split(imgs, split.labels[-20:])).numpy())


def test_export_cli(tmp_path: Path) -> None:
    out = tmp_path / "tfc.onnx"
    res = subprocess.run(
        [BNNFLOW, "export", str(ZOO / "tfc_w1a1.pt"), "--out", str(out), "--check", "50"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert out.is_file()
    assert "top-1 identical on 100.0%" in res.stdout and "50 mnist test images" in res.stdout


def test_export_bad_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "x.onnx"
    with pytest.raises(BnnflowError, match="not a readable checkpoint"):
        export(bad, out)
    res = subprocess.run([BNNFLOW, "export", str(bad), "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "bnnflow: error:" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]
