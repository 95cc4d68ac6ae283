"""Nothing lost, nothing silent (issue 18): output folders, concurrent and killed runs, bad values.

One test (or one parametrized test) per defect of the issue; the number in
each test's docstring is the item it covers. The build folder every test
reads is one TFC build made once for the module. Commands run in-process
through ``bnnflow.cli.main`` unless the defect needs a second process (a
concurrent build, a signal).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import copy_build

from bnnflow import checkpoint, data
from bnnflow.errors import BnnflowError, CheckpointError, DataError
from bnnflow.files import atomic_write
from build_flows.build import build

REPO = Path(__file__).resolve().parent.parent
TFC = REPO / "models" / "zoo" / "tfc_w1a1.pt"
#: subprocesses import the tree this file belongs to
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
CLI = "import sys; from bnnflow.cli import main; sys.exit(main(sys.argv[1:]))"
GARBAGE_ONNX = b"\x08\x07garbage" * 50


@pytest.fixture(scope="module")
def tfc_build(shared_tfc_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_build(shared_tfc_build, tmp_path_factory.mktemp("tfc") / "build")


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from bnnflow.cli import main

    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    return rc, capsys.readouterr().err


def _one_error(argv: list[str], capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    """The command fails with exit status 2 and one ``error:`` line holding every fragment."""
    rc, err = _cli(argv, capsys)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert rc == 2 and len(lines) == 1, (rc, err)
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def _readonly(tmp_path: Path) -> Path:
    """A folder this process cannot write in (root writes through permission bits; sysfs refuses)."""
    if os.geteuid() == 0:
        return Path("/sys/bnnflow-test-readonly")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    return d


# ---------------------------------------------------------------- 1: ownership of --out
def test_build_leaves_a_foreign_folder_with_a_manifest_alone(tmp_path: Path) -> None:
    """1: a folder with someone else's manifest.json is not a bnnflow build: refused, untouched."""
    v = tmp_path / "v"
    (v / "src").mkdir(parents=True)
    (v / "manifest.json").write_text('{"name": "app"}')
    (v / "thesis.tex").write_text("x")
    with pytest.raises(BnnflowError, match="not a bnnflow build folder"):
        build(TFC, "Pynq-Z1", v, target_fps=1000, n_check=0)
    assert (v / "thesis.tex").read_text() == "x" and (v / "src").is_dir()
    assert _listing(v) == ["manifest.json", "src", "thesis.tex"] and _listing(tmp_path) == ["v"]


# ---------------------------------------------------------------- 2: sweep labels
@pytest.mark.parametrize("label", ["../../victim", "ABSOLUTE", "a/b", ".."])
def test_sweep_labels_stay_inside_out(tmp_path: Path, label: str) -> None:
    """2: a label is a plain name; one that leads out of --out is refused before anything is touched."""
    from reports.sweep import make_sweep

    victim = tmp_path / "a" / "victim" / "fps_1000"
    victim.mkdir(parents=True)
    (victim / "precious").write_text("x")
    out = tmp_path / "a" / "b" / "sweep"
    lab = str(tmp_path / "a" / "victim") if label == "ABSOLUTE" else label
    with pytest.raises(BnnflowError, match="--labels"):
        make_sweep([TFC], "Pynq-Z1", [1000.0], out, labels=[lab])
    assert _listing(victim) == ["precious"] and (victim / "precious").read_text() == "x"
    assert _listing(tmp_path / "a") == ["victim"]


def test_sweep_does_not_delete_a_foreign_folder_in_out(tmp_path: Path) -> None:
    """2: a folder at OUT/<label>/fps_<F> that is not a bnnflow build is refused, not deleted."""
    from reports.sweep import make_sweep

    d = tmp_path / "sweep" / "tfc_w1a1" / "fps_1000"
    d.mkdir(parents=True)
    (d / "notes.txt").write_text("x")
    with pytest.raises(BnnflowError, match="not a bnnflow build folder"):
        make_sweep([TFC], "Pynq-Z1", [1000.0], tmp_path / "sweep")
    assert _listing(d) == ["notes.txt"]


