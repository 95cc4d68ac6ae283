"""Seeded corruptions of what users hand in: every case ends in a correct result or one BnnflowError.

240 cases: checkpoints (byte flips, truncation, tensors made NaN or
reshaped, entries removed or retyped), QONNX files (byte flips, truncation,
a node's op type or an attribute changed), folding JSONs (values, types,
nesting) and build folders (the manifest, FINN's reports and the generated
weight and threshold files). The CLI turns a BnnflowError into one
``bnnflow: error:`` line with exit status 2, so "one BnnflowError" is that
contract; anything else (a traceback) fails the case. The source files are
checked to be unchanged after each case.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from bnnflow import checkpoint
from bnnflow.errors import BnnflowError
from bnnflow.files import sha256_file

REPO = Path(__file__).resolve().parent.parent
TFC = REPO / "models" / "zoo" / "tfc_w1a1.pt"
N_CASES = 60  # per kind; four kinds


def _flip_bytes(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def _corrupt_bytes(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(("flip", "truncate", "garbage", "empty"))
    if kind == "flip":
        return _flip_bytes(data, rng)
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    if kind == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
    return b""


def _outcome(fn: Callable[[], Any]) -> str:
    """``ok`` or ``error`` (a BnnflowError); any other exception fails the case."""
    try:
        fn()
    except BnnflowError as exc:
        assert "\n" not in str(exc).strip(), str(exc)
        return "error"
    return "ok"


# ---------------------------------------------------------------- checkpoints
def _corrupt_checkpoint(rng: random.Random, path: Path) -> None:
    if rng.random() < 0.4:
        path.write_bytes(_corrupt_bytes(TFC.read_bytes(), rng))
        return
    obj = torch.load(TFC, weights_only=True)
    sd = obj["state_dict"]
    key = rng.choice(sorted(sd))
    kind = rng.choice(("nan", "inf", "reshape", "drop_key", "retype_sd", "retype_meta", "widths", "arch",
                       "dtype", "huge_widths"))
    if kind in ("nan", "inf") and sd[key].is_floating_point():
        sd[key] = sd[key].clone()
        sd[key].view(-1)[rng.randrange(sd[key].numel())] = float(kind)
    elif kind == "reshape":
        sd[key] = torch.zeros(sd[key].numel() + 1)
    elif kind == "drop_key":
        obj.pop(rng.choice(("arch", "widths", "state_dict", "meta", "format")))
    elif kind == "retype_sd":
        obj["state_dict"] = rng.choice(([], "x", 3))
    elif kind == "retype_meta":
        obj["meta"] = rng.choice(([], "x", None))
    elif kind == "widths":
        obj["widths"] = rng.choice(([64, 64], [0, 64, 64], ["a", 1, 2], [64.5, 64, 64], "64"))
    elif kind == "arch":
        obj["arch"] = rng.choice(("nope", 3, None, "cnv"))
    elif kind == "dtype":
        sd[key] = sd[key].to(torch.int64) if sd[key].is_floating_point() else sd[key].float()
    else:
        obj["widths"] = [2**20, 2**20, 2**20]
    torch.save(obj, path)


@pytest.mark.parametrize("seed", range(0, N_CASES, 10))
def test_fuzzed_checkpoints(seed: int, tmp_path: Path) -> None:
    before = sha256_file(TFC)
    seen: set[str] = set()
    x = torch.rand(4, 1, 28, 28)
    for s in range(seed, seed + 10):
        rng = random.Random(s)
        path = tmp_path / f"c{s}.pt"
        _corrupt_checkpoint(rng, path)

        def load_and_run() -> None:
            model, _ = checkpoint.load(path)
            with torch.no_grad():
                y = model(x)
            assert torch.isfinite(y).all()  # a loaded checkpoint computes finite logits

        seen.add(_outcome(load_and_run))
    assert sha256_file(TFC) == before
    assert "error" in seen


# ---------------------------------------------------------------- QONNX files
@pytest.fixture(scope="module")
def tfc_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from build_flows.export import export

    out = tmp_path_factory.mktemp("onnx") / "tfc.onnx"
    export(TFC, out, n_check=0)
    return out


def _corrupt_onnx(src: Path, rng: random.Random, path: Path) -> None:
    import onnx

    if rng.random() < 0.5:
        path.write_bytes(_corrupt_bytes(src.read_bytes(), rng))
        return
    model = onnx.load(str(src))
    node = rng.choice(list(model.graph.node))
    kind = rng.choice(("op", "attr", "input", "drop_node", "dtype"))
    if kind == "op":
        node.op_type = rng.choice(("Relu", "Foo", "Quant", "Conv", ""))
    elif kind == "attr" and node.attribute:
        a = rng.choice(list(node.attribute))
        if a.type == onnx.AttributeProto.FLOAT:
            a.f = rng.choice((float("nan"), -1.0, 1e30))
        elif a.type == onnx.AttributeProto.INT:
            a.i = rng.choice((-1, 0, 2**40))
    elif kind == "input" and node.input:
        node.input[rng.randrange(len(node.input))] = "nowhere"
    elif kind == "drop_node":
        model.graph.node.remove(node)
    else:
        model.graph.input[0].type.tensor_type.elem_type = rng.choice((7, 9, 0))
    onnx.save(model, str(path))


def test_fuzzed_qonnx_inputs(tfc_onnx: Path, tmp_path: Path) -> None:
    """bnnflow build's input stage (everything before FINN runs) on corrupted QONNX files."""
    from build_flows.inputs import check_w1a1, load_qonnx

    before = sha256_file(tfc_onnx)
    seen: set[str] = set()
    for s in range(N_CASES):
        rng = random.Random(1000 + s)
        path = tmp_path / f"m{s}.onnx"
        _corrupt_onnx(tfc_onnx, rng, path)
        seen.add(_outcome(lambda: check_w1a1(load_qonnx(path), path)))
    assert sha256_file(tfc_onnx) == before
    assert seen == {"ok", "error"}  # some corruptions leave a buildable graph, most do not


