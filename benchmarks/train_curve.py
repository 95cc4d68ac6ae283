"""Accuracy against epoch of training runs, from their ``state.pt`` (or a finished ``model.pt``).

Plots, per run, the accuracy on the held-out training images (the figure
that chooses the epoch kept) and on the first ``eval_limit`` test images
(the curve only; never used to choose), and prints the table.

    .venv/bin/python benchmarks/train_curve.py runs/cnv150/state.pt --labels CNV --out curve.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from bnnflow.files import atomic_path


def history(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(per-epoch rows, training config) of a run's state file or checkpoint."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if obj.get("format") == "bnnflow-train-state":
        return list(obj["history"]), dict(obj["config"])
    meta = obj["meta"]
    return list(meta["history"]), dict(meta["train"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="state.pt or model.pt of each run")
    ap.add_argument("--labels", default=None, help="comma-separated, one per run")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    a = ap.parse_args()
    labels = a.labels.split(",") if a.labels else [p.parent.name for p in a.runs]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    if len(labels) != len(a.runs):
        sys.exit(f"--labels names {len(labels)} runs, {len(a.runs)} given")
    for path, label in zip(a.runs, labels, strict=True):
        rows, cfg = history(path)
        ep = [r["epoch"] for r in rows]
        if rows and "holdout_acc" in rows[0]:
            ax.plot(
                ep,
                [100 * r["holdout_acc"] for r in rows],
                label=f"{label}: {cfg.get('holdout')} held-out training images",
            )
        ax.plot(
            ep,
            [100 * r["test_acc"] for r in rows],
            "--",
            label=f"{label}: first {rows[0]['n_monitor']} test images" if rows else label,
        )
        print(
            f"{label} ({path}): {len(rows)} of {cfg['epochs']} epochs, lr {cfg['lr']}, "
            f"{rows[-1]['wall_time_s'] / 60:.0f} min"
            if rows
            else f"{label}: no epochs yet"
        )
        print("| epoch | loss | held-out | test (curve) | lr | wall min |")
        print("|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            held = f"{100 * r['holdout_acc']:.2f}%" if "holdout_acc" in r else "-"
            print(
                f"| {r['epoch']} | {r['loss']:.4f} | {held} | {100 * r['test_acc']:.2f}% | {r['lr']:.5f} | "
                f"{r['wall_time_s'] / 60:.1f} |"
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(a.out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


if __name__ == "__main__":
    main()
