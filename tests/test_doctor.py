"""The bitfile path without Vivado: ``bnnflow doctor``, FINN's dependencies, FIFO options, the hand-off.

Vivado cannot exist here, so the tool layouts are fakes in tmp folders: shell
scripts named ``vivado``/``vitis_hls`` that print what the real tools print
for ``-version``, a real git repository for finn-hlslib whose HEAD (read with
``git rev-parse HEAD``, as finn-plus's dependency manager records it) is the
pinned commit or another one, Vivado ``board.xml`` files. Everything FINN
does is FINN's real code: its settings, its dependency definitions and
manager, its config loader and step resolution, its builder and PrepareIP.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from importlib.metadata import distribution
from pathlib import Path

import pytest

from bnnflow.errors import BnnflowError
from build_flows import doctor, fifo, finn_env, handoff
from build_flows.build import build, step_lists
from build_flows.steps import STEP_REPLACEMENTS

REPO = Path(__file__).resolve().parent.parent
TFC_CKPT = REPO / "models" / "zoo" / "tfc_w1a1.pt"
BNNFLOW = str(Path(sys.executable).parent / "bnnflow")


def _finn_definitions() -> Path:
    from finn.interface.settings import FINNSettings

    return FINNSettings.init(flow_config=Path("dummy.yaml"), auto_set_environment_vars=False).finn_deps_definitions


def _pin() -> str:
    import yaml

    return yaml.safe_load(_finn_definitions().read_text())["git_deps"]["finn-hlslib"]["commit"]


# ---------------------------------------------------------------- fake layouts
def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def _hlslib(target: Path, at_pin: bool) -> str:
    """A real git checkout; with ``at_pin`` its HEAD is detached at finn-plus's pinned commit."""
    target.mkdir(parents=True)
    _git(target, "init", "-q")
    (target / "pool.hpp").write_text("// Pool_batch\n")
    _git(target, "add", "pool.hpp")
    _git(target, "commit", "-qm", "fake finn-hlslib")
    if at_pin:
        (target / ".git" / "HEAD").write_text(_pin() + "\n")
    return _git(target, "rev-parse", "HEAD")


def _board_xml(folder: Path, vendor: str, name: str, version: str) -> None:
    folder.mkdir(parents=True)
    (folder / "board.xml").write_text(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<board schema_version="2.1" vendor="{vendor}" name="{name}" '
        f'display_name="{name.upper()}" preset_file="preset.xml">\n  <file_version>{version}</file_version>\n'
        "  <description>board files</description>\n</board>\n"
    )


def _layout(
    root: Path,
    vivado: str = "2024.2",
    vivado_dir: str = "2024.2",
    hls: str = "2024.2",
    hlslib: bool | None = True,
    board_version: str = "1.0",
    json_version: str = "3.12.0",
) -> dict[str, str]:
    """Tools and FINN_DEPS under ``root``; returns the environment that points at them.

    ``hlslib``: True at the pinned commit, False at another commit, None absent.
    """
    viv = root / "Xilinx" / "Vivado" / vivado_dir
    _script(
        viv / "bin" / "vivado",
        f'echo "vivado v{vivado} (64-bit)"\necho "Tool Version Limit: {vivado}.11"\n'
        'echo "SW Build 5239630 on Fri Nov 08 22:34:34 MST 2024"\n',
    )
    (viv / "data" / "xsim" / "include").mkdir(parents=True)
    hls_root = root / "Xilinx" / "Vitis_HLS" / hls
    _script(
        hls_root / "bin" / "vitis_hls",
        f'echo "****** Vitis HLS - High-Level Synthesis from C, C++ and OpenCL v{hls} (64-bit)"\n'
        'echo "  **** SW Build 5238294 on Nov  8 2024"\n',
    )
    for rel in doctor.HLS_CSIM_FILES:  # names only: a C++ simulation compiled against these fails
        (hls_root / rel).parent.mkdir(parents=True, exist_ok=True)
        (hls_root / rel).write_text("#error fake Vitis HLS header\n")
    deps = root / "deps"
    deps.mkdir()
    if hlslib is not None:
        _hlslib(deps / "finn-hlslib", at_pin=hlslib)
    _board_xml(deps / "board_files" / "pynq-z1" / "A.0", "www.digilentinc.com", "pynq-z1", board_version)
    js = deps / "nlohmann_json" / "json"
    js.mkdir(parents=True)
    (js / "CMakeLists.txt").write_text(
        f"cmake_minimum_required(VERSION 3.1...3.14)\nproject(nlohmann_json VERSION {json_version} LANGUAGES CXX)\n"
    )
    return {
        "XILINX_VIVADO": str(viv),
        "XILINX_HLS": str(hls_root),
        "FINN_DEPS": str(deps),
        "PATH": os.pathsep.join([str(viv / "bin"), str(hls_root / "bin"), os.environ["PATH"]]),
    }


