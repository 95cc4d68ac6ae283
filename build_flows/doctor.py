"""``bnnflow doctor``: can a bitfile build start on this machine, and if not, what is missing.

Everything up to FINN's code generation runs without Xilinx tools; the rest
of the flow (HLS IP generation, FIFO sizing, stitched IP, synthesis, bitfile,
PYNQ driver) needs, in finn-plus 1.6.1's terms:

* Vivado and Vitis HLS of one version that finn-plus supports, set up the
  way FINN reads them: ``XILINX_VIVADO`` naming the version (FINN parses it
  from that path) and both tools on PATH (FINN calls them by name);
* FINN's XSI simulator extension (``finn_xsi``), built for that Vivado;
* ``FINN_DEPS`` with finn-hlslib at the commit finn-plus pins in its
  ``external_dependencies.yaml`` (the HLS code finn-plus generates calls
  finn-hlslib's ``Pool_batch``, which only that commit has) and the board
  files of the board (what FINN's Zynq shell script asks Vivado for);
* with FINN's default FIFO sizing (``distributed_sim``): the nlohmann/json
  sources in ``FINN_DEPS`` and cmake/make for its simulation backend;
* g++ and disk space.

Each check runs the tool or reads the file and compares real version strings
and commit hashes (``vivado -version``, ``git rev-parse HEAD`` as finn-plus's
dependency manager records it, a board's ``board.xml``), never file names
alone. The FINN paths come from finn-plus's own settings (``FINNSettings``:
``FINN_DEPS``, ``FINN_SETTINGS``, ...). :func:`ensure_ready` runs at the start
of a ``bnnflow build`` that found Vivado and installs missing FINN
dependencies with finn-plus's own dependency manager.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError
from build_flows.boards import get_board
from build_flows.finn_env import VIVADO_PLACEHOLDER

#: Vivado/Vitis HLS versions finn-plus 1.6.1 supports (its package README, "Xilinx Tools:
#: Vivado, Vitis, and Vitis HLS (2022.2 or 2024.2)"; a test reads it from the installed metadata).
SUPPORTED_XILINX = ("2022.2", "2024.2")
#: finn_xsi is compiled with ``--std=c++20`` (finn.xsi.setup), which GCC supports from 10 on.
MIN_GXX = (10, 0)
#: Free space asked for at the build folder: Vivado's Zynq project, the HLS IP of every layer and
#: FINN's build folder (our estimate for a Zynq-7020 design, not a measured figure).
MIN_FREE_GIB = 10.0
#: Seconds a ``-version`` / ``--version`` call may take (Vivado starts a Tcl shell for it).
VERSION_TIMEOUT_S = 120.0
#: The FIFO strategy that simulates (needs the nlohmann/json sources, cmake and make).
SIMULATING_FIFO_STRATEGY = "distributed_sim"
FINN_HLSLIB = "finn-hlslib"
NLOHMANN_JSON = "nlohmann-json"

OK, MISSING, WRONG = "ok", "missing", "wrong version"


@dataclass(frozen=True)
class Check:
    """One requirement: its status (``ok`` / ``missing`` / ``wrong version``), what was found or
    what to do, and the FINN dependency that would fix it (installable by finn-plus)."""

    name: str
    status: str
    detail: str
    dependency: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK

    def line(self) -> str:
        return f"{self.status:<13} {self.name:<15} {self.detail}"


# ---------------------------------------------------------------- helpers
def finn_settings() -> Any:
    """finn-plus's settings as its CLI resolves them (settings file, then environment)."""
    from finn.interface.settings import FINNSettings
    from finn.util.exception import FINNError

    try:
        return FINNSettings.init(flow_config=Path("dummy.yaml"), auto_set_environment_vars=False)
    except FINNError as exc:
        raise BnnflowError(f"finn-plus's settings cannot be read: {str(exc).splitlines()[0]}") from None


def finn_dependencies(settings: Any) -> Any:
    """finn-plus's dependency definitions (``external_dependencies.yaml``) as its own data model."""
    import yaml
    from finn.interface.manage_deps import DependencyData

    path = Path(settings.finn_deps_definitions)
    try:
        return DependencyData.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise BnnflowError(
            f"{path}: finn-plus's dependency definitions cannot be read ({str(exc).splitlines()[0]})"
        ) from None