# ---------------------------------------------------------------- 3: two builds into one --out
def test_second_build_into_the_same_out_stops_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """3: while a build runs, a second `bnnflow build` into its --out (another process) fails at once
    with one line; the first one completes and every output it lists exists."""
    import build_flows.build as bb

    out = tmp_path / "out"
    second: dict = {}
    real = bb.prepare_input

    def prepare(*a, **kw):
        t0 = time.monotonic()
        second["res"] = subprocess.run(
            [
                sys.executable,
                "-c",
                CLI,
                "build",
                str(TFC),
                "--board",
                "Pynq-Z1",
                "--target-fps",
                "1000",
                "--check",
                "0",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=600,
        )
        second["s"] = time.monotonic() - t0
        return real(*a, **kw)

    monkeypatch.setattr(bb, "prepare_input", prepare)
    r = bb.build(TFC, "Pynq-Z1", out, target_fps=1000, n_check=0)
    res = second["res"]
    assert res.returncode == 2 and "another bnnflow run" in res.stderr, res.stderr[-3000:]
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert json.dumps(m, sort_keys=True) == json.dumps(r.manifest.to_dict(), sort_keys=True, default=str)  # NaN != NaN
    for f in m["outputs"].values():
        assert (out / f).exists(), f
    assert _listing(tmp_path) == ["out"]


# ---------------------------------------------------------------- 4: killed rebuilds
SIGTERM_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import build_flows.build as bb

    def prepare(*a, **kw):  # the rebuild is under way (DIR links to its work folder) when SIGTERM comes
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)

    bb.prepare_input = prepare
    from bnnflow.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigterm_during_a_rebuild_puts_the_previous_build_back(tfc_build: Path, tmp_path: Path) -> None:
    """4: SIGTERM while rebuilding over a good build: the good build is back in place, nothing hidden."""
    out = copy_build(tfc_build, tmp_path / "out")
    before = (out / "manifest.json").read_text()
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            SIGTERM_SCRIPT,
            "build",
            str(TFC),
            "--board",
            "Pynq-Z1",
            "--target-fps",
            "1000",
            "--check",
            "0",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert res.returncode == 128 + signal.SIGTERM, (res.returncode, res.stderr[-3000:])
    assert "SIGTERM" in res.stderr and "Traceback" not in res.stderr and res.stderr.count("\n") == 1
    assert out.is_dir() and not out.is_symlink()
    assert (out / "manifest.json").read_text() == before
    assert _listing(tmp_path) == ["out"]


def test_leftovers_of_a_killed_build_are_cleaned_and_the_previous_build_restored(
    tfc_build: Path, tmp_path: Path
) -> None:
    """4: what a SIGKILLed rebuild leaves (DIR linking to its half build, the previous build hidden in
    .DIR.old-*) is cleaned by the next build into DIR, which first puts the previous build back."""
    copy_build(tfc_build, tmp_path / ".out.old-abc123")
    work = tmp_path / ".out.building-xyz789"
    (work / "intermediate_models").mkdir(parents=True)
    out = tmp_path / "out"
    out.symlink_to(work.name, target_is_directory=True)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(GARBAGE_ONNX)
    with pytest.raises(BnnflowError, match="not a readable ONNX model"):
        build(bad, "Pynq-Z1", out, target_fps=1000, n_check=0)
    assert out.is_dir() and not out.is_symlink()
    assert (out / "manifest.json").read_text() == (tfc_build / "manifest.json").read_text()
    assert _listing(tmp_path) == ["bad.onnx", "out"]


def test_report_refuses_an_unfinished_build(tfc_build: Path, tmp_path: Path) -> None:
    """4: `report` does not take a half build (DIR linking to a work folder, no manifest)."""
    from reports.report import make_report

    work = copy_build(tfc_build, tmp_path / ".half.building-1")
    (work / "manifest.json").unlink()
    half = tmp_path / "half"
    half.symlink_to(work.name, target_is_directory=True)
    for d in (half, work):
        with pytest.raises(BnnflowError, match="not a finished bnnflow build"):
            make_report([d], tmp_path / "r")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- 5: NaN weights
def test_nan_weights_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """5: a checkpoint with a NaN weight is refused by load, eval, export and build, at once."""
    raw = torch.load(TFC, weights_only=True)
    raw["state_dict"]["units.0.weight_layer.weight"][0, 0] = float("nan")
    bad = tmp_path / "nan.pt"
    torch.save(raw, bad)
    with pytest.raises(CheckpointError, match="not finite"):
        checkpoint.load(bad)
    _one_error(["eval", str(bad), "--limit", "10"], capsys, "not finite", str(bad))
    _one_error(["export", str(bad), "--out", str(tmp_path / "x.onnx")], capsys, "not finite")
    t0 = time.monotonic()
    with pytest.raises(BnnflowError, match="not finite"):
        build(bad, "Pynq-Z1", tmp_path / "b", target_fps=1000, n_check=0)
    assert time.monotonic() - t0 < 30
    assert _listing(tmp_path) == ["nan.pt"]


# ---------------------------------------------------------------- 8: output paths
OUTPUT_CASES = {
    "train-out-file": (
        [
            "train",
            "--model",
            "tfc",
            "--epochs",
            "1",
            "--train-limit",
            "100",
            "--holdout",
            "0",
            "--eval-limit",
            "10",
            "--out",
            "{file}",
        ],
        "is a file",
    ),
    "train-out-readonly": (
        [
            "train",
            "--model",
            "tfc",
            "--epochs",
            "1",
            "--train-limit",
            "100",
            "--holdout",
            "0",
            "--eval-limit",
            "10",
            "--out",
            "{ro}/run",
        ],
        "cannot write",
    ),
    "export-out-folder": (["export", str(TFC), "--check", "0", "--out", "{dir}"], "is a folder"),
    "export-out-readonly": (["export", str(TFC), "--check", "0", "--out", "{ro}/x.onnx"], "cannot write"),
    "export-out-under-file": (["export", str(TFC), "--check", "0", "--out", "{file}/x.onnx"], "is a file"),
    "sim-output-folder": (["sim", "{build}", "--input", "{npy}", "--output", "{dir}"], "is a folder"),
    "sim-output-readonly": (["sim", "{build}", "--input", "{npy}", "--output", "{ro}/y.npy"], "cannot write"),
    "report-out-file": (["report", "{build}", "--out", "{file}"], "is a file"),
    "report-out-readonly": (["report", "{build}", "--out", "{ro}/r"], "cannot write"),
    "sweep-out-file": (["sweep", str(TFC), "--board", "Pynq-Z1", "--fps", "1000", "--out", "{file}"], "is a file"),
    "sweep-out-readonly": (
        ["sweep", str(TFC), "--board", "Pynq-Z1", "--fps", "1000", "--out", "{ro}/s"],
        "cannot write",
    ),
    "build-out-under-file": (
        ["build", str(TFC), "--board", "Pynq-Z1", "--target-fps", "1000", "--check", "0", "--out", "{file}/b"],
        "is a file",
    ),
    "build-out-readonly": (
        ["build", str(TFC), "--board", "Pynq-Z1", "--target-fps", "1000", "--check", "0", "--out", "{ro}/b"],
        "cannot write",
    ),
}