# ---------------------------------------------------------------- folding JSONs
def _corrupt_folding(rng: random.Random) -> Any:
    base: dict[str, Any] = {"Defaults": {}, "MVAU_hls_0": {"PE": 16, "SIMD": 49}, "MVAU_hls_1": {"PE": 8, "SIMD": 16}}
    kind = rng.choice(("value", "type", "nest", "key", "top", "mem_mode"))
    node = rng.choice(("MVAU_hls_0", "MVAU_hls_1", "Defaults"))
    if kind == "value":
        base[node][rng.choice(("PE", "SIMD"))] = rng.choice((0, -3, 10**12, 7, 1.5, float("nan")))
    elif kind == "type":
        base[node] = rng.choice(([], "PE=4", 3, None))
    elif kind == "nest":
        deep: Any = 1
        for _ in range(rng.randint(50, 3000)):
            deep = {"x": deep}
        base[node] = deep
    elif kind == "key":
        base[node][rng.choice(("pe", "", "ram_style"))] = rng.choice(("block", 3, None))
    elif kind == "top":
        return rng.choice(([1, 2], "x", 3, None))
    else:
        base[node]["mem_mode"] = rng.choice(("external", "internal_decoupled", 5))
    return base


def test_fuzzed_folding_files(tmp_path: Path) -> None:
    from build_flows.folding import read_folding

    seen: set[str] = set()
    for s in range(N_CASES):
        rng = random.Random(2000 + s)
        path = tmp_path / f"f{s}.json"
        try:
            text = json.dumps(_corrupt_folding(rng))
        except (ValueError, RecursionError):
            text = "{" * 5000
        if rng.random() < 0.3:
            text = _corrupt_bytes(text.encode(), rng).decode("latin-1")
        path.write_text(text, encoding="latin-1")
        seen.add(_outcome(lambda: read_folding(path)))
    assert seen == {"ok", "error"}


# ---------------------------------------------------------------- build folders
@pytest.fixture(scope="module")
def tfc_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from build_flows.build import build

    d = tmp_path_factory.mktemp("fuzz_build") / "build"
    build(TFC, "Pynq-Z1", d, target_fps=10000, n_check=0)
    return d


def _corruptible_files(build: Path) -> list[Path]:
    files = [build / "manifest.json", *sorted((build / "report").glob("estimate_*.json"))]
    for name in ("memblock.dat", "thresh.h", "params.h"):
        files += sorted((build / "codegen").rglob(name))
    return [f for f in files if f.is_file()]


def test_fuzzed_build_folders(tfc_build: Path, tmp_path: Path) -> None:
    """The simulator on a corrupted copy of a build: the graph's result (generated files that differ
    are reported as mismatches, never silently used) or one BnnflowError."""
    from hw.run import load

    clean = load(tfc_build)
    inputs = _inputs_for(clean)
    want = clean.sim.run(inputs)[0]
    files = _corruptible_files(tfc_build)
    assert len(files) >= 4
    seen: set[str] = set()
    for s in range(N_CASES):
        rng = random.Random(3000 + s)
        copy = tmp_path / f"b{s}"
        shutil.copytree(tfc_build, copy, symlinks=True)
        victim = copy / rng.choice(files).relative_to(tfc_build)
        data = victim.read_bytes()
        victim.write_bytes(_corrupt_bytes(data, rng) if rng.random() < 0.7 else _flip_bytes(data, rng))

        def run() -> None:
            ld = load(copy, from_artifacts=False)
            got = ld.sim.run(inputs)[0]
            assert np.array_equal(got, want)  # constants come from the graph, which is untouched
            if ld.mismatches:
                assert all(m.layer for m in ld.mismatches)

        seen.add(_outcome(run))
        shutil.rmtree(copy)
    assert seen == {"ok", "error"}


def _inputs_for(ld: Any) -> np.ndarray:
    from bnnflow import data
    from hw import verify

    split = data.load("mnist", "test").subset(4)
    return verify.images_as_input(split.images, ld.graph.input_dtype)
