"""The hand-offs between stages: the build folder's typed manifest, ``sim`` -> ``DIR/sim.json`` ->
``report``, and the import layering (core below stages, the CLI above them).

One small pruned TFC is built (random weights, real MNIST images); its checkpoint is deleted
after the build, so every figure the report shows must come from the manifest.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from helpers import copy_build, save_random_net

from build_flows.build import build
from build_flows.build_dir import MANIFEST_VERSION, SIM_JSON, Manifest, open_build, read_build_manifest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("bnnflow", "models", "prune", "hw", "build_flows", "reports", "conformance")
#: bnnflow's core: every module of the package but the command line
CORE = {f"bnnflow.{p.stem}" for p in (REPO / "bnnflow").glob("*.py") if p.stem not in ("cli", "__init__")}
PRUNING = {"pfr": 0.25, "method": "contract-test"}


@pytest.fixture(scope="module")
def tfc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contracts")
    ckpt = save_random_net(
        "tfc", [48, 40, 64], root / "tfc_small.pt", 5, {"accuracy": 0.625, "n": 40, "pruning": PRUNING}
    )
    d = root / "build"
    build(ckpt, "Pynq-Z1", d, target_fps=10000, n_check=0)
    ckpt.unlink()  # readers must not need it
    return d


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from bnnflow.cli import main

    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---------------------------------------------------------------- the manifest
def test_manifest_is_typed_and_round_trips(tfc: Path) -> None:
    on_disk = json.loads((tfc / "manifest.json").read_text())
    m = read_build_manifest(tfc)
    assert isinstance(m, Manifest) and m.version == MANIFEST_VERSION == on_disk["version"] == 2
    assert m.to_dict() == on_disk and list(on_disk)[:2] == ["format", "version"]
    assert (m.dataset, m.pruning, m.accuracy, m.accuracy_n) == ("mnist", PRUNING, 0.625, 40)
    assert m.capacity == {"LUT": 53200, "FF": 106400, "BRAM_18K": 280, "URAM": 0, "DSP": 220}
    b = open_build(tfc)
    assert b.accel == tfc / m.outputs["accelerator_graph"] and b.accel_step == "step_hw_codegen"
    assert b.golden.name == "step_create_dataflow_partition.onnx" and b.parent.name == "dataflow_parent.onnx"


@pytest.mark.parametrize("version", ["missing", 1, 3])
def test_a_folder_of_another_layout_is_one_error_saying_rebuild(
    version: object, tfc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = copy_build(tfc, tmp_path / "old")
    m = json.loads((d / "manifest.json").read_text())
    if version == "missing":
        del m["version"]
    else:
        m["version"] = version
    (d / "manifest.json").write_text(json.dumps(m))
    for argv in (
        ["sim", str(d), "--limit", "4", "--finn-limit", "0"],
        ["report", str(d), "--out", str(tmp_path / "r")],
    ):
        rc, _, err = _cli(argv, capsys)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, err
        assert str(d) in lines[0] and "rebuild it with `bnnflow build`" in lines[0], lines[0]
        assert ("a newer" if version == 3 else "an older") in lines[0], lines[0]
    assert not (tmp_path / "r").exists() and not (d / SIM_JSON).exists()


@pytest.mark.parametrize(
    "key,value", [("clock_ns", "fast"), ("capacity", {"LUT": "many"}), ("pruning", [0.5]), ("dataset", 7)]
)
def test_a_damaged_entry_is_named(key: str, value: object, tfc: Path, tmp_path: Path) -> None:
    from bnnflow.errors import BnnflowError

    d = copy_build(tfc, tmp_path / "bad")
    m = json.loads((d / "manifest.json").read_text())
    m[key] = value
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BnnflowError, match=rf"manifest.json: {key} is .*rebuild it"):
        open_build(d)


# ---------------------------------------------------------------- sim -> sim.json -> report
def test_sim_writes_sim_json_and_report_reads_it(tfc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reports.finn_reports import read_build

    d = copy_build(tfc, tmp_path / "b")
    before = read_build(d).quality  # no sim.json yet: the checkpoint's figures, from the manifest
    assert (before.accuracy, before.n, before.pfr, before.method) == (0.625, 40, 0.25, "contract-test")
    assert before.source == "checkpoint (tfc_small.pt)"
    rc, out, _ = _cli(["sim", str(d), "--limit", "24", "--finn-limit", "2", "--json"], capsys)
    assert rc == 0
    saved = json.loads((d / SIM_JSON).read_text())
    assert saved == json.loads(out) and saved["n"] == 24  # --json still prints the same report
    assert sorted(p.name for p in d.iterdir() if p.name.startswith(".")) == []  # no temporary left
    q = read_build(d).quality
    assert (q.accuracy, q.n, q.pfr, q.source) == (saved["accuracy"], 24, 0.25, f"simulator ({SIM_JSON})")
    rc, out, _ = _cli(["sim", str(d), "--limit", "8", "--finn-limit", "0"], capsys)
    assert rc == 0 and f"wrote {d / SIM_JSON}" in out and json.loads((d / SIM_JSON).read_text())["n"] == 8


def test_no_save_leaves_the_folder_alone(tfc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_build(tfc, tmp_path / "b")
    rc, out, _ = _cli(["sim", str(d), "--limit", "8", "--finn-limit", "0", "--json", "--no-save"], capsys)
    assert rc == 0 and json.loads(out)["n"] == 8 and not (d / SIM_JSON).exists()


def test_mismatching_generated_files_are_not_saved(tfc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The graphs name their code folder by absolute path: the fixture's own weight file is flipped
    and put back."""
    mem = next((tfc / "codegen").rglob("memblock.dat"))
    original = mem.read_text()
    lines = original.split("\n")
    lines[3] = format(int(lines[3], 16) ^ 1, "x").zfill(len(lines[3]))
    try:
        mem.write_text("\n".join(lines))
        rc, out, _ = _cli(["sim", str(tfc), "--limit", "8", "--finn-limit", "0", "--from-artifacts"], capsys)
    finally:
        mem.write_text(original)
    assert rc == 1 and "MISMATCH" in out and f"{SIM_JSON} not written" in out
    assert not (tfc / SIM_JSON).exists()


