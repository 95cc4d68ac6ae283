"""Training of zoo networks, resumable epoch by epoch.

A run directory holds ``model.pt`` (a normal bnnflow checkpoint: the epoch
with the best accuracy on the held-out training images so far, the last
epoch when nothing is held out) and ``state.pt`` (the last epoch's weights,
optimizer state and history, for ``--resume``). Both are rewritten atomically
after every epoch. The random streams (shuffling, augmentation, dropout) are
re-seeded from ``seed`` and the epoch number at the start of each epoch, so a
resumed run continues exactly as an uninterrupted one would.

Model selection never looks at the test set: the last ``holdout`` training
images are kept out of every step and rank the epochs (the same images
``bnnflow prune --holdout`` keeps out). The test set gives the per-epoch
curve (``eval_limit`` images) and the final figure, nothing else.

The steps run through :func:`models.fastpath.twin` (plain torch, the same
values and gradients as the Brevitas modules, channels_last for conv nets)
unless ``fast`` is off; ``compile`` adds ``torch.compile`` on top.

``precision="float"`` trains the full-precision counterpart of the network
(the twin's float variant), a teacher; ``teacher`` adds distillation from a
checkpoint's logits to the cross-entropy (:func:`bnnflow.losses.distillation`),
computed by the teacher's own twin in eval mode on the same augmented batch.
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

import models
from bnnflow import checkpoint, data, outdir
from bnnflow.errors import BnnflowError
from bnnflow.evaluate import accuracy
from bnnflow.losses import distillation
from bnnflow.progress import progress
from bnnflow.train_config import TrainConfig
from models import fastpath
from models.nets import BinaryNet

STATE_FORMAT = "bnnflow-train-state"


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
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    channels_last: bool = False,
) -> float:
    """One pass over ``split``; returns the mean loss.

    ``loss_fn(logits, labels, inputs)`` defaults to cross-entropy; the pruner
    passes its own (distillation, gate penalty). ``forward`` computes the
    logits (default: ``model`` itself; :func:`train` passes the fast twin).
    """
    augment = cfg.augment if cfg.augment is not None else model.dataset == "cifar10"
    gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
    torch.manual_seed(cfg.seed * 100003 + epoch)
    model.train()
    if forward is None:
        forward = model
    elif isinstance(forward, torch.nn.Module):
        forward.train()
    total, count = 0.0, 0
    steps = (len(split) + cfg.batch_size - 1) // cfg.batch_size
    bar = progress(
        data.batches(split, cfg.batch_size, True, augment, gen), total=steps, desc=f"{desc} {epoch + 1}/{cfg.epochs}"
    )
    for x, y in bar:
        x, y = x.to(device), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = forward(x)
        loss = loss_fn(logits, y, x) if loss_fn else torch.nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clip_latent_weights(model)
        total += loss.item() * len(y)
        count += len(y)
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


def machine(device: torch.device) -> str:
    """What ran an epoch, for the checkpoint's record: the GPU's name, or the CPU's model and threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():  # the first processor's block is enough
                break
    cpu = fields.get("model name", cpu)
    # "AMD EPYC" names CPUs whose float kernels differ (AVX-512 or not): a run's numbers can only be
    # compared bit for bit with another run's on the same family and vector width
    flags = set(fields.get("flags", "").split())
    detail: list[str] = []
    if "cpu family" in fields and "model" in fields:
        detail.append(f"family {fields['cpu family']} model {fields['model']}")
    detail += [name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags][:1]
    about = f" ({', '.join(detail)})" if detail else ""
    return f"{cpu}{about}, {torch.get_num_threads()} threads"


def pick_device() -> torch.device:
    """CUDA when a GPU is there, else the CPU: checkpoints are the same either way (CPU tensors)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _step_forward(
    model: BinaryNet, cfg: TrainConfig
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor], bool]:
    """What the training steps and the per-epoch evaluation call for the logits, and whether
    inputs go channels_last."""
    if not cfg.fast:
        return model, model, False
    channels_last = model.dataset == "cifar10"
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format
    plain = fastpath.twin(model, cfg.precision)
    step: Callable[[torch.Tensor], torch.Tensor] = torch.compile(plain) if cfg.compile else plain
    return step, plain, channels_last


def _accuracy(
    model: BinaryNet,
    split: data.Split,
    forward: Callable[[torch.Tensor], torch.Tensor],
    channels_last: bool,
    device: torch.device,
    cfg: TrainConfig,
    show_progress: bool = False,
) -> float:
    """Accuracy through the training twin (the same values as the Brevitas network; a float run's
    only forward)."""
    if device.type == "cpu":
        return accuracy(model, split, show_progress=show_progress, forward=forward, channels_last=channels_last)
    model.cpu()  # evaluation batches are built on the CPU; the twin shares (and moves with) the parameters
    try:
        return accuracy(
            model, split, show_progress=show_progress, forward=forward if cfg.precision == "float" else None
        )
    finally:
        model.to(device)


def _teacher_loss(
    cfg: TrainConfig, dataset: str, device: torch.device, channels_last: bool
) -> tuple[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], str]:
    """The distillation loss against ``cfg.teacher`` and the teacher file's SHA-256."""
    assert cfg.teacher is not None
    raw, sha = checkpoint.read_raw_hashed(cfg.teacher)
    teacher, _ = checkpoint.from_dict(raw, cfg.teacher, allow_float=True)
    if teacher.dataset != dataset:
        raise BnnflowError(
            f"--teacher {cfg.teacher}: a {teacher.arch} on {teacher.dataset}, this run trains on {dataset}"
        )
    teacher.to(device)
    if channels_last:
        teacher.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format
    forward = fastpath.twin(teacher, checkpoint.precision(raw)).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = forward(inputs)
        return distillation(logits, labels, t, cfg.kd_weight, cfg.kd_temp)

    return loss_fn, sha


