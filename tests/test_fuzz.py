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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import copy_build

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


def _outcome(fn: Callable[..., Any], *args: Any) -> str:
    """``ok`` or ``error`` (a BnnflowError) of ``fn(*args)``; any other exception fails the case."""
    try:
        fn(*args)
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
    kind = rng.choice(
        ("nan", "inf", "reshape", "drop_key", "retype_sd", "retype_meta", "widths", "arch", "dtype", "huge_widths")
    )
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

        def load_and_run(path: Path) -> None:
            model, _ = checkpoint.load(path)
            with torch.no_grad():
                y = model(x)
            assert torch.isfinite(y).all()  # a loaded checkpoint computes finite logits

        seen.add(_outcome(load_and_run, path))
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
        seen.add(_outcome(lambda p: check_w1a1(load_qonnx(p), p), path))
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
        seen.add(_outcome(read_folding, path))
    assert seen == {"ok", "error"}


# ---------------------------------------------------------------- build folders
@pytest.fixture(scope="module")
def tfc_build(shared_tfc_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_build(shared_tfc_build, tmp_path_factory.mktemp("fuzz_build") / "build")


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

        def run(copy: Path) -> None:
            ld = load(copy, from_artifacts=False)
            got = ld.sim.run(inputs)[0]
            assert np.array_equal(got, want)  # constants come from the graph, which is untouched
            if ld.mismatches:
                assert all(m.layer for m in ld.mismatches)

        seen.add(_outcome(run, copy))
        shutil.rmtree(copy)
    assert seen == {"ok", "error"}


def _inputs_for(ld: Any) -> np.ndarray:
    from bnnflow import data
    from hw import verify

    split = data.load("mnist", "test").subset(4)
    return verify.images_as_input(split.images, ld.graph.input_dtype)


# ---------------------------------------------------------------- through the command line
# The same kinds of corruption, each case run through `bnnflow.cli.main` in-process (subprocesses are
# too slow for hundreds of cases): it must end in exit 0 with a correct result, or exit 2 with
# exactly one `bnnflow: error:` line; never a traceback, a hang (a time limit per case) or a file
# changed outside --out. Cheap commands (info, eval, sim, report) take most cases; build and export
# only a few, as they run FINN or Brevitas' export when the corruption leaves a usable input.
CLI_CASES = {"checkpoint": 80, "onnx": 60, "folding": 12, "build_dir": 60}
CASE_LIMIT_S = 180  # a build of TFC on two loaded cores takes up to a minute


class CaseTimeout(BaseException):
    """Raised by SIGALRM in a case that runs too long (BaseException: no `except Exception` stops it)."""


def _tree(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Path -> content hash (or link target) of everything under ``root`` but ``skip``."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents or p.name == f".{skip.name}.lock"):
            continue
        rel = str(p.relative_to(root))
        out[rel] = (
            "link:" + str(p.readlink())
            if p.is_symlink()
            else sha256_file(p)
            if p.is_file()
            else "fifo"
            if p.is_fifo()
            else "dir"
        )
    return out


def _cli_case(
    argv: list[str], root: Path, out: Path | None, capsys: pytest.CaptureFixture[str], sources: dict[Path, str]
) -> tuple[int, str, str]:
    """Run one case; check the contract; returns (exit status, stdout, the error line or '')."""
    import signal

    from bnnflow.cli import main

    before = _tree(root, out)
    capsys.readouterr()

    def expire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"{argv} still running after {CASE_LIMIT_S} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, CASE_LIMIT_S)
    try:
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    stdout, stderr = capsys.readouterr()
    assert "Traceback" not in stderr, (argv, stderr[-3000:])
    errors = [line for line in stderr.splitlines() if line.startswith("bnnflow: error:")]
    assert rc in (0, 1, 2), (argv, rc, stderr[-3000:])
    if rc == 2:
        assert len(errors) == 1, (argv, stderr[-3000:])
    else:
        assert not errors, (argv, stderr[-3000:])
    assert _tree(root, out) == before, f"{argv} changed files outside --out"
    for src, digest in sources.items():
        assert sha256_file(src) == digest, f"{argv} changed {src}"
    return rc, stdout, errors[0] if errors else ""


@pytest.fixture(scope="module")
def clean_sim(tfc_build: Path) -> dict[str, Any]:
    """The clean build's simulation of the first 8 test images (what a corrupted copy must give)."""
    from hw.run import sim_report

    return sim_report(tfc_build, limit=8, finn_limit=0)


def _sources(*paths: Path) -> dict[Path, str]:
    return {p: sha256_file(p) for p in paths}


def test_cli_fuzzed_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Corrupted checkpoints through info, eval (most cases), export and build (a few)."""
    clean = checkpoint.read_raw(TFC)
    sources = _sources(TFC)
    seen: set[int] = set()
    for s in range(CLI_CASES["checkpoint"]):
        rng = random.Random(4000 + s)
        case = tmp_path / f"c{s}"
        case.mkdir()
        ckpt = case / "c.pt"
        _corrupt_checkpoint(rng, ckpt)
        out = case / "out"
        kind = "build" if s % 40 == 19 else "export" if s % 10 == 9 else "eval" if s % 4 == 3 else "info"
        argv = {
            "info": ["info", str(ckpt), "--json"],
            "eval": ["eval", str(ckpt), "--limit", "20", "--json"],
            "export": ["export", str(ckpt), "--check", "0", "--out", str(out / "x.onnx")],
            "build": [
                "build",
                str(ckpt),
                "--board",
                "Pynq-Z1",
                "--target-fps",
                "10000",
                "--check",
                "0",
                "--out",
                str(out),
            ],
        }[kind]
        rc, stdout, _ = _cli_case(argv, case, out, capsys, sources)
        seen.add(rc)
        if rc:
            continue
        if kind == "info":
            info = json.loads(stdout)
            assert info["model"] == clean["arch"] and info["widths"] == clean["widths"], info
        elif kind == "eval":
            r = json.loads(stdout)
            assert r["n"] == 20 and 0.0 <= r["accuracy"] <= 1.0, r
        elif kind == "export":
            from build_flows.inputs import check_finite, load_qonnx

            check_finite(load_qonnx(out / "x.onnx"), out / "x.onnx")
        else:
            assert json.loads((out / "manifest.json").read_text())["format"] == "bnnflow-build"
        shutil.rmtree(case)
    assert seen == {0, 2}


def test_cli_fuzzed_onnx(
    tfc_build: Path, tfc_onnx: Path, clean_sim: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Corrupted ONNX graphs: a build folder's graphs through sim (most cases), and a QONNX input
    through build (a few)."""
    sources = _sources(tfc_onnx, *sorted((tfc_build / "intermediate_models").glob("*.onnx")))
    graphs = ["step_hw_codegen.onnx", "dataflow_parent.onnx", "step_create_dataflow_partition.onnx"]
    seen: set[int] = set()
    for s in range(CLI_CASES["onnx"]):
        rng = random.Random(5000 + s)
        case = tmp_path / f"o{s}"
        case.mkdir()
        out = case / "out"
        if s % 8 == 5:
            src = case / "in.onnx"
            _corrupt_onnx(tfc_onnx, rng, src)
            argv = ["build", str(src), "--board", "Pynq-Z1", "--target-fps", "10000", "--out", str(out)]
        else:
            copy = case / "b"
            shutil.copytree(tfc_build, copy, symlinks=True)
            graph = graphs[s % 3]
            _corrupt_onnx(tfc_build / "intermediate_models" / graph, rng, copy / "intermediate_models" / graph)
            argv = ["sim", str(copy), "--limit", "8", "--finn-limit", "2" if s % 3 == 2 else "0", "--json"]
            out = copy / "sim.json"  # sim's own output
        rc, stdout, _ = _cli_case(argv, case, out, capsys, sources)
        seen.add(rc)
        if argv[0] == "sim" and rc in (0, 1):
            rep = json.loads(stdout)
            assert rep["n"] == 8 and 0.0 <= rep["accuracy"] <= 1.0, rep
            assert (rc == 1) == bool(rep["artifact_mismatches"]), rep  # 1: generated files differ, said so
        elif rc == 0:
            assert json.loads((out / "manifest.json").read_text())["format"] == "bnnflow-build"
        else:
            assert rc == 2
        shutil.rmtree(case)
    assert 2 in seen and seen & {0, 1}


def test_cli_fuzzed_folding_files(
    tfc_build: Path, tfc_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Corrupted folding files (FINN's own folding of the TFC build, altered) through build."""
    base = json.loads((tfc_build / "report" / "auto_folding_config.json").read_text())
    nodes = sorted(n for n in base if n != "Defaults")
    sources = _sources(tfc_onnx)
    seen: set[int] = set()
    for s in range(CLI_CASES["folding"]):
        rng = random.Random(6000 + s)
        case = tmp_path / f"f{s}"
        case.mkdir()
        cfg = json.loads(json.dumps(base))
        node = rng.choice(nodes)
        kind = rng.choice(("bytes", "value", "type", "nest", "mem_mode", "defaults"))
        if kind == "value":
            cfg[node][rng.choice(("PE", "SIMD"))] = rng.choice((0, -3, 10**12, 3, 1.5, "4"))
        elif kind == "type":
            cfg[node] = rng.choice(([], "PE=4", 3, None))
        elif kind == "nest":
            deep: Any = 1
            for _ in range(rng.randint(50, 3000)):
                deep = [deep]
            cfg[node]["PE"] = deep
        elif kind == "mem_mode":
            cfg[node]["mem_mode"] = rng.choice(("external", "internal_embedded", 5))
        elif kind == "defaults":
            cfg["Defaults"] = rng.choice(({"PE": 3}, {"PE": [3, "all"]}, {"PE": [1, ["MVAU_hls"]]}, []))
        try:
            text = json.dumps(cfg)
        except (ValueError, RecursionError):
            text = "[" * 100000
        if kind == "bytes":
            text = _corrupt_bytes(text.encode(), rng).decode("latin-1")
        fold = case / "fold.json"
        fold.write_text(text, encoding="latin-1")
        out = case / "out"
        rc, _, line = _cli_case(
            ["build", str(tfc_onnx), "--board", "Pynq-Z1", "--folding", str(fold), "--out", str(out)],
            case,
            out,
            capsys,
            sources,
        )
        seen.add(rc)
        if rc == 0:
            m = json.loads((out / "manifest.json").read_text())
            assert m["format"] == "bnnflow-build" and m["folding_file_sha256"] == sha256_file(fold)
        else:
            assert rc == 2 and not out.exists(), line
        shutil.rmtree(case)
    assert 2 in seen


def _damage_build(copy: Path, files: list[Path], tfc_build: Path, rng: random.Random) -> None:
    """Corrupt, remove or replace one of the build's own files (manifest, FINN reports, generated code)."""
    import os

    victim = copy / rng.choice(files).relative_to(tfc_build)
    how = rng.choice(("bytes", "bytes", "bytes", "flip", "remove", "folder", "fifo", "json"))
    if how == "remove":
        victim.unlink()
    elif how == "folder":
        victim.unlink()
        victim.mkdir()
    elif how == "fifo":
        victim.unlink()
        os.mkfifo(victim)
    elif how == "json" and victim.suffix == ".json":
        obj = json.loads(victim.read_text())
        if isinstance(obj, dict) and obj:
            key = rng.choice(sorted(obj))
            obj[key] = rng.choice((None, "x", [], -1, float("nan"), {"a": 1}))
        victim.write_text(json.dumps(obj))
    else:
        data = victim.read_bytes()
        victim.write_bytes(_flip_bytes(data, rng) if how == "flip" else _corrupt_bytes(data, rng))


def test_cli_fuzzed_build_folders(
    tfc_build: Path, clean_sim: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Damaged copies of a build through sim (from the graph and from the generated files) and report:
    the clean build's accuracy (its graph is intact), the generated files' differences reported
    (exit 1), or one error."""
    files = _corruptible_files(tfc_build)
    sources = _sources(*files)
    seen: set[int] = set()
    for s in range(CLI_CASES["build_dir"]):
        rng = random.Random(7000 + s)
        case = tmp_path / f"d{s}"
        case.mkdir()
        copy = case / "b"
        shutil.copytree(tfc_build, copy, symlinks=True)
        _damage_build(copy, files, tfc_build, rng)
        kind = ("sim", "sim-artifacts", "report")[s % 3]
        out = case / "r" if kind == "report" else copy / "sim.json"  # the command's own output
        argv = (
            ["report", str(copy), "--out", str(out)]
            if kind == "report"
            else [
                "sim",
                str(copy),
                "--limit",
                "8",
                "--finn-limit",
                "0",
                "--json",
                *(["--from-artifacts"] if kind == "sim-artifacts" else []),
            ]
        )
        rc, stdout, _ = _cli_case(argv, case, out, capsys, sources)
        seen.add(rc)
        if kind == "report":
            assert rc in (0, 2)
            assert (out / "report.md").is_file() if rc == 0 else not out.exists()
        elif rc in (0, 1):
            rep = json.loads(stdout)
            assert (rc == 1) == bool(rep["artifact_mismatches"]), rep
            if rc == 0:  # the graph's constants, or generated files equal to them: the clean result
                assert rep["accuracy"] == clean_sim["accuracy"] and rep["n"] == 8, rep
        shutil.rmtree(case)
    assert seen >= {0, 2}