def _run(cmd: list[str], cwd: Path | None = None) -> tuple[int, str]:
    """(exit status, stdout + stderr) of ``cmd``; status -1 where it cannot be run."""
    try:
        res = subprocess.run(
            cmd,
            cwd=cwd,
            capture_output=True,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL,
            timeout=VERSION_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return -1, str(exc)
    return res.returncode, res.stdout + res.stderr


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "no output")[:160]


def _tool_version(exe: str, flag: str, pattern: str) -> tuple[str | None, str]:
    """(version matched by ``pattern`` in ``exe flag``'s output or None, that output's first line)."""
    rc, out = _run([exe, flag])
    m = re.search(pattern, out, re.IGNORECASE) if rc == 0 else None
    return (m.group(1) if m else None), _first_line(out)


def _supported() -> str:
    return " or ".join(SUPPORTED_XILINX)


# ---------------------------------------------------------------- Xilinx tools
def check_vivado() -> tuple[Check, str | None]:
    """Vivado: XILINX_VIVADO set, ``vivado`` on PATH, a supported version, named in the path."""
    from finn.util.basic import get_vivado_version

    name = "Vivado"
    root = os.environ.get("XILINX_VIVADO") or None
    if root == VIVADO_PLACEHOLDER and not Path(root).exists():
        root = None  # bnnflow's stand-in on machines without Vivado (finn_env work-around 2)
    on_path = shutil.which("vivado")
    todo = f"install Vivado {_supported()} and `source <Xilinx>/Vivado/<version>/settings64.sh`"
    if root is None and on_path is None:
        return Check(name, MISSING, f"not found (XILINX_VIVADO unset, no vivado on PATH): {todo}"), None
    if root is None:
        return Check(
            name,
            MISSING,
            f"{on_path} is on PATH but XILINX_VIVADO is unset (FINN reads it): source Vivado's settings64.sh",
        ), None
    exe = Path(root) / "bin" / "vivado"
    if not exe.is_file():
        return Check(name, MISSING, f"XILINX_VIVADO={root} has no bin/vivado: {todo}"), None
    if on_path is None:
        return Check(name, MISSING, f"{exe} is not on PATH (FINN calls it by name): source {root}/settings64.sh"), None
    version, said = _tool_version(str(exe), "-version", r"\bvivado v(20\d\d\.\d)\b")
    if version is None:
        return Check(name, WRONG, f"`{exe} -version` names no Vivado version ({said})"), None
    if version not in SUPPORTED_XILINX:
        return Check(name, WRONG, f"Vivado {version} ({exe}): finn-plus 1.6.1 supports {_supported()}"), None
    if get_vivado_version() != tuple(int(p) for p in version.split(".")):
        return Check(
            name,
            WRONG,
            f"XILINX_VIVADO={root} does not name version {version} (FINN reads the "
            "version from this path): source that installation's settings64.sh",
        ), None
    return Check(name, OK, f"{version} ({exe})"), version


def check_vitis_hls(vivado: str | None) -> Check:
    """Vitis HLS on PATH (FINN calls ``vitis_hls`` up to 2024.2), the same version as Vivado."""
    name = "Vitis HLS"
    exe = shutil.which("vitis_hls")
    want = vivado or _supported()
    if exe is None:
        return Check(
            name,
            MISSING,
            f"vitis_hls not on PATH: install Vitis HLS {want} (the Vivado version) "
            "and `source <Xilinx>/Vitis_HLS/<version>/settings64.sh` (2024.2: "
            "Vitis/<version>)",
        )
    version, said = _tool_version(exe, "-version", r"\bVitis HLS\b.*?\bv(20\d\d\.\d)\b")
    if version is None:
        return Check(name, WRONG, f"`{exe} -version` names no Vitis HLS version ({said})")
    if version not in SUPPORTED_XILINX:
        return Check(name, WRONG, f"Vitis HLS {version} ({exe}): finn-plus 1.6.1 supports {_supported()}")
    if vivado is not None and version != vivado:
        return Check(name, WRONG, f"Vitis HLS {version} ({exe}) with Vivado {vivado}: use one version of both")
    return Check(name, OK, f"{version} ({exe})")


#: what FINN's C++ simulation compiles and links against under XILINX_HLS (``compile_singlenode_code``)
HLS_CSIM_FILES = ("include/ap_int.h", "include/hls_stream.h", "lnx64/lib/csim/libhlsmc++-GCC46.so")


