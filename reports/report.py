"""The ``report`` stage: build folders in, ``report.md``, ``report.html`` and PNG charts out.

All build folders are read (and checked) before anything is written, so a
missing or malformed report file stops the command with its name and leaves
the output folder as it was.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bnnflow import outdir
from bnnflow.errors import BnnflowError
from bnnflow.progress import progress
from build_flows.build_dir import SIM_JSON
from reports import plots, render
from reports.finn_reports import Build, read_build, read_sim
from reports.tables import folding_compare_table, layer_compare_table, layer_table, summary_table

BAR_METRICS = ("cycles", "lut", "bram18")


def read_builds(dirs: list[Path], labels: list[str] | None = None) -> list[Build]:
    """Read each build folder (with a progress bar); labels default to the folder names."""
    if not dirs:
        raise BnnflowError("no build folder given: `bnnflow report DIR [DIR ...] --out R`")
    if labels is not None and len(labels) != len(dirs):
        raise BnnflowError(f"--labels gives {len(labels)} names for {len(dirs)} build folders")
    for d in dirs:
        check_finished(Path(d))
    builds = [
        read_build(d, labels[i] if labels else None)
        for i, d in enumerate(progress(dirs, total=len(dirs), desc="reading builds"))
    ]
    seen: dict[str, int] = {}
    for i, b in enumerate(builds):  # equal folder names (a/build, b/build): add the parent
        if b.label in seen and not labels:
            builds[i] = replace(b, label=f"{b.root.parent.name}/{b.label}")
        seen[builds[i].label] = i
    return builds


def check_finished(d: Path) -> None:
    """``d`` is a finished bnnflow build (not the half build of a run going on or killed), and its
    ``sim.json``, if any, is the simulator's report."""
    if not d.exists():
        raise BnnflowError(f"{d}: no such build folder; create it with `bnnflow build`")
    if outdir.is_work_link(d):
        raise BnnflowError(
            f"{d}: not a finished bnnflow build: a build into it is running or was killed "
            f"(it links to {d.readlink()}); wait for it, or rerun `bnnflow build`, which puts "
            "back the previous build first"
        )
    if not outdir.is_build(d.resolve()):
        fmt = outdir.manifest_format(d)
        why = "no manifest.json" if not (d / outdir.MANIFEST).is_file() else f"manifest format {fmt!r}"
        raise BnnflowError(
            f"{d}: not a finished bnnflow build ({why}); report reads folders written by `bnnflow build`"
        )
    read_sim(d / SIM_JSON)


def document(builds: list[Build], out_dir: Path) -> render.Document:
    """Draw the charts into ``out_dir`` and lay out tables and charts."""
    many = len(builds) > 1
    summary_png = plots.summary_chart(builds, out_dir / "summary.png")
    bar_pngs = [(plots.layer_bars(builds, m, out_dir / f"layers_{m}.png"), m) for m in BAR_METRICS]
    names = ", ".join(f"{b.label} ({b.root})" for b in builds)
    sections = [
        render.Section(
            "Summary",
            "Totals, board utilisation, throughput and latency at the build clock, accuracy and PFR.",
            [summary_table(builds)],
            [(summary_png, "Resources and throughput (FINN estimates)")],
        )
    ]
    sections.append(
        render.Section(
            "Per layer" + (", side by side" if many else ""),
            "Bar charts of FINN's per-layer estimates" + (" (one bar per build)." if many else "."),
            (
                [folding_compare_table(builds)] + [layer_compare_table(builds, m) for m in ("cycles", "lut", "bram18")]
                if many
                else []
            ),
            [(p, f"{m} per layer") for p, m in bar_pngs],
        )
    )
    for b in builds:
        sections.append(render.Section(f"Build {b.label}", f"Folder {b.root}.", [layer_table(b)]))
    title = "Resource report: " + " vs ".join(b.label for b in builds)
    return render.Document(title, f"Builds: {names}.", sections)


def make_report(dirs: list[Path], out_dir: Path, labels: list[str] | None = None) -> list[Path]:
    """Read the builds, then write the charts, ``report.md`` and ``report.html`` into ``out_dir``."""
    out_dir = Path(out_dir)
    outdir.check_output_dir(out_dir, "--out")
    builds = read_builds(dirs, labels)
    with outdir.writing(out_dir, "--out"):
        doc = document(builds, out_dir)
        md, page = render.write(doc, out_dir)
    pngs = [p for s in doc.sections for p, _ in s.images]
    return [md, page, *pngs]
