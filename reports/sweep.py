"""The ``sweep`` stage: build networks at several target FPS and report resources against throughput.

FINN's LUT estimate of a binary MVAU depends on PE and SIMD, not on the
number of filters, so a pruned and an unpruned network folded alike differ in
cycles and BRAM but hardly in LUTs. A fair comparison folds each network for
the same throughput (equal FPS) or asks which throughput each reaches within
the same resources (equal resources); the sweep gives both, from one curve
per network.

Builds are made with ``build_flows.build.build`` (estimates and code
generation, no Vivado) into ``OUT/<label>/fps_<F>/``. A finished build is
marked by ``.sweep.json`` (input hash, board, clock, target); a rerun reuses
marked builds of this bnnflow's layout and redoes unmarked (interrupted) or
older ones, so a sweep resumes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bnnflow import outdir, validate
from bnnflow.errors import BnnflowError
from bnnflow.files import atomic_write, sha256_file
from bnnflow.progress import progress
from build_flows.build_dir import is_current_build
from reports import plots, render
from reports.finn_reports import Build, read_build
from reports.tables import Table, ratio

MARKER = ".sweep.json"


def plain_name(label: object) -> bool:
    """A label names a folder inside OUT: a plain name (no path separator, not hidden, not . or ..)."""
    return (
        isinstance(label, str)
        and 0 < len(label) <= 255
        and not label.startswith(".")
        and not re.search(r"[/\\\x00]", label)
    )


@dataclass(frozen=True)
class Net:
    label: str
    input_path: Path
    builds: list[Build]  # one per target FPS, in the order given


def fps_dir_name(fps: float) -> str:
    return f"fps_{int(fps)}" if float(fps).is_integer() else f"fps_{fps:g}"


def _builder() -> Any:
    try:
        from build_flows.build import build
    except ImportError as exc:
        raise BnnflowError(
            f"`bnnflow sweep` needs the build stage (build_flows.build), which cannot be imported here ({exc})"
        ) from exc
    return build


def _labels(inputs: list[Path], labels: list[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(inputs):
            raise BnnflowError(f"--labels gives {len(labels)} names for {len(inputs)} inputs")
        out = labels
        for lab in out:
            if not plain_name(lab):
                raise BnnflowError(
                    f"--labels {lab!r}: a label names a folder inside --out, so it must be a plain "
                    "name (no '/' or '\\', not starting with '.')"
                )
    else:
        out = [p.stem for p in inputs]
        for p, lab in zip(inputs, out, strict=True):
            if not plain_name(lab):
                raise BnnflowError(f"{p}: its name {lab!r} cannot name a folder inside --out; give --labels")
    if len(set(out)) != len(out):
        raise BnnflowError(f"inputs share a name ({', '.join(out)}); give distinct ones with --labels")
    return out


def _check_args(inputs: list[Path], fps: list[float], clock_ns: float, labels: list[str] | None) -> list[str]:
    """Everything about the options that can be wrong, before anything is built or written; the labels."""
    validate.number(clock_ns, "--clock-ns", 0.0, 1e6, lo_open=True)
    if not fps:
        raise BnnflowError("--fps lists no target: give e.g. --fps 1000,3000,10000")
    for f in fps:
        validate.number(f, "--fps values", 1.0, 1e9 / clock_ns)
    if len({fps_dir_name(f) for f in fps}) != len(fps):
        raise BnnflowError(f"--fps lists a target twice: {', '.join(f'{f:g}' for f in fps)}")
    for p in inputs:
        if not p.is_file():
            raise BnnflowError(f"{p}: file not found (give a checkpoint or QONNX model to sweep)")
    return _labels(inputs, labels)


def _check_board(board: str) -> None:
    try:
        from build_flows.boards import get_board
    except ImportError:
        return  # _builder says so
    get_board(board)


def run_builds(
    inputs: list[Path],
    board: str,
    fps: list[float],
    out_dir: Path,
    clock_ns: float = 10.0,
    labels: list[str] | None = None,
) -> list[Net]:
    """Build every input at every target FPS (reusing finished builds) and read the results."""
    names = _check_args(inputs, fps, clock_ns, labels)
    hashes = {p: sha256_file(p) for p in inputs}
    jobs = [(name, p, f) for name, p in zip(names, inputs, strict=True) for f in fps]
    build = None
    reused = 0
    for name, p, f in progress(jobs, total=len(jobs), desc="sweep builds"):
        d = out_dir / name / fps_dir_name(f)
        want = {"input": str(p), "sha256": hashes[p], "board": board, "clock_ns": clock_ns, "target_fps": f}
        marker = d / MARKER
        if marker.is_file():
            try:
                if json.loads(marker.read_text()) == want and outdir.is_build(d) and is_current_build(d):
                    reused += 1
                    continue
            except (ValueError, RecursionError):
                pass  # a damaged marker: rebuild
        # An outdated or unmarked build of ours is replaced by the build itself, which refuses a
        # folder that is not a bnnflow build and keeps the previous one if it fails.
        build = build or _builder()
        build(p, board, d, target_fps=int(f) if float(f).is_integer() else f, clock_ns=clock_ns)
        atomic_write(marker, json.dumps(want, indent=2))
    print(f"sweep: {len(jobs) - reused} built, {reused} reused, in {out_dir}")
    return [
        Net(
            name,
            p,
            [replace(read_build(out_dir / name / fps_dir_name(f), f"{name} @ {f:g}"), target_fps=f) for f in fps],
        )
        for name, p in zip(names, inputs, strict=True)
    ]


# ---------------------------------------------------------------- tables
def points_table(net: Net) -> Table:
    """One row per target FPS: what FINN's folding reached and what it costs."""
    rows = []
    for b in net.builds:
        rows.append(
            [
                b.target_fps,
                b.performance["estimated_throughput_fps"],
                b.performance["max_cycles"],
                b.performance["max_cycles_node_name"],
                b.total.get("LUT"),
                b.total.get("BRAM_18K"),
                b.total.get("DSP"),
                b.quality.accuracy,
                b.quality.pfr,
            ]
        )
    return Table(
        f"{net.label}: resources against throughput",
        ["Target FPS", "Est. FPS", "Cycles (II)", "Bottleneck", "LUT", "BRAM18", "DSP", "Accuracy", "PFR"],
        rows,
        "FINN's estimates (report/estimate_*.json) of each build.",
        numeric_from=0,
    )


