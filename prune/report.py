"""The pruning report: per-stage accuracy and PFR as Markdown, JSON and a learning-curve PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bnnflow.files import atomic_path, atomic_write


def markdown(summary: dict[str, Any]) -> str:
    """Human-readable report of one run."""
    p = summary["pruning"]
    lines = [
        f"# Pruning report: {summary['arch']} ({p['method']})",
        "",
        f"- source: `{summary['source']}` (accuracy {summary['source_accuracy']:.4f} on {summary['n']} test images)",
        f"- output: `{summary['out']}`: accuracy **{summary['accuracy']:.4f}** on {summary['n']} test images",
        f"- PFR achieved **{p['pfr']:.4f}** ({_target(p)}, granularity {p['granularity']}); "
        f"pruned {p['pruned_filters']} of {p['prunable_filters']} filters of the prunable layers",
        f"- widths {p['original_widths']} -> {summary['widths']}",
        f"- wall time {summary['wall_time_s']:.0f} s",
        *_allocation_lines(p),
        *_finetune_lines(p),
        "",
        "| stage | step | accuracy (n) | PFR | kept | wall s |",
        "|---:|---|---:|---:|---|---:|",
    ]
    for row in p["history"]:
        kept = ", ".join(f"{k}={v}" for k, v in row["kept"].items())
        lines.append(
            f"| {row['stage']} | {row['label']} | {row['accuracy']:.4f} ({row['n']}) | "
            f"{row['pfr']:.4f} | {kept} | {row['wall_time_s']:.0f} |"
        )
    lines += [
        "",
        f"Per-stage accuracy is on {p['history'][0]['n']} random test images (fixed); "
        "the final figure on the whole test set.",
        "",
        f"Options: `{json.dumps(p['config'], sort_keys=True)}`",
        "",
    ]
    if p["method"] in ("msf-layerwise", "msf-cascade", "random"):
        lines.insert(2, "_Baseline reconstructed from the paper's description (see prune/README.md)._\n")
    return "\n".join(lines)


def _target(p: dict[str, Any]) -> str:
    """What chose the counts: a PFR target, or a board budget (``--fit``, details in fit.md)."""
    if "fit" in p:
        f = p["fit"]
        return (
            f"no PFR target: fit to {f['board']} at {f['target_fps']:g} FPS, budget "
            f"`{f['budget'] or 'FINN utilisation limits'}`, see fit.md"
        )
    return f"target {p['target_pfr']}"


def _allocation_lines(p: dict[str, Any]) -> list[str]:
    """The learned allocation's outcome, if the run had an ``allocate`` stage."""
    row = next((r for r in p["history"] if r["label"].startswith("allocate")), None)
    if row is None:
        return []
    counts = ", ".join(f"{k}={v} ({row['uniform_targets'][k]})" for k, v in row["targets"].items())
    return [
        f"- allocation `{p.get('allocation')}`: kept per layer {counts} (uniform split in brackets); "
        f"MACs per frame of the binary layers {row['macs'] / 1e6:.2f} M (uniform split "
        f"{row['uniform_macs'] / 1e6:.2f} M)"
    ]


def _finetune_lines(p: dict[str, Any]) -> list[str]:
    """Which fine-tune epoch the output holds, and why."""
    rows = [r for r in p["history"] if r["label"].startswith("fine-tune")]
    chosen = next((r for r in rows if r.get("chosen")), None)
    if chosen is None:
        return []
    if "holdout_accuracy" not in chosen:
        return [f"- fine-tune: {len(rows)} epochs; the output is the last one"]
    return [
        f"- fine-tune: {len(rows)} epochs; the output is `{chosen['label']}`, the best on the "
        f"{p['holdout']} held-out training images ({chosen['holdout_accuracy']:.4f}; per epoch: "
        + ", ".join(f"{r['holdout_accuracy']:.4f}" for r in rows)
        + ")"
    ]


def curve_png(history: list[dict[str, Any]], title: str, path: Path) -> None:
    """Accuracy and PFR after every stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["stage"] for r in history]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(x, [r["accuracy"] for r in history], "o-", label="accuracy (gated net; pruned net while fine-tuning)")
    ax.set_xlabel("stage")
    ax.set_ylabel("test accuracy")
    ax2 = ax.twinx()
    ax2.step(x, [r["pfr"] for r in history], where="post", color="tab:red", label="PFR")
    ax2.set_ylabel("pruned-filter ratio", color="tab:red")
    ax2.set_ylim(0, 1)
    ax.set_xticks(x)
    ax.set_xticklabels([r["label"] for r in history], rotation=60, ha="right", fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)


def write(summary: dict[str, Any], report_dir: Path) -> dict[str, Path]:
    """Write report.md, report.json and curve.png into ``report_dir``."""
    paths = {"md": report_dir / "report.md", "json": report_dir / "report.json", "png": report_dir / "curve.png"}
    atomic_write(paths["md"], markdown(summary))
    atomic_write(paths["json"], json.dumps(summary, indent=2, sort_keys=True))
    curve_png(summary["pruning"]["history"], f"{summary['arch']} {summary['pruning']['method']}", paths["png"])
    return paths