@pytest.fixture()
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No Xilinx tools, FINN settings and FINN_DEPS in tmp (never the user's or the venv's)."""
    for var in ("XILINX_VIVADO", "XILINX_HLS", "FINN_DEPS_DEFINITIONS", "FINN_TOOL_DIR_OVERRIDE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FINN_SETTINGS", str(tmp_path / "finn_settings.yaml"))
    monkeypatch.setenv("FINN_DEPS", str(tmp_path / "no_deps"))
    assert shutil.which("vivado") is None and shutil.which("vitis_hls") is None, (
        "this test needs a machine without Vivado"
    )
    return tmp_path


def _use(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def _by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


# ---------------------------------------------------------------- doctor
def test_doctor_on_this_machine(clean_env: Path) -> None:
    """No Vivado here: each missing piece is named, with what to do, and doctor exits non-zero."""
    res = subprocess.run(
        [BNNFLOW, "doctor", "--board", "Pynq-Z1", "--out", str(clean_env)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    assert res.returncode == 1, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    status = {ln[14:29].strip(): ln[:13].strip() for ln in lines[:-1]}
    text = {ln[14:29].strip(): ln[30:] for ln in lines[:-1]}
    assert status == {
        "Vivado": "missing",
        "Vitis HLS": "missing",
        "XSI simulator": "missing",
        "g++": "ok" if shutil.which("g++") else "missing",
        "cmake and make": "ok",
        "FINN_DEPS": "missing",
        "finn-hlslib": "missing",
        "board files": "missing",
        "nlohmann-json": "missing",
        "disk space": "ok",
    }, res.stdout
    assert "2022.2 or 2024.2" in text["Vivado"] and "settings64.sh" in text["Vivado"]
    assert _pin()[:12] in text["finn-hlslib"] and "https://github.com/Xilinx/finn-hlslib.git" in text["finn-hlslib"]
    assert "www.digilentinc.com:pynq-z1:part0:1.0" in text["board files"] and "pynq-z1.zip" in text["board files"]
    assert str(clean_env / "no_deps") in text["FINN_DEPS"]
    assert "cannot start" in lines[-1]
    # without FIFO simulation, its pieces are not asked for
    checks = _by_name(doctor.run_checks("Pynq-Z2", clean_env, "force_minimal_fifos"))
    assert "nlohmann-json" not in checks and "cmake and make" not in checks
    assert "tul.com.tw:pynq-z2:part0:1.0" in checks["board files"].detail


def test_doctor_complete_fake_layout(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _layout(clean_env)
    _use(monkeypatch, env)
    checks = doctor.run_checks("Pynq-Z1", clean_env)
    assert all(c.ok for c in checks), "\n".join(c.line() for c in checks)
    c = _by_name(checks)
    assert c["Vivado"].detail.startswith("2024.2 ") and c["Vitis HLS"].detail.startswith("2024.2 ")
    assert _pin()[:12] in c["finn-hlslib"].detail and "pynq-z1:part0:1.0" in c["board files"].detail
    assert "3.12.0" in c["nlohmann-json"].detail
    res = subprocess.run(
        [BNNFLOW, "doctor", "--out", str(clean_env)], capture_output=True, text=True, env=os.environ.copy()
    )
    assert res.returncode == 0 and res.stdout.splitlines()[-1] == "a bitfile build for Pynq-Z1 can start here", (
        res.stdout + res.stderr[-2000:]
    )


@pytest.mark.parametrize(
    ("layout", "name", "status", "says"),
    [
        (
            {"vivado": "2023.1", "vivado_dir": "2023.1", "hls": "2023.1"},
            "Vivado",
            "wrong version",
            r"Vivado 2023\.1 .*supports 2022\.2 or 2024\.2",
        ),
        ({"vivado_dir": "install"}, "Vivado", "wrong version", r"does not name version 2024\.2"),
        ({"hls": "2022.2"}, "Vitis HLS", "wrong version", r"Vitis HLS 2022\.2 .*with Vivado 2024\.2"),
        ({"hlslib": False}, "finn-hlslib", "wrong version", r"is at [0-9a-f]{12}, finn-plus 1\.6\.1 pins"),
        ({"hlslib": None}, "finn-hlslib", "missing", r"finn-hlslib not found"),
        ({"board_version": "0.9"}, "board files", "wrong version", r"version 0\.9 .*asks for www\.digilentinc"),
        (
            {"json_version": "3.11.3"},
            "nlohmann-json",
            "wrong version",
            r"version 3\.11\.3, finn-plus downloads 3\.12\.0",
        ),
    ],
)
def test_doctor_reads_versions_and_hashes(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, layout: dict, name: str, status: str, says: str
) -> None:
    """Right file names, wrong contents: each check reads the version string or commit hash."""
    _use(monkeypatch, _layout(clean_env, **layout))
    checks = _by_name(doctor.run_checks("Pynq-Z1", clean_env))
    assert checks[name].status == status and re.search(says, checks[name].detail), checks[name].line()
    failing = {c.name for c in checks.values() if not c.ok}
    assert name in failing and failing <= {name, "Vitis HLS", "XSI simulator"}, failing  # those need Vivado


def test_supported_versions_are_finn_plus_own() -> None:
    """The Vivado versions doctor accepts and the FIFO strategies bnnflow offers are finn-plus 1.6.1's."""
    from finn.builder.build_dataflow_config import AutoFIFOSizingMethod, DataflowBuildConfig

    dist = distribution("finn-plus")
    readme = dist.read_text("METADATA") or ""
    found = re.search(r"Vivado, Vitis, and Vitis HLS \(([^)]+)\)", readme)
    assert found, f"{dist.locate_file('')}: METADATA ({len(readme)} characters) names no Vivado versions"
    said = found.group(1)
    assert tuple(said.split(" or ")) == doctor.SUPPORTED_XILINX
    assert sorted(fifo.STRATEGIES) == sorted(m.value for m in AutoFIFOSizingMethod)
    assert DataflowBuildConfig().auto_fifo_strategy.value == fifo.DEFAULT_STRATEGY


