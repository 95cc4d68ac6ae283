"""Re-evaluate every shipped checkpoint in models/zoo on its full test set.

Prints a markdown table: model, widths, measured accuracy (and whether it
equals the accuracy stored in the checkpoint), training epochs and wall time,
and the command that reproduces the training run (rebuilt from the stored
training config). Usage:

    .venv/bin/python benchmarks/zoo_table.py [--data-dir D]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

import models
from bnnflow import checkpoint, data
from bnnflow.evaluate import accuracy
from bnnflow.train import TrainConfig


def train_command(cfg: dict) -> str:
    """The ``bnnflow train`` command line of a stored TrainConfig (non-default options only)."""
    default = TrainConfig(arch=cfg["arch"])
    flags = {
        "epochs": "--epochs",
        "batch_size": "--batch-size",
        "lr": "--lr",
        "lr_min": "--lr-min",
        "schedule": "--schedule",
        "weight_decay": "--weight-decay",
        "seed": "--seed",
        "train_limit": "--train-limit",
        "eval_limit": "--eval-limit",
    }
    parts = [f"bnnflow train --model {cfg['arch']} --out runs/{cfg['arch']}"]
    for key, flag in flags.items():
        if cfg.get(key) != getattr(default, key):
            parts.append(f"{flag} {cfg[key]}")
    if cfg.get("widths"):
        parts.append("--widths " + ",".join(map(str, cfg["widths"])))
    if cfg.get("augment") is False:
        parts.append("--no-augment")
    return " ".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(2)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        "| checkpoint | model | widths | test accuracy | n | = stored | epochs | train wall time | eval s "
        "| how it was made |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in sorted(models.ZOO_DIR.glob("*.pt")):
        model, meta = checkpoint.load(path)
        split = data.load(model.dataset, "test", a.data_dir)
        t0 = time.time()
        acc = accuracy(model, split)
        dt = time.time() - t0
        same = "yes" if meta.get("accuracy") == acc and meta.get("n") == len(split) else "NO"
        pruning = meta.get("pruning")
        if pruning:
            how = f"`bnnflow prune` {pruning.get('method')} PFR {pruning.get('pfr', 0):.3f}"
            epochs, wall = "-", "-"
        else:
            how = f"`{train_command(meta['train'])}`"
            epochs, wall = meta.get("epochs"), f"{meta.get('wall_time_s', 0) / 60:.1f} min"
        print(
            f"| {path.name} | {model.arch} | {','.join(map(str, model.widths))} | {acc * 100:.2f}% "
            f"| {len(split)} | {same} | {epochs} | {wall} | {dt:.1f} | {how} |"
        )


if __name__ == "__main__":
    main()