@pytest.mark.parametrize("case", list(OUTPUT_CASES))
def test_unwritable_output_paths_are_one_line(
    case: str, tfc_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """8: an output path that is a folder, a file or read-only: one line naming it, nothing written."""
    argv, what = OUTPUT_CASES[case]
    afile, adir = tmp_path / "afile", tmp_path / "adir"
    afile.write_text("x")
    adir.mkdir()
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((2, 1, 28, 28), dtype=np.uint8))
    subst = {
        "file": str(afile),
        "dir": str(adir),
        "ro": str(_readonly(tmp_path)),
        "build": str(tfc_build),
        "npy": str(npy),
    }
    line = _one_error([a.format(**subst) for a in argv], capsys, what)
    assert str(tmp_path) in line or "/sys/" in line
    assert afile.read_text() == "x" and _listing(adir) == []
    assert set(_listing(tmp_path)) <= {"afile", "adir", "x.npy", "ro"}


# ---------------------------------------------------------------- 8, 10: numeric options
TRAIN = ["train", "--model", "tfc", "--epochs", "1", "--holdout", "0", "--eval-limit", "10"]
BUILD = ["build", str(TFC), "--board", "Pynq-Z1", "--check", "0"]
NUMBER_CASES = {
    "train-lr-nan": (TRAIN + ["--train-limit", "100", "--lr", "nan"], "--lr"),
    "train-weight-decay-negative": (TRAIN + ["--train-limit", "100", "--weight-decay", "-1"], "--weight-decay"),
    "train-train-limit-0": (TRAIN + ["--train-limit", "0"], "--train-limit"),
    "train-widths-huge": (TRAIN + ["--train-limit", "100", "--widths", "100000,64,64"], "--widths"),
    "build-target-fps-inf": (BUILD + ["--target-fps", "inf"], "--target-fps"),
    "build-target-fps-half": (BUILD + ["--target-fps", "0.5"], "--target-fps"),
    "build-target-fps-1e12": (BUILD + ["--target-fps", "1e12"], "--target-fps 1e+12"),
    "build-check-negative": (BUILD + ["--target-fps", "1000", "--check", "-5"], "--check"),
    "sweep-fps-inf": (["sweep", str(TFC), "--board", "Pynq-Z1", "--fps", "1000,inf"], "--fps"),
    "eval-limit-0": (["eval", str(TFC), "--limit", "0"], "--limit"),
    "eval-limit-negative": (["eval", str(TFC), "--limit", "-5"], "--limit"),
    "export-check-negative": (["export", str(TFC), "--check", "-5"], "--check"),
    "sim-limit-0": (["sim", "{build}", "--limit", "0"], "--limit"),
    "sim-batch-size-0": (["sim", "{build}", "--limit", "10", "--batch-size", "0"], "--batch-size"),
    "sim-finn-limit-negative": (["sim", "{build}", "--limit", "10", "--finn-limit", "-3"], "--finn-limit"),
    "sim-threads-0": (["sim", "{build}", "--limit", "10", "--threads", "0"], "--threads"),
}