def check_hls_csim() -> Check:
    """Vitis HLS's headers and C simulation library where FINN looks for them (``$XILINX_HLS``): what
    ``bnnflow sim --cppsim`` needs beyond ``vitis_hls`` itself."""
    name = "HLS C simulation"
    root = os.environ.get("XILINX_HLS")
    if not root:
        return Check(
            name,
            MISSING,
            "XILINX_HLS unset: `source` Vitis HLS's settings64.sh (FINN compiles its C++ "
            "simulation against $XILINX_HLS/include and $XILINX_HLS/lnx64)",
        )
    absent = [f for f in HLS_CSIM_FILES if not (Path(root) / f).is_file()]
    if absent:
        return Check(
            name, MISSING, f"XILINX_HLS={root} lacks {', '.join(absent)}: point it at a complete Vitis HLS installation"
        )
    return Check(name, OK, f"headers and C simulation library under {root}")


def check_xsi(vivado: str | None, settings: Any) -> Check:
    """FINN's XSI extension: built for this Vivado, or buildable by FINN at first use."""
    from finn.xsi.setup import check_prerequisites

    name = "XSI simulator"
    if vivado is None:
        return Check(name, MISSING, "needs a supported Vivado (see the Vivado line); FINN then builds it")
    xsi = Path(settings.finn_xsi)
    version_file = xsi / "VERSION"
    built = version_file.read_text().strip() if version_file.is_file() else None
    if (xsi / "xsi.so").is_file() and built == f"Vivado {vivado}":
        return Check(name, OK, f"finn_xsi built for Vivado {vivado} ({xsi / 'xsi.so'})")
    problems = check_prerequisites()
    if problems:
        return Check(name, MISSING, f"finn_xsi cannot be built: {' '.join(problems)}")
    state = f"built for {built}" if built else "not built yet"
    return Check(
        name,
        OK,
        f"finn_xsi {state}; FINN builds it for Vivado {vivado} at first use (`python -m finn.xsi.setup`, into {xsi})",
    )


def check_gxx() -> Check:
    """g++ of at least :data:`MIN_GXX` (finn_xsi's C++20; FINN's C++ simulation)."""
    name = "g++"
    exe = shutil.which("g++")
    if exe is None:
        return Check(name, MISSING, f"g++ not on PATH: install g++ >= {MIN_GXX[0]} (e.g. apt install g++)")
    rc, out = _run([exe, "--version"])
    said = _first_line(out)  # "g++ (Debian 12.2.0-14) 12.2.0": the version ends the first line
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)$", said) if rc == 0 else None
    version = m.group(1) if m else None
    if version is None:
        return Check(name, WRONG, f"`{exe} --version` names no version ({said})")
    if tuple(int(p) for p in version.split(".")[:2]) < MIN_GXX:
        return Check(name, WRONG, f"g++ {version} ({exe}): finn_xsi needs C++20, g++ >= {MIN_GXX[0]}")
    return Check(name, OK, f"{version} ({exe})")


def check_build_tools() -> Check:
    """cmake (the Python module FINN runs as ``python -m cmake``) and make, for FIFO simulation."""
    name = "cmake and make"
    lacking = [
        t
        for t, found in (
            ("the cmake Python package (pip install cmake)", importlib.util.find_spec("cmake") is not None),
            ("make (e.g. apt install make)", shutil.which("make") is not None),
        )
        if not found
    ]
    if lacking:
        return Check(
            name,
            MISSING,
            f"FIFO sizing by simulation builds its simulator with them; install "
            f"{' and '.join(lacking)}, or use --fifo-strategy force_minimal_fifos",
        )
    return Check(name, OK, f"python -m cmake, {shutil.which('make')}")


# ---------------------------------------------------------------- FINN's dependencies
def check_finn_deps(settings: Any) -> Check:
    """The FINN_DEPS folder finn-plus uses."""
    deps = Path(settings.finn_deps)
    if deps.is_dir():
        return Check("FINN_DEPS", OK, str(deps))
    return Check(
        "FINN_DEPS",
        MISSING,
        f"{deps} does not exist: `finn deps update` (or a bnnflow build that "
        "finds Vivado) installs FINN's dependencies there; FINN_DEPS=DIR "
        "chooses another folder",
    )


