"""What defines a training run: :class:`TrainConfig`.

Kept free of torch and the model zoo (imported only to validate), so that the
command line reads its defaults from here without importing them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bnnflow.errors import BnnflowError

#: what a run trains: the W1A1 network, or its full-precision counterpart (models.fastpath)
PRECISIONS = ("binary", "float")


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
    eval_limit: int | None = None  # first N test samples for the per-epoch curve (not for selection)
    holdout: int = 5000  # last N training images: never trained on; they choose the epoch kept
    fast: bool = True  # steps through the plain-torch twin (channels_last for conv nets)
    compile: bool = False  # torch.compile the twin (needs a C++ compiler)
    precision: str = "binary"  # "float": the full-precision counterpart, a teacher (never built)
    teacher: str | None = None  # checkpoint whose logits the run distils (any net on the same data set)
    kd_weight: float = 1.0  # weight of T^2 * KL(teacher || student) on softened logits, with a teacher
    kd_temp: float = 4.0
    data_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        import models
        from bnnflow import checkpoint, validate

        if self.arch not in models.ARCHS:
            raise BnnflowError(f"unknown model {self.arch!r}: choose one of {', '.join(models.ARCHS)}")
        validate.count(self.epochs, "--epochs")
        validate.count(self.batch_size, "--batch-size")
        validate.number(self.lr, "--lr", 0.0, lo_open=True)
        validate.number(self.lr_min, "--lr-min", 0.0)
        validate.number(self.weight_decay, "--weight-decay", 0.0)
        validate.count(self.seed, "--seed", 0, 2**40)
        validate.optional_count(self.train_limit, "--train-limit")
        validate.optional_count(self.eval_limit, "--eval-limit")
        if self.widths is not None:
            checkpoint.check_architecture(self.arch, list(self.widths), "--widths")
        if self.schedule not in ("cosine", "constant"):
            raise BnnflowError(f"unknown schedule {self.schedule!r}: use cosine or constant")
        if self.holdout < 0:
            raise BnnflowError(
                f"--holdout {self.holdout}: give 0 (select the last epoch) or a positive number of training images"
            )
        if self.compile and not self.fast:
            raise BnnflowError("--compile compiles the fast path; drop --no-fast or --compile")
        if self.precision not in PRECISIONS:
            raise BnnflowError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.precision == "float" and not self.fast:
            raise BnnflowError("--float trains through the fast path's full-precision twin; drop --no-fast")
        validate.number(self.kd_weight, "--kd-weight", 0.0)
        validate.number(self.kd_temp, "--kd-temp", 0.0, lo_open=True)