def _load_state(state_path: Path, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """The resume state of ``state_path``, checked to be one and to belong to a run of ``cfg``."""
    state = checkpoint.read_train_state(state_path, STATE_FORMAT, device)
    stored = state["config"]
    if stored["arch"] != cfg.arch:
        raise BnnflowError(f"{state_path}: resumes a {stored['arch']} run, not {cfg.arch}")
    # A state written before an option existed resumes while that option keeps its
    # default; one that differs (seed, schedule, holdout, ...) would not continue the run.
    defaults = asdict(TrainConfig(arch=cfg.arch))
    mine = asdict(cfg)
    ignore = {"epochs", "data_dir", "compile", "teacher"}  # a longer schedule is refused below; paths move
    differ = [k for k in mine if k not in ignore and stored.get(k, defaults[k]) != mine[k]]
    if differ:
        k = differ[0]
        raise BnnflowError(
            f"{state_path}: the run was started with {k}={stored.get(k, defaults[k])!r}, "
            f"this command gives {mine[k]!r}; use the run's options or a new --out"
        )
    if stored["epochs"] != cfg.epochs:
        raise BnnflowError(
            f"{state_path}: the run's schedule has {stored['epochs']} epochs, this command "
            f"gives --epochs {cfg.epochs}; the cosine schedule depends on it, so keep it "
            "(or start a new run with --init-from)"
        )
    return state


def train(
    cfg: TrainConfig,
    out_dir: Path | str,
    resume: bool = False,
    init_from: Path | str | None = None,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
) -> Path:
    """Train ``cfg.arch``; returns the path of the final checkpoint ``out_dir/model.pt``.

    ``stop_after`` ends this call after that many epochs (a run longer than
    a session: continue it with ``resume``); the test figure is then left
    for the call that finishes the schedule. The final checkpoint is the epoch with the best held-out accuracy (the
    first of equals), or the last epoch with ``holdout`` 0; its test accuracy
    on the full test set is measured once, at the end, and stored in it.
    """
    cfg.validate()
    # One run at a time in a run folder: a second one stops at once instead of both writing model.pt
    # and state.pt; what killed runs left (temporary files) is cleaned up first.
    with outdir.writing(out_dir, "--out"):
        return _train(cfg, Path(out_dir), resume, init_from, log, stop_after)


def _train(
    cfg: TrainConfig,
    out_dir: Path,
    resume: bool,
    init_from: Path | str | None,
    log: Callable[[str], None],
    stop_after: int | None,
) -> Path:
    """:func:`train` in its locked run folder."""
    state_path, model_path = out_dir / "state.pt", out_dir / "model.pt"
    device = pick_device()
    # a damaged or foreign state.pt is refused before anything else is read
    state = _load_state(state_path, cfg, device) if resume and state_path.is_file() else None
    dataset = models.ARCHS[cfg.arch].dataset
    fit_split, holdout = data.split_holdout(data.load(dataset, "train", cfg.data_dir), cfg.holdout)
    train_split = fit_split.subset(cfg.train_limit)
    test_split = data.load(dataset, "test", cfg.data_dir)
    monitor_split = test_split.subset(cfg.eval_limit)

    init_info: dict[str, Any] | None = None  # where the weights came from, kept in every checkpoint
    if init_from is not None:
        raw, init_sha = checkpoint.read_raw_hashed(init_from)
        model, init_meta = checkpoint.from_dict(raw, str(init_from), allow_float=True)  # float: two-step training
        if model.arch != cfg.arch:
            raise BnnflowError(f"{init_from}: holds a {model.arch}, not a {cfg.arch}")
        # a pruned network keeps its pruning record: fine-tuning it longer does not make it unpruned
        init_info = {"file": Path(init_from).name, "sha256": init_sha, "widths": list(model.widths)}
        pruning = checkpoint.pruning_record(init_meta)
        if pruning is not None:
            init_info["pruning"] = pruning
    else:
        torch.manual_seed(cfg.seed)
        model = models.build(cfg.arch, cfg.widths)
    start_epoch, history, wall, best = 0, [], 0.0, None
    if state is not None:
        model, _ = checkpoint.from_dict(state["checkpoint"], str(state_path), allow_float=True)
        start_epoch, history, wall = state["epoch"], list(state["history"]), float(state["wall_time_s"])
        best = state.get("best")
        init_info = state.get("init_from")
        log(f"resuming {cfg.arch} from epoch {start_epoch} ({state_path})")
    elif resume:
        log(f"no {state_path} yet: starting at epoch 1" + (f" from {init_from}" if init_from is not None else ""))
    model.to(device)
    forward, evaluate, channels_last = _step_forward(model, cfg)
    loss_fn, teacher_sha = _teacher_loss(cfg, dataset, device, channels_last) if cfg.teacher else (None, None)
    if state is not None and state.get("teacher_sha256") != teacher_sha:
        raise BnnflowError(
            f"{state_path}: the run was started with another --teacher (or none); give the run's teacher or a new --out"
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])

    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        t0 = time.time()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, epoch)
        loss = train_epoch(
            model, optimizer, train_split, cfg, epoch, device, loss_fn, forward=forward, channels_last=channels_last
        )
        row = {
            "epoch": epoch + 1,
            "loss": loss,
            "lr": lr_at(cfg, epoch),
            "n_monitor": len(monitor_split),
            "machine": machine(device),
        }
        row["test_acc"] = _accuracy(model, monitor_split, evaluate, channels_last, device, cfg)
        if holdout is not None:
            row["holdout_acc"] = _accuracy(model, holdout, evaluate, channels_last, device, cfg)
        wall += time.time() - t0
        row["wall_time_s"] = round(wall, 1)
        history.append(row)
        meta: dict[str, Any] = {
            "train": asdict(cfg),
            "epochs": epoch + 1,
            "wall_time_s": round(wall, 1),
            "device": str(device),
            "threads": torch.get_num_threads(),
            # every machine the run's epochs ran on (a run continued across sessions, or on a lent GPU)
            "hardware": sorted({h["machine"] for h in history if "machine" in h}),
            "history": history,
            "accuracy": row["test_acc"],
            "n": len(monitor_split),
        }
        if teacher_sha is not None:
            meta["teacher_sha256"] = teacher_sha
        if init_info is not None:
            meta["init_from"] = init_info
        improved = holdout is None or best is None or row["holdout_acc"] > best["holdout_acc"]
        if improved:
            best = {"epoch": epoch + 1, "holdout_acc": row.get("holdout_acc")}
        meta["selected_epoch"] = best
        ckpt = checkpoint.to_dict(model, meta, cfg.precision)  # copies tensors to the CPU
        if improved:
            checkpoint.atomic_torch_save(ckpt, model_path)
        checkpoint.atomic_torch_save(
            {
                "format": STATE_FORMAT,
                "config": asdict(cfg),
                "epoch": epoch + 1,
                "history": history,
                "wall_time_s": wall,
                "optimizer": optimizer.state_dict(),
                "checkpoint": ckpt,
                "best": best,
                "teacher_sha256": teacher_sha,
                "init_from": init_info,
            },
            state_path,
        )
        # printed once the epoch is saved: a run stopped after this line resumes after this epoch
        held = f" held-out({len(holdout)}) {row['holdout_acc']:.4f}" if holdout is not None else ""
        log(
            f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.4f}{held} test-acc({len(monitor_split)}) "
            f"{row['test_acc']:.4f} [{wall:.0f}s]"
        )

    if end_epoch < cfg.epochs:
        log(f"{cfg.arch}: stopped after epoch {end_epoch} of {cfg.epochs}; continue with --resume ({state_path})")
        return model_path
    # Final figure: the whole test set, measured once on the selected epoch and stored in it.
    # A binary network is measured through Brevitas (what is exported); a float one has only its twin.
    model, meta = checkpoint.load(model_path, allow_float=True)
    meta.update(epochs=len(history), wall_time_s=round(wall, 1), history=history)
    if meta.get("n") != len(test_split) or meta.get("final") is not True:
        if cfg.precision == "float":
            model.to(device)
            forward, evaluate, channels_last = _step_forward(model, cfg)
            meta["accuracy"] = _accuracy(model, test_split, evaluate, channels_last, device, cfg, show_progress=True)
            model.cpu()
        else:
            meta["accuracy"] = accuracy(model, test_split, show_progress=True)
        meta["n"] = len(test_split)
        meta["final"] = True
        checkpoint.save(model, meta, model_path, cfg.precision)
    chosen = meta.get("selected_epoch", {}).get("epoch", len(history))
    log(
        f"{cfg.arch}: epoch {chosen} of {len(history)} kept"
        + (f" (best of {len(holdout)} held-out training images)" if holdout is not None else "")
        + f"; test accuracy {meta['accuracy']:.4f} on {meta['n']} images -> {model_path}"
    )
    return model_path