# ---------------------------------------------------------------- layering
def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            parts = f.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports(source: str, known: set[str]) -> set[str]:
    """The project modules ``source`` imports, anywhere in it (functions included): ``from a import
    b`` counts as ``a.b`` when that is a module, else as ``a``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names
            ]
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found


def forbidden(module: str, imported: str) -> str | None:
    """Why ``module`` may not import ``imported`` (None: it may)."""
    if module == "bnnflow.cli":
        return None  # the top: it imports every stage's cli
    if imported == "bnnflow.cli" or imported.endswith(".cli"):
        return "only bnnflow.cli imports the command-line modules"
    if module == "bnnflow.errors":
        return "bnnflow.errors is the leaf every package uses: it imports nothing of the project"
    if module.split(".")[0] == "models" and not (imported.startswith("models") or imported == "bnnflow.errors"):
        return "the model zoo imports only itself and bnnflow.errors"
    if module in CORE and not (imported in CORE or imported.split(".")[0] == "models"):
        return "bnnflow's core imports no stage"
    if module.startswith("build_flows.transforms") and imported.split(".")[0] == "bnnflow":
        return "build_flows/transforms/ passes import no bnnflow"
    if module == "build_flows.build_dir" and imported not in CORE:
        return "the build folder's contract depends on bnnflow's core only"
    return None


def layering_violations(sources: dict[str, str]) -> list[str]:
    known = set(sources)
    return [
        f"{m} imports {i}: {why}"
        for m, src in sorted(sources.items())
        for i in sorted(imports(src, known))
        if (why := forbidden(m, i))
    ]


def test_layering() -> None:
    sources = {m: p.read_text() for m, p in _modules().items()}
    assert {"bnnflow.cli", "build_flows.build_dir", "hw.run", "reports.finn_reports"} <= set(sources)
    assert layering_violations(sources) == []
    # the checker finds a bad edge where one is put in
    bad = dict(
        sources,
        **{
            "bnnflow.data": sources["bnnflow.data"] + "\nfrom hw import run\n",
            "models.nets": sources["models.nets"] + "\ndef f():\n    from bnnflow import files\n",
            "hw.run": sources["hw.run"] + "\nimport bnnflow.cli\n",
        },
    )
    assert layering_violations(bad) == [
        "bnnflow.data imports hw.run: bnnflow's core imports no stage",
        "hw.run imports bnnflow.cli: only bnnflow.cli imports the command-line modules",
        "models.nets imports bnnflow.files: the model zoo imports only itself and bnnflow.errors",
    ]


def test_the_cli_lists_every_stage_command() -> None:
    """One explicit list, no registration by import side effect and no swallowed import errors."""
    from bnnflow import cli

    assert [c[0] for c in cli.COMMANDS] == [
        "train",
        "info",
        "eval",
        "prune",
        "frontier",
        "export",
        "build",
        "doctor",
        "sim",
        "report",
        "sweep",
    ]
    tree = ast.parse((REPO / "bnnflow" / "cli.py").read_text())
    caught = [ast.unparse(h.type) for h in ast.walk(tree) if isinstance(h, ast.ExceptHandler) and h.type]
    assert not [c for c in caught if "ImportError" in c or "ModuleNotFoundError" in c]