def check_finn_hlslib(settings: Any, deps: Any) -> Check:
    """finn-hlslib in FINN_DEPS at the pinned commit, read as finn-plus does: ``git rev-parse HEAD``."""
    dep = deps.git_deps[FINN_HLSLIB]
    target = Path(settings.finn_deps) / FINN_HLSLIB
    pin = dep.commit
    todo = f"`finn deps update` (or a bnnflow build that finds Vivado) clones {dep.url} at {pin[:12]}"
    if not target.is_dir():
        return Check(FINN_HLSLIB, MISSING, f"{target} not found: {todo}", FINN_HLSLIB)
    rc, out = _run(["git", "rev-parse", "HEAD"], cwd=target)
    head = out.strip() if rc == 0 else None
    if head is None:
        return Check(
            FINN_HLSLIB, WRONG, f"{target}: git cannot read its commit ({_first_line(out)}): {todo}", FINN_HLSLIB
        )
    if head != pin:
        return Check(
            FINN_HLSLIB,
            WRONG,
            f"{target} is at {head[:12]}, finn-plus 1.6.1 pins {pin[:12]} (its "
            f"generated HLS calls Pool_batch, which only that commit has): {todo}",
            FINN_HLSLIB,
        )
    return Check(FINN_HLSLIB, OK, f"at the pinned commit {pin[:12]} ({target})")


def zynq_board_part(board: str) -> str:
    """The board part FINN's Zynq shell script asks Vivado for (``vendor:name:part0:version``)."""
    from finn.transformation.fpgadataflow.templates import custom_zynq_shell_template

    branch = re.search(rf'\$BOARD == "{re.escape(board)}"\}}(.*?)\}}', custom_zynq_shell_template, re.S)
    part = re.search(r"board_part (\S+)", branch.group(1)) if branch else None
    if part is None:
        raise BnnflowError(f"finn-plus's Zynq shell has no board part for {board}")
    return part.group(1)


def _board_xml(path: Path) -> tuple[str, str, str] | None:
    """(vendor, name, file_version) of a Vivado board.xml, or None if it is not one."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    version = root.findtext("file_version")
    if root.tag != "board" or version is None:
        return None
    return root.get("vendor", ""), root.get("name", ""), version.strip()


def check_board_files(board: str, settings: Any, deps: Any) -> Check:
    """A board.xml under FINN_DEPS/board_files with the vendor, name and version FINN's shell asks for."""
    name = "board files"
    part = zynq_board_part(board)
    vendor, bname, _, version = part.split(":")
    dep_name = board.lower()
    dep = deps.direct_download_deps.get(dep_name)
    source = f"from {dep.url}" if dep else "(Vivado's board store)"
    todo = f"`finn deps update` (or a bnnflow build that finds Vivado) installs them {source}"
    folder = Path(settings.finn_deps) / "board_files"
    found = [(p, b) for p in sorted(folder.rglob("board.xml")) if (b := _board_xml(p))] if folder.is_dir() else []
    mine = [(p, b) for p, b in found if b[:2] == (vendor, bname)]
    installable = dep_name if dep else None
    if not mine:
        return Check(name, MISSING, f"no board.xml for {part} ({board}) under {folder}: {todo}", installable)
    exact = [p for p, b in mine if b[2] == version]
    if not exact:
        have = ", ".join(f"{b[2]} ({p})" for p, b in mine)
        return Check(
            name,
            WRONG,
            f"{board} board files of version {have}; FINN's Zynq shell asks for {part}: {todo}",
            installable,
        )
    return Check(name, OK, f"{part} ({exact[0]})")


