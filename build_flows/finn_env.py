"""The one place where bnnflow prepares finn-plus to run in-process (process set-up only).

FINN's builder is meant to be started by the ``finn`` CLI inside a container
with Vivado. bnnflow calls its Python API instead, so it does what the CLI's
boot would do:

* FINN settings: ``initialize_dummy_settings()`` with ``FINN_BUILD_DIR``
  pointing at a folder of the build, so that FINN's code generation
  (``make_build_dir``) writes the generated code there and not in ``/tmp``.

and, only where Vivado is absent, three work-arounds (finn-plus 1.6.1):

1. ``finn.builder.build_dataflow_steps`` runs ``from finn.xsi import SimEngine``
   at import, which asks for Vivado's XSI simulator and raises
   ``OSError: XILINX_VIVADO environment variable not set``. Setting
   ``finn.xsi.SimEngine = None`` before that import lets the module load; no
   step we run without Vivado uses the simulator.
2. ``exit_buildflow`` writes ``report/metadata_builder.json`` with
   ``Path(get_vivado_root()).name`` after all reports are written, and
   ``get_vivado_root()`` raises without ``XILINX_VIVADO``. A placeholder path
   naming a version (``/opt/Xilinx/Vivado/<ver>``, which does not exist and is
   never executed) is set for that. :func:`vivado_available` checks for the
   ``vivado`` binary, so the placeholder never counts as an installation.
3. The builder redirects ``sys.stdout``/``sys.stderr`` for good and points the
   root logger at its log file; :func:`quiet_builder` restores both afterwards
   (this one applies with or without Vivado).

FINN's builder steps that bnnflow runs in its own version (work-arounds 4-6:
XNOR accumulators, HLS MVAU SIMD, streamlining of padding, pooling and
residual sums) are in :mod:`build_flows.steps`, the passes they run in
:mod:`build_flows.transforms`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

#: Placeholder for XILINX_VIVADO where Vivado is absent (work-around 2); never executed.
VIVADO_PLACEHOLDER = "/opt/Xilinx/Vivado/2024.2"


def _tool_bin(root_env: str, name: str) -> Path | None:
    """The Xilinx tool ``name`` under ``$root_env/bin``, else on PATH, else None."""
    root = os.environ.get(root_env)
    if root and (Path(root) / "bin" / name).is_file():
        return Path(root) / "bin" / name
    found = shutil.which(name)
    return Path(found) if found else None


def vivado_available() -> bool:
    """True where both Vivado and Vitis HLS can be run (sourced settings or on PATH).

    The IP generation, FIFO sizing, stitched IP, synthesis and bitfile steps
    need both; everything up to code generation needs neither.
    """
    return _tool_bin("XILINX_VIVADO", "vivado") is not None and _tool_bin("XILINX_HLS", "vitis_hls") is not None


def tool_versions() -> dict[str, str | None]:
    """Versions of the tools a build used, for the manifest."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for dist in ("finn-plus", "qonnx", "brevitas", "onnx", "torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    vivado = _tool_bin("XILINX_VIVADO", "vivado")
    out["vivado"] = str(vivado.parent.parent) if vivado and _tool_bin("XILINX_HLS", "vitis_hls") else None
    return out


def prepare(finn_build_dir: Path) -> None:
    """Make FINN's builder importable and point its generated code at ``finn_build_dir``.

    Call before importing ``finn.builder``; safe to call once per build.
    """
    finn_build_dir.mkdir(parents=True, exist_ok=True)
    os.environ["FINN_BUILD_DIR"] = str(finn_build_dir.absolute())
    if not vivado_available():
        if "finn.builder.build_dataflow_steps" not in sys.modules:
            import finn.xsi

            finn.xsi.SimEngine = None  # work-around 1
        if not os.environ.get("XILINX_VIVADO"):
            os.environ["XILINX_VIVADO"] = VIVADO_PLACEHOLDER  # work-around 2
    from finn.interface.interface_utils import resolve_module_path
    from finn.util import settings

    # What FINN's CLI boot (`prepare_finn`) exports and FINN's generated scripts still read: the HLS IP
    # generation Tcl and the C++ simulation's compile line name $FINN_CUSTOM_HLS (unset, g++ takes the
    # next -I flag as the folder) and RTL file lists $FINN_RTLLIB.
    os.environ.setdefault("FINN_RTLLIB", resolve_module_path("finn-rtllib"))
    os.environ.setdefault("FINN_CUSTOM_HLS", resolve_module_path("custom_hls"))
    os.environ.setdefault("XILINX_LOCAL_USER_DATA", "no")
    settings.initialize_dummy_settings()


@contextlib.contextmanager
def quiet_builder() -> Iterator[io.StringIO]:
    """Run FINN's builder with its console output captured (it stays in its log file).

    Restores ``sys.stdout``/``sys.stderr`` and the root logger's handlers that
    ``build_dataflow_cfg`` replaces (work-around 3), closing its log file.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield buf
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)
        logging.captureWarnings(False)
