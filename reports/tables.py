"""Tables of a report: per build and layer, totals, and side by side with deltas and ratios.

Cells hold the numbers exactly as read (no rounding, no re-derivation);
formatting is the renderer's job. The only arithmetic here is what a
comparison is made of: utilisation (total / board capacity), delta
(build - baseline) and ratio (build / baseline), the baseline being the
first build given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reports.finn_reports import Build, Layer

Cell = Any  # int | float | str | None


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    note: str = ""
    numeric_from: int = 1  # columns from this index on are right-aligned

    def column(self, name: str) -> list[Cell]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def row(self, key: str) -> list[Cell]:
        return next(r for r in self.rows if r[0] == key)


def _is_num(v: Cell) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def delta(a: Cell, b: Cell) -> Cell:
    return b - a if _is_num(a) and _is_num(b) else None


def ratio(a: Cell, b: Cell) -> Cell:
    return b / a if _is_num(a) and _is_num(b) and a != 0 else None


def _util(b: Build, key: str) -> Cell:
    if b.capacity is None or not b.capacity.get(key) or key not in b.total:
        return None
    return 100.0 * b.total[key] / b.capacity[key]


# ---------------------------------------------------------------- summary
# (row name, getter); rows whose getter gives None for every build are dropped.
SUMMARY_ROWS: list[tuple[str, Callable[[Build], Cell]]] = [
    ("Board", lambda b: b.board),
    ("Part", lambda b: b.part),
    ("Clock (ns)", lambda b: b.clock_ns),
    ("Target FPS", lambda b: b.target_fps),
    ("Accuracy", lambda b: b.quality.accuracy),
    ("Accuracy from", lambda b: b.quality.source or None),
    ("PFR (pruned filter ratio)", lambda b: b.quality.pfr),
    ("LUT (est.)", lambda b: b.total.get("LUT")),
    ("LUT % of board (est.)", lambda b: _util(b, "LUT")),
    ("BRAM18 (est.)", lambda b: b.total.get("BRAM_18K")),
    ("BRAM18 % of board (est.)", lambda b: _util(b, "BRAM_18K")),
    ("URAM (est.)", lambda b: b.total.get("URAM") or None),
    ("DSP (est.)", lambda b: b.total.get("DSP")),
    ("DSP % of board (est.)", lambda b: _util(b, "DSP")),
    ("Bottleneck layer", lambda b: b.performance["max_cycles_node_name"]),
    ("Cycles per frame (II)", lambda b: b.performance["max_cycles"]),
    ("Critical path cycles", lambda b: b.performance["critical_path_cycles"]),
    ("Est. throughput (FPS)", lambda b: b.performance["estimated_throughput_fps"]),
    ("Est. latency (ns)", lambda b: b.performance["estimated_latency_ns"]),
    ("LUT (synth, whole design)", lambda b: _top(b, "LUT")),
    ("FF (synth, whole design)", lambda b: _top(b, "FF")),
    ("RAMB36 (synth, whole design)", lambda b: _top(b, "BRAM_36K")),
    ("RAMB18 (synth, whole design)", lambda b: _top(b, "BRAM_18K")),
    ("DSP (synth, whole design)", lambda b: _top(b, "DSP")),
    ("LUT (OOC P&R, accelerator)", lambda b: _ooc(b, "LUT")),
    ("FF (OOC P&R, accelerator)", lambda b: _ooc(b, "FF")),
    ("RAMB36 (OOC P&R, accelerator)", lambda b: _ooc(b, "BRAM_36K")),
    ("RAMB18 (OOC P&R, accelerator)", lambda b: _ooc(b, "BRAM_18K")),
    ("DSP (OOC P&R, accelerator)", lambda b: _ooc(b, "DSP")),
    ("WNS (ns)", lambda b: b.synth.wns_ns if b.synth else None),
    ("Fmax (MHz)", lambda b: b.synth.fmax_mhz if b.synth else None),
    ("FPS at fmax (OOC)", lambda b: _ooc(b, "estimated_throughput_fps")),
]


def _top(b: Build, key: str) -> Cell:
    return b.synth.top.get(key) if b.synth and b.synth.top else None


def _ooc(b: Build, key: str) -> Cell:
    return b.synth.ooc.get(key) if b.synth and b.synth.ooc else None


def summary_table(builds: list[Build]) -> Table:
    """One row per figure, one column per build; with several builds, delta and ratio to the first."""
    base = builds[0]
    cols = ["Figure"] + [b.label for b in builds]
    for b in builds[1:]:
        cols += [f"Δ {b.label}", f"× {b.label}"]
    rows = []
    for name, get in SUMMARY_ROWS:
        vals = [get(b) for b in builds]
        if all(v is None for v in vals):
            continue
        row = [name, *vals]
        for v in vals[1:]:
            row += [delta(vals[0], v), ratio(vals[0], v)]
        rows.append(row)
    note = (
        (f"Δ = build − {base.label}, × = build / {base.label}. " if len(builds) > 1 else "")
        + "Estimates are FINN's (report/estimate_*.json); FINN counts no FIFOs or width converters, "
        "and BRAM for weights only."
    )
    return Table("Totals", cols, rows, note)


# ---------------------------------------------------------------- per layer
_LAYER_COLS: list[tuple[str, Callable[[Layer], Cell]]] = [
    ("Op", lambda la: la.op_type),
    ("MW", lambda la: la.mw),
    ("MH", lambda la: la.mh),
    ("PE", lambda la: la.pe),
    ("SIMD", lambda la: la.simd),
    ("W bits", lambda la: la.weight_bits),
    ("Acc bits", lambda la: la.acc_bits),
    ("Cycles", lambda la: la.cycles),
    ("LUT", lambda la: la.lut),
    ("BRAM18", lambda la: la.bram18),
    ("URAM", lambda la: la.resources.get("URAM")),
    ("DSP", lambda la: la.dsp),
]
_SYNTH_COLS = [
    ("LUT syn", "LUT"),
    ("FF syn", "FF"),
    ("RAMB36 syn", "BRAM_36K"),
    ("RAMB18 syn", "BRAM_18K"),
    ("DSP syn", "DSP"),
]


def layer_table(b: Build) -> Table:
    """Per layer: shape and folding (graph), FINN's estimates and, where Vivado ran, synthesis."""
    cols = [(n, g) for n, g in _LAYER_COLS if n != "URAM" or any(la.resources.get("URAM") for la in b.layers)]
    synth = b.synth.layers if b.synth else {}
    syn_cols = [(n, k) for n, k in _SYNTH_COLS if any(k in r for r in synth.values())]
    rows = []
    for la in b.layers:
        row = [la.name] + [g(la) for _, g in cols]
        row += [synth.get(la.name, {}).get(k) for _, k in syn_cols]
        rows.append(row)
    total: list[Any] = ["total (FINN)"] + [None] * len(cols) + [None] * len(syn_cols)
    for i, (n, _) in enumerate(cols, start=1):
        key = {"LUT": "LUT", "BRAM18": "BRAM_18K", "URAM": "URAM", "DSP": "DSP"}.get(n)
        if key:
            total[i] = b.total.get(key)
        elif n == "Cycles":
            total[i] = b.performance["max_cycles"]
    rows.append(total)
    note = (
        "Cycles, LUT, BRAM18, DSP: FINN's estimates; the total row's Cycles is the initiation interval "
        "(slowest layer). "
    )
    if syn_cols and b.synth is not None:
        note += "'syn' columns: post-synthesis, from " + ", ".join(p.name for p in b.synth.sources) + ". "
    return Table(
        f"Per layer: {b.label}", ["Layer"] + [n for n, _ in cols] + [n for n, _ in syn_cols], rows, note, numeric_from=2
    )


