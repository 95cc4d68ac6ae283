"""PNG charts of a report (matplotlib, Agg backend: no display needed).

Each function draws one figure from records already read and writes it
atomically; the numbers drawn are the ones in the tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from bnnflow.files import atomic_path  # noqa: E402
from reports.finn_reports import Build  # noqa: E402
from reports.tables import LAYER_METRICS, layer_names  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def layer_bars(builds: list[Build], metric: str, path: Path) -> Path:
    """Grouped bars per layer (one bar per build) of one FINN estimate; layers at zero everywhere omitted."""
    title, get = LAYER_METRICS[metric]
    names = [n for n in layer_names(builds) if any((la := b.layer(n)) and get(la) for b in builds)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(names) * max(1, len(builds)) + 2), 4))
    width = 0.8 / len(builds)
    x = np.arange(len(names))
    for i, b in enumerate(builds):
        vals = [(get(la) or 0) if (la := b.layer(n)) else 0 for n in names]
        ax.bar(x + (i - (len(builds) - 1) / 2) * width, vals, width, label=b.label)
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"{title} (FINN estimate)")
    ax.set_title(f"{title} per layer")
    ax.grid(axis="y", alpha=0.3)
    if len(builds) > 1:
        ax.legend()
    return _save(fig, path)


def summary_chart(builds: list[Build], path: Path) -> Path:
    """Left: board utilisation (or absolute counts) of LUT, BRAM18, DSP; right: estimated FPS."""
    keys = [("LUT", "LUT"), ("BRAM_18K", "BRAM18"), ("DSP", "DSP")]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2], "wspace": 0.35})
    width = 0.8 / len(builds)
    x = np.arange(len(keys))
    relative = all(b.capacity for b in builds)
    for i, b in enumerate(builds):
        cap = b.capacity if relative else None
        vals = [100.0 * b.total.get(k, 0) / cap[k] if cap else b.total.get(k, 0) for k, _ in keys]
        bars = ax.bar(x + (i - (len(builds) - 1) / 2) * width, vals, width, label=b.label)
        ax.bar_label(bars, fmt="%.1f" if relative else "%.0f", fontsize=7)
    ax.set_xticks(x, [n for _, n in keys])
    ax.set_ylabel("% of the board (FINN estimate)" if relative else "count (FINN estimate, log scale)")
    if not relative:
        ax.set_yscale("symlog")
    ax.set_title("Resources" + (f" on {builds[0].board}" if relative and builds[0].board else ""))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fps = [b.performance["estimated_throughput_fps"] for b in builds]
    colors = [f"C{i}" for i in range(len(builds))]
    bars = ax2.bar([b.label for b in builds], fps, color=colors)
    labels = []
    for b, f in zip(builds, fps, strict=True):
        acc = b.quality.accuracy
        labels.append(f"{f:.0f}" + (f"\nacc {acc:.3f}" if acc is not None else ""))
    ax2.bar_label(bars, labels, fontsize=7)
    ax2.margins(y=0.15)
    ax2.set_ylabel(f"estimated FPS at {builds[0].clock_ns:g} ns")
    ax2.set_title("Throughput")
    ax2.grid(axis="y", alpha=0.3)
    ax2.tick_params(axis="x", labelsize=8)
    return _save(fig, path)


@dataclass(frozen=True)
class Curve:
    """One network's sweep: per point FINN's estimated FPS and resource totals."""

    label: str
    fps: list[float]
    resources: dict[str, list[float]]  # "LUT" / "BRAM_18K" / "DSP" -> one value per point


def sweep_chart(curves: list[Curve], path: Path, capacity: dict[str, int] | None = None) -> Path:
    """Resources against throughput, one curve per network: compare at equal FPS (vertical)
    and at equal resources (horizontal)."""
    keys = [("LUT", "LUT"), ("BRAM_18K", "BRAM18")]
    fig, axes = plt.subplots(1, len(keys), figsize=(11, 4))
    for ax, (k, name) in zip(axes, keys, strict=True):
        for c in curves:
            order = np.argsort(c.fps)
            ax.plot(np.asarray(c.fps)[order], np.asarray(c.resources[k])[order], marker="o", label=c.label)
        if capacity and capacity.get(k):
            ax.axhline(capacity[k], color="grey", ls="--", lw=1, label="board capacity")
        ax.set_xscale("log")
        ax.set_xlabel("estimated FPS (FINN)")
        ax.set_ylabel(f"{name} (FINN estimate)")
        ax.set_title(f"{name} against throughput")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return _save(fig, path)