def check_nlohmann_json(settings: Any, deps: Any) -> Check:
    """The nlohmann/json sources of FINN's simulation backend, at the version finn-plus downloads."""
    from finn.transformation.fpgadataflow.simulation_build import NLOHMANN_JSON_DEP_SUBDIR

    dep = deps.direct_download_deps[NLOHMANN_JSON]
    cmake_file = Path(settings.finn_deps) / NLOHMANN_JSON_DEP_SUBDIR / "CMakeLists.txt"
    todo = f"`finn deps update` (or a bnnflow build that finds Vivado) installs them from {dep.url}"
    if not cmake_file.is_file():
        return Check(
            NLOHMANN_JSON,
            MISSING,
            f"{cmake_file} not found (FIFO sizing by simulation needs it): {todo}",
            NLOHMANN_JSON,
        )
    want = re.search(r"/v(\d+\.\d+\.\d+)/", str(dep.url))
    have = re.search(r"project\s*\(\s*nlohmann_json\s+VERSION\s+(\d+\.\d+\.\d+)", cmake_file.read_text(), re.I)
    if want and (have is None or have.group(1) != want.group(1)):
        return Check(
            NLOHMANN_JSON,
            WRONG,
            f"{cmake_file} is version {have.group(1) if have else 'unknown'}, "
            f"finn-plus downloads {want.group(1)}: {todo}",
            NLOHMANN_JSON,
        )
    return Check(NLOHMANN_JSON, OK, f"{have.group(1) if have else ''} ({cmake_file.parent})".strip())


def check_disk(where: Path) -> Check:
    """Free space at the build folder (its nearest existing parent)."""
    place = Path(where).absolute()
    while not place.exists():
        place = place.parent
    free = shutil.disk_usage(place).free / 2**30
    if free < MIN_FREE_GIB:
        return Check(
            "disk space",
            MISSING,
            f"{free:.1f} GiB free at {place}, a bitfile build needs about "
            f"{MIN_FREE_GIB:g} GiB: free some or build elsewhere (--out)",
        )
    return Check("disk space", OK, f"{free:.0f} GiB free at {place}")


# ---------------------------------------------------------------- the whole list
def run_checks(board: str, where: Path, fifo_strategy: str | None = SIMULATING_FIFO_STRATEGY) -> list[Check]:
    """Every requirement of a bitfile build for ``board`` into ``where``, in order.

    ``fifo_strategy`` is FINN's FIFO sizing strategy (None: depths from a
    file); only ``distributed_sim`` needs the simulation backend's pieces.
    """
    get_board(board)
    settings = finn_settings()
    deps = finn_dependencies(settings)
    vivado, vivado_version = check_vivado()
    checks = [vivado, check_vitis_hls(vivado_version), check_xsi(vivado_version, settings), check_gxx()]
    simulating = fifo_strategy == SIMULATING_FIFO_STRATEGY
    if simulating:
        checks.append(check_build_tools())
    checks += [check_finn_deps(settings), check_finn_hlslib(settings, deps), check_board_files(board, settings, deps)]
    if simulating:
        checks.append(check_nlohmann_json(settings, deps))
    checks.append(check_disk(where))
    return checks


def install_finn_dependencies(names: list[str]) -> None:
    """Install FINN dependencies ``names`` with finn-plus's own ``DependencyUpdater`` (needs the network).

    A failure is one line naming the dependency and its URL.
    """
    from finn.interface.manage_deps import DependencyUpdater
    from finn.util.exception import FINNError

    settings = finn_settings()
    try:
        updater = DependencyUpdater(
            Path(settings.finn_deps),
            Path(settings.finn_deps_definitions),
            settings.deps_git_timeout,
            non_interactive=True,
        )
    except (FINNError, OSError) as exc:
        raise BnnflowError(f"finn-plus's dependency manager cannot start: {_first_line(str(exc))}") from None
    for name in names:
        url = updater.deps.get_fields(name, "url")[0]
        try:
            installed, why = updater.install_dependency(name), "the download or git checkout failed"
        except Exception as exc:  # whatever the installer raises, the user gets the one line below
            installed, why = False, f"{type(exc).__name__}: {_first_line(str(exc))}"
        if not installed:
            raise BnnflowError(
                f"FINN dependency {name} could not be installed from {url} by finn-plus's "
                f"dependency manager (it needs the network): {why}"
            )


def ensure_ready(board: str, where: Path, fifo_strategy: str | None) -> list[Check]:
    """Run the checks before a bitfile build; install missing FINN dependencies; refuse if still not ready."""
    checks = run_checks(board, where, fifo_strategy)
    todo = list(dict.fromkeys(c.dependency for c in checks if not c.ok and c.dependency))
    if todo:
        install_finn_dependencies(todo)
        checks = run_checks(board, where, fifo_strategy)
    failing = [c for c in checks if not c.ok]
    if failing:
        raise BnnflowError(
            "a bitfile build cannot start here (see `bnnflow doctor`): "
            + "; ".join(f"{c.name} {c.status}: {c.detail}" for c in failing)
        )
    return checks
