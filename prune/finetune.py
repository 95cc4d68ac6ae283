"""Final fine-tuning of the physically pruned network, resumable epoch by epoch.

Why it exists: the layer-wise schedule retrains layer i and the layers above
it on a small sample budget right after layer i's selection, and the last
selection is only followed by one retraining of the top layers. On CNV that
leaves most of the accuracy loss unrecovered (measured: -7.7 points at PFR
0.40 with 20,000 images per stage). Fine-tuning the whole network once at the
end, with the same distillation from the unpruned network, recovers it.

It runs on the *physically pruned* network, not on the gated one: the two
compute the same function (checked before this step), and the pruned one
costs only its own size per step, about 2.5x less than the gated CNV at PFR
0.4. The cosine schedule from ``finetune_lr`` to 0 spans ``finetune_epochs``
full passes over the training set. ``work_dir/finetune.pt`` holds the network,
optimizer state and rows after every epoch, so an interrupted fine-tune
continues exactly where it stopped (the random streams are re-seeded per
epoch, as in :mod:`bnnflow.train`).

With a held-out set (``--holdout N``: training images that no step of the run
trains on) the fine-tune scores every epoch on it and ends with the best
epoch's network, not the last. Why: a BNN fine-tune swings by about two
points of accuracy from one epoch to the next even at the end of the cosine
schedule (measured on CNV: 71.3, 71.4, 72.8, 70.8% on 1,000 monitor images for
epochs 7-10), so the last epoch carries a point of luck either way. Choosing
by test images would leak them into the result; held-out *training* images
do not. The best network so far is part of ``finetune.pt``, so a resumed run
chooses among all epochs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bnnflow import checkpoint, data
from bnnflow.errors import BnnflowError
from bnnflow.evaluate import accuracy
from bnnflow.train import TrainConfig, lr_at, train_epoch
from models.nets import BinaryNet
from prune.config import PruneConfig, with_defaults

FORMAT = "bnnflow-prune-finetune"


def state_path(work_dir: Path) -> Path:
    return Path(work_dir) / "finetune.pt"


def _load(path: Path, cfg: PruneConfig, widths: list[int]) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise BnnflowError(
            f"{path}: unreadable fine-tuning state ({type(exc).__name__}); remove it or drop --resume"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise BnnflowError(f"{path}: not a bnnflow fine-tuning state; remove it or drop --resume")
    if with_defaults(state["config"]) != asdict(cfg) or list(state["net"]["widths"]) != widths:
        raise BnnflowError(f"{path}: belongs to another pruning run; use another --work-dir or drop --resume")
    return state


def finetune(
    pruned: BinaryNet,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    cfg: PruneConfig,
    train_split: data.Split,
    monitor: data.Split,
    work_dir: Path,
    resume: bool,
    max_epochs: int | None = None,
    log: Callable[[str], None] = print,
    holdout: data.Split | None = None,
) -> tuple[BinaryNet, list[dict[str, Any]], bool]:
    """Fine-tune ``pruned`` (all its weights) for ``cfg.finetune_epochs`` epochs.

    Returns the network, one row per finished epoch (accuracy on ``monitor``
    and on ``holdout`` if given, wall time of the fine-tune) and whether all
    epochs are done; at most ``max_epochs`` run in this call. Once all epochs
    are done, the network returned is the one of the epoch with the best
    ``holdout`` accuracy (the first of equals), or the last epoch's without a
    held-out set; its row has ``"chosen": True``.
    """
    path = state_path(work_dir)
    state = _load(path, cfg, list(pruned.widths)) if resume and path.is_file() else None
    start, rows, wall, best = 0, [], 0.0, None
    if state is not None:
        pruned, _ = checkpoint.from_dict(state["net"], str(path))
        start, rows, wall = state["epoch"], list(state["rows"]), float(state["wall_time_s"])
        best = state.get("best")
    opt = torch.optim.Adam(pruned.parameters(), lr=cfg.finetune_lr)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        log(f"resuming the fine-tune after epoch {start}/{cfg.finetune_epochs} ({path})")
    tcfg = TrainConfig(
        arch=pruned.arch,
        epochs=cfg.finetune_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.finetune_lr,
        seed=cfg.seed * 1009 + 977,
        augment=cfg.augment,
    )
    stop = cfg.finetune_epochs if max_epochs is None else min(cfg.finetune_epochs, start + max_epochs)
    for epoch in range(start, stop):
        t0 = time.time()
        for group in opt.param_groups:
            group["lr"] = lr_at(tcfg, epoch)
        loss = train_epoch(pruned, opt, train_split, tcfg, epoch, torch.device("cpu"), loss_fn, desc="fine-tune")
        acc = accuracy(pruned, monitor)
        row = {
            "label": f"fine-tune {epoch + 1}/{cfg.finetune_epochs}",
            "accuracy": acc,
            "n": len(monitor),
            "loss": loss,
            "lr": lr_at(tcfg, epoch),
        }
        held = ""
        if holdout is not None:
            row["holdout_accuracy"] = accuracy(pruned, holdout)
            held = f", held-out({len(holdout)}) {row['holdout_accuracy']:.4f}"
            if best is None or row["holdout_accuracy"] > best["holdout_accuracy"]:
                best = {
                    "epoch": epoch + 1,
                    "holdout_accuracy": row["holdout_accuracy"],
                    "net": checkpoint.to_dict(pruned, {}),
                }
        wall += time.time() - t0
        rows.append({**row, "wall_time_s": round(wall, 1)})
        log(f"fine-tune {epoch + 1}/{cfg.finetune_epochs}: acc({len(monitor)}) {acc:.4f}{held} [{wall:.0f}s]")
        checkpoint.atomic_torch_save(
            {
                "format": FORMAT,
                "config": asdict(cfg),
                "epoch": epoch + 1,
                "rows": rows,
                "wall_time_s": wall,
                "optimizer": opt.state_dict(),
                "net": checkpoint.to_dict(pruned, {}),
                "best": best,
            },
            path,
        )
    complete = len(rows) == cfg.finetune_epochs
    if complete:
        kept = best["epoch"] if best is not None else len(rows)
        rows = [{**r, "chosen": k + 1 == kept} for k, r in enumerate(rows)]
        if best is not None:  # only with a held-out set
            pruned, _ = checkpoint.from_dict(best["net"], str(path))
            log(
                f"fine-tune: keeping epoch {kept}/{cfg.finetune_epochs}, the best on the "
                f"{cfg.holdout} held-out training images ({best['holdout_accuracy']:.4f})"
            )
    return pruned, rows, complete