def equal_fps_table(nets: list[Net], fps: list[float]) -> Table:
    """At each target FPS: each network's resources, and the ratio to the first network."""
    cols = ["Target FPS"]
    for n in nets:
        cols += [f"Est. FPS {n.label}", f"LUT {n.label}", f"BRAM18 {n.label}"]
    for n in nets[1:]:
        cols += [f"LUT × {n.label}", f"BRAM18 × {n.label}"]
    rows = []
    for i, f in enumerate(fps):
        row: list[Any] = [f]
        for n in nets:
            b = n.builds[i]
            row += [b.performance["estimated_throughput_fps"], b.total.get("LUT"), b.total.get("BRAM_18K")]
        base = nets[0].builds[i]
        for n in nets[1:]:
            b = n.builds[i]
            row += [
                ratio(base.total.get("LUT"), b.total.get("LUT")),
                ratio(base.total.get("BRAM_18K"), b.total.get("BRAM_18K")),
            ]
        rows.append(row)
    return Table(
        "Equal throughput: resources at the same target FPS",
        cols,
        rows,
        f"× = network / {nets[0].label}.",
        numeric_from=0,
    )


def equal_resources_table(nets: list[Net]) -> Table:
    """For each build of the first network as a budget (its LUT and BRAM18), the highest
    estimated FPS each network reaches among its sweep points within that budget."""
    cols = (
        ["Budget LUT", "Budget BRAM18"] + [f"Best FPS {n.label}" for n in nets] + [f"FPS × {n.label}" for n in nets[1:]]
    )
    rows = []
    for budget in nets[0].builds:
        lut, bram = budget.total.get("LUT", 0), budget.total.get("BRAM_18K", 0)
        best = []
        for n in nets:
            fits = [
                b.performance["estimated_throughput_fps"]
                for b in n.builds
                if b.total.get("LUT", 0) <= lut and b.total.get("BRAM_18K", 0) <= bram
            ]
            best.append(max(fits) if fits else None)
        rows.append([lut, bram, *best, *[ratio(best[0], v) for v in best[1:]]])
    return Table(
        "Equal resources: best throughput within the first network's budgets",
        cols,
        rows,
        "Among the sweep points only; '–' where no point fits the budget.",
        numeric_from=0,
    )


def make_sweep(
    inputs: list[Path],
    board: str,
    fps: list[float],
    out_dir: Path,
    clock_ns: float = 10.0,
    labels: list[str] | None = None,
) -> list[Path]:
    """Run (or resume) the sweep, then write ``sweep.md``, ``sweep.html``, ``sweep.png`` and ``sweep.json``."""
    out_dir = Path(out_dir)
    _check_args(inputs, fps, clock_ns, labels)  # before anything is written
    _check_board(board)
    with outdir.writing(out_dir, "--out"):
        return _make_sweep(inputs, board, fps, out_dir, clock_ns, labels)


def _make_sweep(
    inputs: list[Path], board: str, fps: list[float], out_dir: Path, clock_ns: float, labels: list[str] | None
) -> list[Path]:
    nets = run_builds(inputs, board, fps, out_dir, clock_ns, labels)
    curves = [
        plots.Curve(
            n.label,
            [b.performance["estimated_throughput_fps"] for b in n.builds],
            {k: [b.total.get(k, 0) for b in n.builds] for k in ("LUT", "BRAM_18K", "DSP")},
        )
        for n in nets
    ]
    png = plots.sweep_chart(curves, out_dir / "sweep.png", nets[0].builds[0].capacity)
    tables = [points_table(n) for n in nets]
    if len(nets) > 1:
        tables = [equal_fps_table(nets, fps), equal_resources_table(nets)] + tables
    doc = render.Document(
        f"Throughput sweep on {board}: " + " vs ".join(n.label for n in nets),
        f"Each network built at target FPS {', '.join(f'{f:g}' for f in fps)} (clock {clock_ns:g} ns); "
        f"builds in {out_dir}/<network>/fps_<F>/.",
        [
            render.Section(
                "Resources against throughput",
                "Read vertically for equal throughput, horizontally for equal resources.",
                tables,
                [(png, "LUT and BRAM18 against estimated FPS (FINN)")],
            )
        ],
    )
    md, page = render.write(doc, out_dir, "sweep")
    data = [
        {
            "label": n.label,
            "input": str(n.input_path),
            "points": [
                {
                    "dir": str(b.root),
                    "target_fps": b.target_fps,
                    "estimated_fps": b.performance["estimated_throughput_fps"],
                    **b.total,
                }
                for b in n.builds
            ],
        }
        for n in nets
    ]
    js = out_dir / "sweep.json"
    atomic_write(js, json.dumps(data, indent=2))
    return [md, page, png, js]
