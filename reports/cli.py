"""``bnnflow report`` and ``bnnflow sweep``: resource reports of builds, and throughput sweeps."""

from __future__ import annotations

import argparse
from pathlib import Path

from bnnflow import validate as v
from bnnflow.errors import BnnflowError


def _names(s: str) -> list[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


_fps_list = v.arg_list(v.arg_float(1.0), "target FPS values")


def _report_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("build_dirs", type=Path, nargs="+", metavar="DIR", help="build folders of `bnnflow build`")
    p.add_argument("--out", type=Path, required=True, help="report folder (report.md, report.html, *.png)")
    p.add_argument(
        "--labels",
        type=_names,
        default=None,
        help="comma-separated names of the builds (default: folder names); the first is the baseline",
    )


def _report(a: argparse.Namespace) -> int:
    """Resource report of builds: per layer and totals, estimate vs synthesis, side by side."""
    from reports.report import make_report

    files = make_report(a.build_dirs, a.out, a.labels)
    print(f"wrote {files[0]}, {files[1]} and {len(files) - 2} charts")
    return 0


def _sweep_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs",
        type=Path,
        nargs="+",
        metavar="INPUT",
        help="checkpoint(s) or QONNX model(s); several give one curve each",
    )
    p.add_argument("--board", required=True, help="Pynq-Z1 or Pynq-Z2")
    p.add_argument("--fps", type=_fps_list, required=True, help="target FPS values, e.g. 1000,3000,10000")
    p.add_argument("--clock-ns", type=v.arg_float(0.0, lo_open=True), default=10.0)
    p.add_argument("--out", type=Path, required=True, help="sweep folder (builds, sweep.md/html/png/json)")
    p.add_argument("--labels", type=_names, default=None, help="comma-separated names of the inputs")


def _sweep(a: argparse.Namespace) -> int:
    """Build at several target FPS (no Vivado) and report resources against throughput."""
    from reports.sweep import make_sweep

    if a.clock_ns <= 0:
        raise BnnflowError(f"--clock-ns must be positive, got {a.clock_ns}")
    files = make_sweep(a.inputs, a.board, a.fps, a.out, a.clock_ns, a.labels)
    print(f"wrote {files[0]}, {files[1]}, {files[2]}")
    return 0


#: the subcommands of this stage, for ``bnnflow.cli``: (name, options, handler)
COMMANDS = [("report", _report_opts, _report), ("sweep", _sweep_opts, _sweep)]
