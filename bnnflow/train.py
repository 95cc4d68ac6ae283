"""Training of zoo networks, resumable epoch by epoch.

A run directory holds ``model.pt`` (a normal bnnflow checkpoint of the last
finished epoch) and ``state.pt`` (optimizer state and history, for
``--resume``). Both are rewritten atomically after every epoch. The random
streams (shuffling, augmentation, dropout) are re-seeded from ``seed`` and the
epoch number at the start of each epoch, so a resumed run continues exactly
as an uninterrupted one would.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

import models
from bnnflow import checkpoint, data
from bnnflow.errors import BnnflowError
from bnnflow.evaluate import accuracy
from bnnflow.progress import progress
from models.nets import BinaryNet

STATE_FORMAT = "bnnflow-train-state"


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in the checkpoint's metadata."""

    arch: str
    epochs: int = 20
    batch_size: int = 100
    lr: float = 5e-3
    lr_min: float = 0.0
    schedule: str = "cosine"  # cosine | constant
    weight_decay: float = 0.0
    seed: int = 0
    augment: bool | None = None  # None: on for CIFAR-10, off for MNIST
    widths: list[int] | None = None
    train_limit: int | None = None  # first N training samples (quick runs, tests)
    eval_limit: int | None = None  # first N test samples for the per-epoch figure
    data_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.arch not in models.ARCHS:
            raise BnnflowError(f"unknown model {self.arch!r}: choose one of {', '.join(models.ARCHS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise BnnflowError("--epochs and --batch-size must be >= 1 and --lr > 0")
        if self.schedule not in ("cosine", "constant"):
            raise BnnflowError(f"unknown schedule {self.schedule!r}: use cosine or constant")


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based): cosine from lr to lr_min over cfg.epochs."""
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * epoch / cfg.epochs))


def clip_latent_weights(model: BinaryNet) -> None:
    """Keep the real-valued latent weights of binary layers in [-1, 1]."""
    with torch.no_grad():
        for unit in model.binary_units():
            unit.weight_layer.weight.clamp_(-1.0, 1.0)
        model.classifier.weight_layer.weight.clamp_(-1.0, 1.0)


def train_epoch(
    model: BinaryNet,
    optimizer: torch.optim.Optimizer,
    split: data.Split,
    cfg: TrainConfig,
    epoch: int,
    device: torch.device,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    desc: str = "train",
) -> float:
    """One pass over ``split``; returns the mean loss.

    ``loss_fn(logits, labels, inputs)`` defaults to cross-entropy; the pruner
    passes its own (distillation, gate penalty).
    """
    augment = cfg.augment if cfg.augment is not None else model.dataset == "cifar10"
    gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
    torch.manual_seed(cfg.seed * 100003 + epoch)
    model.train()
    total, count = 0.0, 0
    steps = (len(split) + cfg.batch_size - 1) // cfg.batch_size
    bar = progress(data.batches(split, cfg.batch_size, True, augment, gen), total=steps,
                   desc=f"{desc} {epoch + 1}/{cfg.epochs}")
    for x, y in bar:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss = (loss_fn(logits, y, x) if loss_fn else torch.nn.functional.cross_entropy(logits, y))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clip_latent_weights(model)
        total += loss.item() * len(y)
        count += len(y)
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(
    cfg: TrainConfig,
    out_dir: Path | str,
    resume: bool = False,
    init_from: Path | str | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train ``cfg.arch``; returns the path of the final checkpoint ``out_dir/model.pt``."""
    cfg.validate()
    out_dir = Path(out_dir)
    state_path, model_path = out_dir / "state.pt", out_dir / "model.pt"
    device = pick_device()
    train_split = data.load(models.ARCHS[cfg.arch].dataset, "train", cfg.data_dir).subset(cfg.train_limit)
    test_split = data.load(models.ARCHS[cfg.arch].dataset, "test", cfg.data_dir)
    monitor_split = test_split.subset(cfg.eval_limit)

    if init_from is not None:
        model, _ = checkpoint.load(init_from)
        if model.arch != cfg.arch:
            raise BnnflowError(f"{init_from}: holds a {model.arch}, not a {cfg.arch}")
    else:
        torch.manual_seed(cfg.seed)
        model = models.build(cfg.arch, cfg.widths)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_epoch, history, wall = 0, [], 0.0

    if resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise BnnflowError(f"{state_path}: not a bnnflow training state; remove it or drop --resume")
        if state["config"]["arch"] != cfg.arch:
            raise BnnflowError(f"{state_path}: resumes a {state['config']['arch']} run, not {cfg.arch}")
        model, _ = checkpoint.from_dict(state["checkpoint"], str(state_path))
        model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history, wall = state["epoch"], list(state["history"]), float(state["wall_time_s"])
        log(f"resuming {cfg.arch} from epoch {start_epoch} ({state_path})")
    elif resume:
        log(f"no {state_path} yet: starting from scratch")

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, epoch)
        loss = train_epoch(model, optimizer, train_split, cfg, epoch, device)
        acc = accuracy(model.cpu(), monitor_split)
        model.to(device)
        wall += time.time() - t0
        history.append({"epoch": epoch + 1, "loss": loss, "test_acc": acc, "lr": lr_at(cfg, epoch),
                        "wall_time_s": round(wall, 1), "n_monitor": len(monitor_split)})
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.4f} test-acc({len(monitor_split)}) {acc:.4f} "
            f"[{wall:.0f}s]")
        meta = {"train": asdict(cfg), "epochs": epoch + 1, "wall_time_s": round(wall, 1),
                "device": str(device), "history": history, "accuracy": acc, "n": len(monitor_split)}
        ckpt = checkpoint.to_dict(model, meta)  # copies tensors to the CPU
        checkpoint.atomic_torch_save(ckpt, model_path)
        checkpoint.atomic_torch_save(
            {"format": STATE_FORMAT, "config": asdict(cfg), "epoch": epoch + 1, "history": history,
             "wall_time_s": wall, "optimizer": optimizer.state_dict(), "checkpoint": ckpt},
            state_path,
        )

    # Final figure: the whole test set, stored in the checkpoint's metadata.
    model, meta = checkpoint.load(model_path)
    if meta.get("n") != len(test_split):
        meta["accuracy"] = accuracy(model, test_split, show_progress=True)
        meta["n"] = len(test_split)
        checkpoint.save(model, meta, model_path)
    log(f"{cfg.arch}: test accuracy {meta['accuracy']:.4f} on {meta['n']} images -> {model_path}")
    return model_path