def test_missing_finn_dependency_install_fails_in_one_line(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With Vivado found, build() runs doctor first and installs finn-hlslib with finn-plus's own
    dependency manager; here its URL is unreachable: one line naming it, before any build step."""
    import yaml

    env = _layout(clean_env, hlslib=None)
    defs = yaml.safe_load(_finn_definitions().read_text())
    url = "http://127.0.0.1:9/finn-hlslib.git"
    defs["git_deps"]["finn-hlslib"]["url"] = url
    (clean_env / "deps.yaml").write_text(yaml.safe_dump(defs))
    _use(monkeypatch, {**env, "FINN_DEPS_DEFINITIONS": str(clean_env / "deps.yaml")})
    assert finn_env.vivado_available()
    with pytest.raises(
        BnnflowError,
        match=rf"^FINN dependency finn-hlslib could not be installed from {url} "
        r"by finn-plus's dependency manager \(it needs the network\)",
    ):
        build(TFC_CKPT, "Pynq-Z1", clean_env / "out", target_fps=1000, n_check=0)
    assert not (clean_env / "out").exists()


# ---------------------------------------------------------------- FIFO options and the time limit
def test_fifo_options_checked(tmp_path: Path) -> None:
    bad = tmp_path / "depths.json"
    bad.write_text(json.dumps({"fifo_depths": {"StreamingFIFO_rtl_0": 0}, "impl_style": {}, "ram_style": {}}))
    with pytest.raises(BnnflowError, match="StreamingFIFO_rtl_0: FIFO depth must be a positive integer"):
        fifo.fifo_options(None, bad)
    bad.write_text("{}")
    with pytest.raises(BnnflowError, match="needs the objects fifo_depths, impl_style, ram_style"):
        fifo.fifo_options(None, bad)
    with pytest.raises(BnnflowError, match="at most one of --fifo-strategy and --fifo-depths"):
        fifo.fifo_options("force_minimal_fifos", bad)
    with pytest.raises(BnnflowError, match="--fifo-timeout must be >= 0"):
        build(TFC_CKPT, "Pynq-Z1", tmp_path / "out", target_fps=1000, fifo_timeout_min=-1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["depths.json"]


def test_time_limit_stops_the_block_and_what_it_started() -> None:
    """The limit interrupts a blocking wait and Python code that swallows Exceptions, stops the processes
    the block started (not those running before) and ends in one BnnflowError."""
    older = subprocess.Popen(["sleep", "60"])
    try:
        t0 = time.monotonic()
        with pytest.raises(BnnflowError, match="^sizing stopped$"):
            with fifo.time_limit(1.0, "sizing stopped"):
                child = subprocess.Popen(["sleep", "60"])
                child.wait()
        assert time.monotonic() - t0 < 1.0 + fifo.KILL_GRACE_S + 3 and child.wait(timeout=5) is not None
        with pytest.raises(BnnflowError, match="^again$"):
            with fifo.time_limit(0.5, "again"):
                while True:
                    try:
                        time.sleep(0.05)
                    except Exception:  # what FINN's handlers do must not keep it running
                        pass
        assert older.poll() is None
        handler = signal.getsignal(signal.SIGALRM)
        with fifo.time_limit(5.0, "never"):
            pass
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) is handler
    finally:
        older.kill()
        older.wait()


# ---------------------------------------------------------------- the hand-off
@pytest.fixture(scope="module")
def tfc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Vivado-free TFC build with FINN's force_minimal_fifos strategy."""
    d = tmp_path_factory.mktemp("tfc_handoff") / "build"
    build(TFC_CKPT, "Pynq-Z1", d, target_fps=10000, n_check=0, fifo_strategy="force_minimal_fifos", fifo_timeout_min=5)
    return d


def _load(config: Path) -> object:
    from finn.builder.build_dataflow_config import DataflowBuildConfig

    return DataflowBuildConfig.construct_from(config)


def test_handoff_loads_and_resolves(tfc: Path, tmp_path: Path) -> None:
    """The hand-off, moved away from its build, loads through finn-plus's own loader, its steps resolve to
    FINN's, its FIFO options are there, and FINN's builder continues from it."""
    import finn.builder.build_dataflow_config as bc
    from finn.builder.build_dataflow import build_dataflow_cfg, resolve_build_steps, resolve_step_filename

    m = json.loads((tfc / "manifest.json").read_text())
    assert m["outputs"]["handoff"] == "handoff" and m["fifo"]["strategy"] == "force_minimal_fifos"
    assert not (tfc / "handoff" / "codegen").exists()
    moved = tmp_path / "elsewhere"
    shutil.copytree(tfc / "handoff", moved)
    cfg = _load(moved / handoff.CONFIG_FILE)
    assert cfg.auto_fifo_depths and cfg.auto_fifo_strategy == bc.AutoFIFOSizingMethod.FORCE_MINIMAL_FIFOS
    want = ("Pynq-Z1", "xc7z020clg400-1", bc.ShellFlowType.VIVADO_ZYNQ)
    assert (cfg.board, cfg.fpga_part, cfg.shell_flow_type) == want
    assert {
        bc.DataflowOutputType.BITFILE,
        bc.DataflowOutputType.PYNQ_DRIVER,
        bc.DataflowOutputType.DEPLOYMENT_PACKAGE,
    } <= set(cfg.generate_outputs)
    assert cfg.folding_config_file == moved / handoff.FOLDING_FILE
    assert json.loads(cfg.folding_config_file.read_text()) == json.loads(
        (tfc / "report" / "auto_folding_config.json").read_text()
    )
    vivado_steps = step_lists()[1]
    cfg.output_dir = str(moved)  # what `finn build` does with a relative output_dir
    steps = resolve_build_steps(cfg)
    assert [s.__name__ for s in steps] == vivado_steps and cfg.start_step == vivado_steps[0]
    assert {s.__module__ for s in steps} == {"finn.builder.build_dataflow_steps"}
    assert resolve_step_filename(cfg.start_step, cfg, -1) == moved / "intermediate_models" / "step_hw_codegen.onnx"
    # no path into the build folder is left in the model
    assert str(tfc).encode() not in (moved / "intermediate_models" / "step_hw_codegen.onnx").read_bytes()
    # bnnflow's replacements of FINN steps, all before the hand-off point, by name and function
    record = json.loads((moved / handoff.RECORD_FILE).read_text())
    ran = [s["name"] for s in m["steps"]]
    assert [s["name"] for s in record["steps_run"]] == ran and record["steps_to_run"] == vivado_steps
    replaced = {s["name"]: s["function"] for s in record["steps_run"] if s["replaces_finn_step"]}
    assert replaced == {n: f"build_flows.steps.{fn.__name__}" for n, fn in STEP_REPLACEMENTS.items() if n in ran}
    # FINN's own builder continues from there (the steps before HLS IP generation need no Vivado)
    cfg.stop_step = "step_assign_ddr_weight_offsets"
    with finn_env.quiet_builder():
        assert build_dataflow_cfg(str(moved / record["model"]), cfg) == 0
    assert (moved / "intermediate_models" / "step_assign_ddr_weight_offsets.onnx").is_file()


def test_handoff_code_regenerates_identically(tfc: Path, tmp_path: Path) -> None:
    """FINN's PrepareIP writes the same code from the hand-off model as the build generated."""
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    finn_env.prepare(tmp_path / "codegen")
    model = ModelWrapper(str(tfc / "handoff" / "intermediate_models" / "step_hw_codegen.onnx"))
    model = model.transform(PrepareIP("xc7z020clg400-1", 10.0))
    built = ModelWrapper(str(tfc / "intermediate_models" / "step_hw_codegen.onnx"))
    for new, old in zip(model.graph.node, built.graph.node, strict=True):
        a, b = (Path(getCustomOp(n).get_nodeattr("code_gen_dir_ipgen")) for n in (new, old))
        assert a.parent == tmp_path / "codegen" and b.parent == tfc / "codegen"
        files = sorted(p.name for p in b.iterdir() if p.is_file())
        assert files and sorted(p.name for p in a.iterdir() if p.is_file()) == files, new.name
        for f in files:
            assert (a / f).read_bytes().replace(bytes(a), b"D") == (b / f).read_bytes().replace(bytes(b), b"D"), f


def test_fifo_depth_file_reaches_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    depths = tmp_path / "depths.json"
    depths.write_text(
        json.dumps(
            {
                "fifo_depths": {"StreamingFIFO_rtl_0": 32},
                "impl_style": {"StreamingFIFO_rtl_0": "rtl"},
                "ram_style": {"StreamingFIFO_rtl_0": "auto"},
            }
        )
    )
    d = tmp_path / "out"
    build(TFC_CKPT, "Pynq-Z1", d, target_fps=10000, n_check=0, fifo_depths=depths)
    assert json.loads((d / "manifest.json").read_text())["fifo"]["depths_file"] == str(depths)
    moved = tmp_path / "moved"
    shutil.copytree(d / "handoff", moved)
    monkeypatch.chdir(moved)  # `cd handoff && finn build ...`: FINN reads fifo_config_file from there
    cfg = _load(moved / handoff.CONFIG_FILE)
    assert cfg.auto_fifo_depths is False and cfg.fifo_config_file == Path(handoff.DEPTHS_FILE)
    assert json.loads(cfg.fifo_config_file.read_text()) == json.loads(depths.read_text())


# ---------------------------------------------------------------- FINN's C++ simulation (sim --cppsim)
def test_cppsim_names_what_is_missing_here(tfc: Path, clean_env: Path) -> None:
    """No Vitis HLS here: `sim --cppsim` stops before any work, in one line naming each missing piece."""
    res = subprocess.run([BNNFLOW, "sim", str(tfc), "--cppsim"], capture_output=True, text=True, env=os.environ.copy())
    assert res.returncode == 2 and res.stdout == "" and res.stderr.count("\n") == 1, res.stderr[-2000:]
    msg = res.stderr
    assert msg.startswith("bnnflow: error: --cppsim") and "bnnflow doctor" in msg
    for name in ("Vitis HLS (missing", "HLS C simulation (missing: XILINX_HLS unset", "finn-hlslib (missing"):
        assert name in msg, msg
    assert "g++" not in msg  # what is there is not listed


def test_cppsim_requirements_read_the_layout(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A complete layout meets them; a missing C simulation library or an unpinned finn-hlslib is named."""
    from hw import cppsim

    _use(monkeypatch, _layout(clean_env))
    assert cppsim.missing_requirements() == []
    (Path(os.environ["XILINX_HLS"]) / "lnx64" / "lib" / "csim" / "libhlsmc++-GCC46.so").unlink()
    assert [m.split(" (")[0] for m in cppsim.missing_requirements()] == ["HLS C simulation"]
    assert "lacks lnx64/lib/csim/libhlsmc++-GCC46.so" in cppsim.missing_requirements()[0]


def test_cppsim_compile_failure_is_one_line(tfc: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every requirement present by name but headers that do not compile, FINN's own PrepareCppSim and
    CompileCppSim run on a copy of the build and the failed compile is one line; the build is untouched."""
    from hw import cppsim

    _use(monkeypatch, _layout(clean_env))
    before = {p: p.stat().st_mtime_ns for p in (tfc / "intermediate_models").glob("*.onnx")}
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(clean_env))
    with pytest.raises(BnnflowError, match=r"C\+\+ simulation of the HLS layers did not compile") as exc:
        cppsim.cppsim_build(tfc, limit=2)
    assert "\n" not in str(exc.value)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert not list(clean_env.glob("bnnflow-cppsim-*"))  # FINN's generated C++ went with the temporary folder
    assert not list(tfc.rglob("code_gen_cppsim_*"))


def test_finn_env_exports_what_finn_cli_would(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """FINN's generated Tcl and compile lines read $FINN_CUSTOM_HLS and $FINN_RTLLIB, which only FINN's CLI
    exports: unset, g++ takes the next -I flag as the folder name."""
    for var in ("FINN_CUSTOM_HLS", "FINN_RTLLIB"):
        monkeypatch.delenv(var, raising=False)
    finn_env.prepare(tmp_path / "b")
    assert (Path(os.environ["FINN_CUSTOM_HLS"]) / "checksum.hpp").is_file()
    assert (Path(os.environ["FINN_RTLLIB"]) / "mvu").is_dir()