@pytest.mark.parametrize("case", list(NUMBER_CASES))
def test_nonsense_numbers_are_one_line(
    case: str, tfc_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """8, 10: NaN, infinite, zero or negative counts, unreachable targets: refused in one line."""
    argv, option = NUMBER_CASES[case]
    argv = [a.format(build=tfc_build) for a in argv]
    if argv[0] in ("train", "build", "export", "sweep"):
        argv += ["--out", str(tmp_path / "out")]
    _one_error(argv, capsys, option)
    assert not (tmp_path / "out").exists()


def test_target_fps_bounds_in_the_library(tmp_path: Path) -> None:
    """10: build() itself refuses a target below 1 FPS or above one frame per cycle, before FINN."""
    for fps, what in ((0.5, ">= 1"), (1e12, "one frame per clock cycle"), (float("nan"), ">= 1")):
        with pytest.raises(BnnflowError, match="--target-fps") as exc:
            build(TFC, "Pynq-Z1", tmp_path / "b", target_fps=fps, n_check=0)
        assert what in str(exc.value), str(exc.value)
    assert _listing(tmp_path) == []


def test_a_missed_target_is_said(tfc_build: Path) -> None:
    """10: the summary says when FINN's folding does not reach the target FPS."""
    from dataclasses import replace

    from build_flows.build_dir import read_build_manifest
    from build_flows.cli import summary_lines

    m = read_build_manifest(tfc_build)
    assert not any("not reached" in line for line in summary_lines(m, tfc_build))
    reached = m.estimates["estimated_throughput_fps"]
    m = replace(m, target_fps=reached * 100, target_fps_used=reached * 100)
    missed = [line for line in summary_lines(m, tfc_build) if "not reached" in line]
    assert len(missed) == 1 and f"{reached:,.0f}" in missed[0]


# ---------------------------------------------------------------- 8: files with bad contents
STATES = {
    "garbage": b"not a torch file",
    "no-config": {"format": "bnnflow-train-state"},
    "config-not-a-dict": {"format": "bnnflow-train-state", "config": "x"},
    "checkpoint-not-a-dict": "CKPT",
}


@pytest.mark.parametrize("kind", list(STATES))
def test_corrupt_or_foreign_train_state_on_resume(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """8: a corrupt or foreign state.pt on --resume: one line naming it."""
    run = tmp_path / "run"
    run.mkdir()
    state = STATES[kind]
    if isinstance(state, bytes):
        (run / "state.pt").write_bytes(state)
    else:
        if state == "CKPT":
            from dataclasses import asdict

            from bnnflow.train import TrainConfig

            state = {
                "format": "bnnflow-train-state",
                "epoch": 1,
                "history": [],
                "wall_time_s": 0.0,
                "optimizer": {},
                "checkpoint": [1, 2],
                "best": None,
                "config": asdict(TrainConfig(arch="tfc", epochs=1, holdout=0, train_limit=100, eval_limit=10)),
            }
        torch.save(state, run / "state.pt")
    _one_error(TRAIN + ["--train-limit", "100", "--out", str(run), "--resume"], capsys, "state.pt")
    assert _listing(run) == ["state.pt"]


def test_deeply_nested_folding_json(tmp_path: Path) -> None:
    """8: a folding file nested deeper than Python's JSON reader goes: one error naming it."""
    fold = tmp_path / "fold.json"
    fold.write_text("[" * 200000 + "]" * 200000)
    with pytest.raises(BnnflowError, match="fold.json"):
        build(TFC, "Pynq-Z1", tmp_path / "b", folding=fold, n_check=0)
    assert _listing(tmp_path) == ["fold.json"]


def test_sim_input_files(tfc_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """8, 13: a scalar .npy and a text file given as .npy: one line saying what is wrong (not "pickled")."""
    scalar, text = tmp_path / "s.npy", tmp_path / "t.npy"
    np.save(scalar, np.float32(3.0))
    text.write_text("1 2 3\n")
    y = tmp_path / "y.npy"
    _one_error(["sim", str(tfc_build), "--input", str(scalar), "--output", str(y)], capsys, str(scalar), "scalar")
    line = _one_error(
        ["sim", str(tfc_build), "--input", str(text), "--output", str(y)], capsys, str(text), "not a .npy file"
    )
    assert "pickled" not in line
    assert not y.exists()


def test_corrupt_cifar_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """8: a damaged cache of the decoded CIFAR-10 arrays: a DataError naming it and what to do."""
    from bnnflow.files import sha256_file

    tar = tmp_path / "data" / "cifar10" / "cifar10-jpeg.tar.gz"
    tar.parent.mkdir(parents=True)
    tar.write_bytes(b"any tar")
    cache = tmp_path / "cache"
    cache.mkdir()
    cached = cache / f"cifar10-v2-{sha256_file(tar)[:16]}.npz"
    cached.write_bytes(b"PK\x03\x04 damaged")
    monkeypatch.setenv("BNNFLOW_CACHE_DIR", str(cache))
    with pytest.raises(DataError, match="delete it") as err:
        data.load("cifar10", "test", tmp_path / "data")
    assert str(cached) in str(err.value)


def _save_raw(tmp_path: Path, name: str, **changes) -> Path:
    raw = torch.load(TFC, weights_only=True)
    raw.update(changes)
    path = tmp_path / name
    torch.save(raw, path)
    return path


def test_checkpoint_entries_of_the_wrong_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """8: a checkpoint whose state_dict or meta is not a dict: one line."""
    for name, change in (
        ("sd.pt", {"state_dict": [1, 2]}),
        ("meta.pt", {"meta": "x"}),
        ("widths.pt", {"widths": "64,64,64"}),
    ):
        path = _save_raw(tmp_path, name, **change)
        with pytest.raises(CheckpointError, match=str(path)):
            checkpoint.load(path)
        _one_error(["info", str(path)], capsys, str(path))


# ---------------------------------------------------------------- 9: widths before allocation
def test_widths_are_bounded_before_allocation(tmp_path: Path) -> None:
    """9: a small checkpoint that claims huge widths is refused without building the network."""
    from bnnflow.train import TrainConfig

    t0 = time.monotonic()
    path = _save_raw(tmp_path, "wide.pt", widths=[1, 2**24, 2**24])
    with pytest.raises(CheckpointError, match="width"):
        checkpoint.load(path)
    path = _save_raw(tmp_path, "big.pt", arch="lfc", widths=[65536] * 3)
    with pytest.raises(CheckpointError, match="parameters"):
        checkpoint.load(path)
    path = _save_raw(tmp_path, "other.pt", widths=[64, 64, 32])  # bounded, but not these weights
    with pytest.raises(CheckpointError, match="do not fit"):
        checkpoint.load(path)
    with pytest.raises(BnnflowError, match="parameters"):
        TrainConfig(arch="lfc", widths=[60000] * 3).validate()
    assert time.monotonic() - t0 < 10


# ---------------------------------------------------------------- 10: folding files
def test_folding_with_external_weights_is_refused(tmp_path: Path) -> None:
    """10: mem_mode external builds an accelerator without its weights (sim refuses it): refused first."""
    fold = tmp_path / "fold.json"
    for cfg in (
        {"MVAU_hls_0": {"PE": 1, "mem_mode": "external"}},
        {"Defaults": {"mem_mode": ["external", ["MVAU_hls"]]}},
    ):
        fold.write_text(json.dumps(cfg))
        with pytest.raises(BnnflowError, match="mem_mode"):
            build(TFC, "Pynq-Z1", tmp_path / "b", folding=fold, n_check=0)
    assert _listing(tmp_path) == ["fold.json"]


def test_folding_defaults_are_checked(tfc_build: Path, tmp_path: Path) -> None:
    """10: FINN's "Defaults" entries get the same divisibility check as named nodes."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import GiveUniqueNodeNames

    from build_flows.folding import check_folding

    graph = ModelWrapper(str(tfc_build / "intermediate_models" / "step_specialize_layers.onnx"))
    graph = graph.transform(GiveUniqueNodeNames())
    path = tmp_path / "fold.json"
    check_folding({"Defaults": {"PE": [1, ["MVAU_hls"]]}}, graph, path)
    with pytest.raises(BnnflowError, match=r"Defaults.*MVAU_hls_\d: PE=3 does not divide MH=64"):
        check_folding({"Defaults": {"PE": [3, ["MVAU_hls"]]}}, graph, path)
    with pytest.raises(BnnflowError, match="PE=3 does not divide"):
        check_folding({"Defaults": {"PE": [3, "all"]}}, graph, path)
    # a node's own entry wins over the default, as in FINN
    names = [n.name for n in graph.graph.node if n.op_type == "MVAU_hls"]
    check_folding({"Defaults": {"PE": [3, ["MVAU_hls"]]}, **{n: {"PE": 1} for n in names}}, graph, path)
    with pytest.raises(BnnflowError, match="Defaults"):
        check_folding({"Defaults": {"PE": 3}}, graph, path)


# ---------------------------------------------------------------- 12: file modes
def test_atomic_files_follow_the_umask(tmp_path: Path) -> None:
    """12: files written atomically get 0o666 less the umask, like open(), not mkstemp's 0o600."""
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.md", "x")
        model, meta = checkpoint.load(TFC)
        checkpoint.save(model, meta, tmp_path / "c.pt")
        assert stat.S_IMODE((tmp_path / "a.md").stat().st_mode) == 0o644
        assert stat.S_IMODE((tmp_path / "c.pt").stat().st_mode) == 0o644
        os.umask(0o002)
        atomic_write(tmp_path / "b.md", "x")
        assert stat.S_IMODE((tmp_path / "b.md").stat().st_mode) == 0o664
    finally:
        os.umask(old)


# ---------------------------------------------------------------- 13: messages
def test_checkpoint_with_python_objects_says_what_it_holds(tmp_path: Path) -> None:
    """13: the refusal of a pickle with code does not read as advice to turn the safety check off."""
    bad = tmp_path / "obj.pt"
    torch.save({"format": "bnnflow-checkpoint", "x": argparse.Namespace(a=1)}, bad)
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(bad)
    msg = str(err.value)
    assert "argparse.Namespace" in msg and str(bad) in msg
    assert "False" not in msg and "trust" not in msg and "\x1b" not in msg


def test_finn_error_names_the_folding_file(tfc_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """13: FINN failing while it applies a folding file names that file, not the build's model.onnx."""
    from finn.builder import build_dataflow_steps

    def step_apply_folding_config(model, cfg):  # FINN's step, failing
        raise RuntimeError("boom")

    monkeypatch.setitem(
        build_dataflow_steps.build_dataflow_step_lookup, "step_apply_folding_config", step_apply_folding_config
    )
    fold = tmp_path / "fold.json"
    fold.write_text((tfc_build / "report" / "auto_folding_config.json").read_text())
    with pytest.raises(BnnflowError) as err:
        build(TFC, "Pynq-Z1", tmp_path / "b", folding=fold, n_check=0)
    msg = str(err.value)
    assert msg.startswith(f"{fold}: ") and "boom" in msg and "model.onnx" not in msg
    assert _listing(tmp_path) == ["fold.json"]


def test_interrupted_build_does_not_suggest_resume(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """13: Ctrl-C in `build` does not point to a --resume that build does not have."""
    import build_flows.build as bb

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(bb, "build", interrupted)
    rc, err = _cli(
        ["build", str(TFC), "--board", "Pynq-Z1", "--target-fps", "1000", "--out", str(tmp_path / "b")], capsys
    )
    assert rc == 130 and "interrupted" in err and "--resume" not in err


def test_bad_sim_json_says_how_to_rewrite_it(tfc_build: Path, tmp_path: Path) -> None:
    """13: a malformed DIR/sim.json is the simulator's file: the message says to rerun `bnnflow sim`."""
    from reports.report import make_report

    d = copy_build(tfc_build, tmp_path / "tfc")
    (d / "sim.json").write_text("{bad")
    with pytest.raises(BnnflowError) as err:
        make_report([d], tmp_path / "r")
    msg = str(err.value)
    assert str(d / "sim.json") in msg and "bnnflow sim" in msg and "rebuild" not in msg


# ---------------------------------------------------------------- 11 and the prune parts of 8, 10
def test_prune_out_equal_to_the_input_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "tfc.pt"
    shutil.copyfile(TFC, src)
    before = src.read_bytes()
    link = tmp_path / "same.pt"
    link.symlink_to(src)
    for out in (src, link):
        _one_error(
            ["prune", str(src), "--target-pfr", "0.5", "--out", str(out)], capsys, "is the checkpoint being pruned"
        )
    assert src.read_bytes() == before and not (tmp_path / "tfc_work").exists()


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--lr-main", "nan"], "--lr-main"),
        (["--kd-temp", "0"], "--kd-temp"),
        (["--batch-size", "0"], "--batch-size"),
        (["--granularity", "-2"], "--granularity"),
        (["--seed", "-1"], "--seed"),
        (["--sparsity", "inf"], "--sparsity"),
    ],
)
def test_prune_numeric_options_are_checked(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    _one_error(["prune", str(TFC), "--target-pfr", "0.5", "--out", "/tmp/never.pt", *argv], capsys, fragment)


def test_prune_out_that_cannot_be_written_fails_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "x.pt"
    folder.mkdir()
    _one_error(["prune", str(TFC), "--target-pfr", "0.5", "--out", str(folder)], capsys, "is a folder")
    assert list(tmp_path.iterdir()) == [folder]


# ---------------------------------------------------------------- 6 and 7
def test_copied_build_is_checked_against_its_own_files(tfc_build: Path, tmp_path: Path) -> None:
    """A copy whose memblock.dat was altered is caught, although the graph names the original's files."""
    from hw.run import load

    copy = copy_build(tfc_build, tmp_path / "copy")
    assert not load(copy).mismatches
    mem = sorted((copy / "codegen").rglob("memblock.dat"))[0]
    lines = mem.read_text().splitlines()
    lines[0] = ("1" if lines[0][0] != "1" else "2") + lines[0][1:]
    mem.write_text("\n".join(lines) + "\n")
    assert load(copy).mismatches, "the copy's altered weights went unnoticed"
    shutil.rmtree(mem.parent)
    with pytest.raises(BnnflowError, match="not found inside"):
        load(copy)


@pytest.mark.parametrize(
    "graph", ["step_hw_codegen.onnx", "step_create_dataflow_partition.onnx", "dataflow_parent.onnx"]
)
def test_missing_graph_is_not_replaced_silently(
    tfc_build: Path, tmp_path: Path, graph: str, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = copy_build(tfc_build, tmp_path / "copy")
    (copy / "intermediate_models" / graph).unlink()
    _one_error(["sim", str(copy), "--limit", "5"], capsys, graph, "missing")


# ---------------------------------------------------------------- 14: numba's cache
def test_simulator_kernels_cache_outside_the_package(tmp_path: Path) -> None:
    """Compiled kernels go to bnnflow's cache folder, not beside hw/kernels.py (a read-only install)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["BNNFLOW_CACHE_DIR"] = str(tmp_path / "cache")
    code = (
        "import numpy as np, numba.core.config as c; from hw import kernels as k; "
        "print(c.CACHE_DIR); "
        "k.apply_lut(np.zeros((2, 3), np.int64), np.zeros((3, 4), np.int64), 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[0] == str(tmp_path / "cache" / "numba")
    assert any((tmp_path / "cache" / "numba").rglob("*.nbi")), "no kernel was cached there"


# ---------------------------------------------------------------- the rest of 14, 3, 5, 13, killed runs
def _alarm(seconds: float):
    """A block that raises TimeoutError after ``seconds`` (a read that would block forever, e.g. a FIFO)."""
    import contextlib

    @contextlib.contextmanager
    def bounded():
        def expire(signum, frame):
            raise TimeoutError(f"still running after {seconds} s")

        old = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)

    return bounded()


def test_failed_sweep_leaves_no_empty_folders(tmp_path: Path) -> None:
    """14: a sweep whose build fails leaves neither an empty OUT/<name>/ nor an empty OUT it created;
    an OUT that was there stays as it was."""
    from reports.sweep import make_sweep

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(GARBAGE_ONNX)
    with pytest.raises(BnnflowError, match="not a readable ONNX model"):
        make_sweep([bad], "Pynq-Z1", [1000.0], tmp_path / "new" / "sweep")
    assert _listing(tmp_path) == ["bad.onnx"]
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("x")
    with pytest.raises(BnnflowError, match="not a readable ONNX model"):
        make_sweep([bad], "Pynq-Z1", [1000.0, 2000.0], kept)
    assert _listing(kept) == ["notes.txt"] and _listing(tmp_path) == ["bad.onnx", "kept"]


TRAIN_RUN = [
    "train",
    "--model",
    "tfc",
    "--epochs",
    "1",
    "--train-limit",
    "200",
    "--holdout",
    "0",
    "--eval-limit",
    "20",
    "--batch-size",
    "50",
]


def test_second_train_into_the_same_out_stops_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """3 (for train): while a run trains into OUT, a second `bnnflow train` into OUT (another process)
    stops at once with one line; the first run's files are its own."""
    import bnnflow.train as bt

    out = tmp_path / "run"
    second: dict = {}
    real = bt.train_epoch

    def epoch(*a, **kw):
        if "res" not in second:
            t0 = time.monotonic()
            second["res"] = subprocess.run(
                [sys.executable, "-c", CLI, *TRAIN_RUN, "--seed", "7", "--out", str(out)],
                capture_output=True,
                text=True,
                env=ENV,
                timeout=600,
            )
            second["s"] = time.monotonic() - t0
        return real(*a, **kw)

    monkeypatch.setattr(bt, "train_epoch", epoch)
    rc, err = _cli([*TRAIN_RUN, "--out", str(out)], capsys)
    assert rc == 0, err
    res = second["res"]
    assert res.returncode == 2 and "another bnnflow run" in res.stderr, res.stderr[-3000:]
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    _, meta = checkpoint.load(out / "model.pt")
    assert meta["train"]["seed"] == 0  # the first run's network, not the second's
    assert _listing(out) == ["model.pt", "state.pt"] and _listing(tmp_path) == ["run"]


@pytest.fixture(scope="module")
def tfc_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from build_flows.export import export

    out = tmp_path_factory.mktemp("onnx") / "tfc.onnx"
    export(TFC, out, n_check=0)
    return out


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_qonnx_with_non_finite_weights_is_refused_before_finn(
    value: float, tfc_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """5 (QONNX input): a weight that is NaN or infinite is one error before FINN runs, naming the tensor."""
    import onnx
    from onnx import numpy_helper

    from build_flows.inputs import prepare_input

    model = onnx.load(str(tfc_onnx))
    inits = [i for i in model.graph.initializer if numpy_helper.to_array(i).size > 100]
    arr = numpy_helper.to_array(inits[0]).copy()
    arr.reshape(-1)[3] = value
    inits[0].CopyFrom(numpy_helper.from_array(arr, inits[0].name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(BnnflowError, match=f"not finite.*{inits[0].name}"):
        prepare_input(bad, tmp_path / "m.onnx", 0, None)
    t0 = time.monotonic()
    _one_error(
        ["build", str(bad), "--board", "Pynq-Z1", "--target-fps", "1000", "--out", str(tmp_path / "b")],
        capsys,
        str(bad),
        "not finite",
    )
    assert time.monotonic() - t0 < 30
    assert _listing(tmp_path) == ["bad.onnx"]


def test_checkpoint_whose_export_is_not_finite_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """5 (exported from a checkpoint): finite weights with a negative BatchNorm variance give NaN
    (sqrt of a negative number) in Brevitas and in FINN's thresholds: refused by every command."""
    raw = torch.load(TFC, weights_only=True)
    key = next(k for k in raw["state_dict"] if k.endswith("running_var"))
    raw["state_dict"][key][2] = -4.0
    bad = tmp_path / "negvar.pt"
    torch.save(raw, bad)
    with pytest.raises(CheckpointError, match=f"negative.*{key}"):
        checkpoint.load(bad)
    _one_error(["export", str(bad), "--check", "0", "--out", str(tmp_path / "x.onnx")], capsys, str(bad), key)
    _one_error(["eval", str(bad), "--limit", "10"], capsys, str(bad), key)
    assert _listing(tmp_path) == ["negvar.pt"]


def test_damaged_manifest_advice_is_one_that_works(
    tfc_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """13: `bnnflow build` refuses a folder whose manifest it cannot read, so the advice for one is not
    "rebuild it" (which then fails) but to remove it or build elsewhere; it names the problem."""
    d = copy_build(tfc_build, tmp_path / "tfc")
    (d / "manifest.json").write_text("{bad")
    line = _one_error(
        ["sim", str(d), "--limit", "5", "--finn-limit", "0"], capsys, str(d / "manifest.json"), "not valid JSON"
    )
    assert "remove" in line or "another --out" in line, line
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(GARBAGE_ONNX)
    line = _one_error(
        ["build", str(bad), "--board", "Pynq-Z1", "--target-fps", "1000", "--check", "0", "--out", str(d)],
        capsys,
        str(d / "manifest.json"),
        "not valid JSON",
    )
    assert (d / "manifest.json").read_text() == "{bad"


def _unprivileged() -> list[str]:
    """A command prefix under which file permissions apply (root without its override capabilities)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permission bits cannot be made to apply")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


@pytest.mark.parametrize("kind", ["permission", "fifo", "folder"])
def test_unreadable_manifest_is_one_line(
    kind: str, tfc_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreadable manifest.json (no read permission, a FIFO that would block, a folder): one line
    naming it from sim, report and build --out, never a traceback, a hang or a silent default."""
    d = copy_build(tfc_build, tmp_path / "tfc")
    m = d / "manifest.json"
    m.unlink()
    if kind == "permission":
        m.write_text((tfc_build / "manifest.json").read_text())
        m.chmod(0)
        for argv in (
            ["sim", str(d), "--limit", "5", "--finn-limit", "0"],
            ["report", str(d), "--out", str(tmp_path / "r")],
        ):
            res = subprocess.run(
                [*_unprivileged(), sys.executable, "-c", CLI, *argv],
                capture_output=True,
                text=True,
                env=ENV,
                timeout=300,
            )
            assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
            assert res.stderr.count("\n") == 1 and str(m) in res.stderr and "Permission denied" in res.stderr
        return
    if kind == "fifo":
        os.mkfifo(m)
    else:
        m.mkdir()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(GARBAGE_ONNX)
    for argv in (
        ["sim", str(d), "--limit", "5", "--finn-limit", "0"],
        ["report", str(d), "--out", str(tmp_path / "r")],
        ["build", str(bad), "--board", "Pynq-Z1", "--target-fps", "1000", "--check", "0", "--out", str(d)],
    ):
        with _alarm(60):
            _one_error(argv, capsys, str(m))
    assert not (tmp_path / "r").exists() and (m.is_fifo() if kind == "fifo" else m.is_dir())


@pytest.mark.parametrize("manifest", ["listed", "no-outputs", "outputs-not-a-dict", "absent"])
def test_manifest_without_outputs_is_checked_not_trusted(
    manifest: str, tfc_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """7: a graph the manifest lists must be there, or sim fails naming the missing one; a manifest
    that lists no outputs (or no manifest) does not switch the check off: sim refuses the folder."""
    d = copy_build(tfc_build, tmp_path / "tfc")
    m = json.loads((d / "manifest.json").read_text())
    if manifest == "absent":
        (d / "manifest.json").unlink()
    elif manifest != "listed":
        m.pop("outputs") if manifest == "no-outputs" else m.update(outputs=["x"])
        (d / "manifest.json").write_text(json.dumps(m))
    (d / "intermediate_models" / "step_hw_codegen.onnx").unlink()
    expect = {
        "listed": ("step_hw_codegen.onnx", "missing"),
        "no-outputs": ("manifest.json", "'outputs'"),
        "outputs-not-a-dict": ("manifest.json", "outputs is ['x']"),
        "absent": ("not a bnnflow build folder", "no manifest.json"),
    }[manifest]
    _one_error(["sim", str(d), "--limit", "5", "--finn-limit", "0"], capsys, *expect)


def test_manifest_outputs_stay_inside_the_build(
    tfc_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """7: a manifest's outputs name files inside the build folder (not ../elsewhere)."""
    d = copy_build(tfc_build, tmp_path / "tfc")
    m = json.loads((d / "manifest.json").read_text())
    m["outputs"]["final_graph"] = "../../etc/passwd"
    (d / "manifest.json").write_text(json.dumps(m))
    _one_error(["sim", str(d), "--limit", "5", "--finn-limit", "0"], capsys, "final_graph", "inside")


KILL_TRAIN = textwrap.dedent("""
    import os, signal, sys, torch
    real = torch.save

    def save(obj, f, *a, **kw):  # the first checkpoint is written to its temporary file, then SIGKILL
        real(obj, f, *a, **kw)
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save
    from bnnflow.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_temporaries_of_a_killed_train_are_cleaned_by_the_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A train run SIGKILLed while writing model.pt leaves its temporary file and its lock; the next
    run into the same folder (--resume) removes both and writes the run's files."""
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-c", KILL_TRAIN, *TRAIN_RUN, "--out", str(out)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert [p for p in _listing(out) if p.startswith(".model.pt.")], _listing(out)  # what SIGKILL left
    rc, err = _cli([*TRAIN_RUN, "--out", str(out), "--resume"], capsys)
    assert rc == 0, err
    assert _listing(out) == ["model.pt", "state.pt"] and _listing(tmp_path) == ["run"]
    checkpoint.load(out / "model.pt")


def test_stale_temporary_of_a_live_writer_is_kept(tmp_path: Path) -> None:
    """The clean-up removes only temporaries whose writer is gone: a file being written now stays."""
    from bnnflow.files import atomic_path

    target = tmp_path / "a.md"
    with atomic_path(target) as first:
        first.write_text("one")
        atomic_write(target, "two")  # a second writer of the same file meanwhile
        assert first.read_text() == "one"
    assert target.read_text() == "one" and _listing(tmp_path) == ["a.md"]


KILL_BUILD = textwrap.dedent("""
    import os, signal, sys
    import build_flows.build as bb

    def prepare(*a, **kw):  # the rebuild is under way (DIR links to its work folder): SIGKILL
        os.kill(os.getpid(), signal.SIGKILL)

    bb.prepare_input = prepare
    from bnnflow.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_build_killed_during_a_rebuild_is_restored_by_the_next_run(
    tfc_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """4, SIGKILL (no handler runs): DIR is left linking to a half build, the good build hidden; the
    next build into DIR, even a failing one, puts the good build back and removes every leftover."""
    out = copy_build(tfc_build, tmp_path / "out")
    before = (out / "manifest.json").read_text()
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_BUILD,
            "build",
            str(TFC),
            "--board",
            "Pynq-Z1",
            "--target-fps",
            "1000",
            "--check",
            "0",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert out.is_symlink() and any(p.startswith(".out.old-") for p in _listing(tmp_path))  # what SIGKILL left
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(GARBAGE_ONNX)
    _one_error(
        ["build", str(bad), "--board", "Pynq-Z1", "--target-fps", "1000", "--check", "0", "--out", str(out)],
        capsys,
        "not a readable ONNX model",
    )
    assert out.is_dir() and not out.is_symlink() and (out / "manifest.json").read_text() == before
    assert _listing(tmp_path) == ["bad.onnx", "out"]