def layer_names(builds: list[Build]) -> list[str]:
    """Layers of all builds, in the first build's order, then the others' new ones."""
    names: list[str] = []
    for b in builds:
        names += [la.name for la in b.layers if la.name not in names]
    return names


LAYER_METRICS: dict[str, tuple[str, Callable[[Layer], Cell]]] = {
    "cycles": ("Cycles", lambda la: la.cycles),
    "lut": ("LUT", lambda la: la.lut),
    "bram18": ("BRAM18", lambda la: la.bram18),
    "dsp": ("DSP", lambda la: la.dsp),
}


def layer_compare_table(builds: list[Build], metric: str) -> Table:
    """One metric per layer, side by side, with delta and ratio to the first build."""
    title, get = LAYER_METRICS[metric]
    cols = ["Layer"] + [b.label for b in builds]
    for b in builds[1:]:
        cols += [f"Δ {b.label}", f"× {b.label}"]
    rows = []
    for name in layer_names(builds):
        vals = [get(la) if (la := b.layer(name)) else None for b in builds]
        row = [name, *vals]
        for v in vals[1:]:
            row += [delta(vals[0], v), ratio(vals[0], v)]
        rows.append(row)
    return Table(f"Per layer, side by side: {title} (FINN estimate)", cols, rows)


def folding_compare_table(builds: list[Build]) -> Table:
    """MH, PE and SIMD of each matrix layer per build: where pruning changed shape or folding."""
    cols = ["Layer"]
    for b in builds:
        cols += [f"MH {b.label}", f"PE {b.label}", f"SIMD {b.label}"]
    rows = []
    for name in layer_names(builds):
        row: list[Cell] = [name]
        for b in builds:
            la = b.layer(name)
            row += [la.mh, la.pe, la.simd] if la else [None, None, None]
        if any(v is not None for v in row[1:]):
            rows.append(row)
    return Table("Per layer, side by side: shape and folding", cols, rows)
