"""What defines a pruning run: :class:`PruneConfig`, its methods and allocations.

Kept free of torch and of the training code, so that the command line reads
its defaults from here without importing them.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from bnnflow.errors import BnnflowError
from prune import pfr

METHODS = ("subsidiary", "msf-layerwise", "msf-cascade", "random")
ALLOCATIONS = ("uniform", "learned", "learned-mac", "fit")


@dataclass
class PruneConfig:
    """Everything that defines a pruning run; stored in the pruned checkpoint's metadata."""

    method: str
    target_pfr: float | dict[str, float] | None  # None with allocation "fit" (the budget decides)
    granularity: int = 1
    stage_samples: int | None = 10000  # training samples per stage (a fresh random subset each)
    sub_epochs: int = 1  # passes over the stage samples in a subsidiary step
    main_epochs: int = 1  # passes over the stage samples in a retraining step
    batch_size: int = 100
    lr_sub: float = 1e-4
    lr_main: float = 1e-3
    kd_weight: float = 1.0  # weight of T^2 * KL(teacher || student) on softened logits
    kd_temp: float = 4.0
    sparsity: float = 0.0  # lambda of the kept-filter penalty lambda * sum_k g_k
    gate_init: float = 1e-3  # m_k starts here: slightly positive, every filter kept
    gate_noise: float = 0.0  # ... plus seeded uniform noise in [-gate_noise, gate_noise] (the authors' code: 1e-4)
    allocation: str = "uniform"  # per-layer counts of a global target: one of ALLOCATIONS (prune.allocation)
    fit_board: str | None = None  # allocation "fit": the board whose budget the pruned design must meet
    fit_fps: float | None = None  # ... at this target FPS
    fit_budget: str | None = None  # ... within lut=X,bram=Y (None: FINN's utilisation limits of the board)
    clock_ns: float = 10.0  # ... at this clock period
    finetune_epochs: int = 0  # full passes of whole-network fine-tuning after removal (prune.finetune)
    finetune_lr: float = 1e-3  # its starting learning rate (cosine to 0)
    holdout: int = 0  # last N training images: never trained on; the fine-tune keeps its best epoch on them
    eval_limit: int | None = 2000  # test images for the per-stage accuracy (final: all)
    seed: int = 0
    augment: bool | None = None  # None: on for CIFAR-10
    data_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise BnnflowError(f"unknown pruning method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.allocation not in ALLOCATIONS:
            raise BnnflowError(f"unknown --allocation {self.allocation!r}: choose one of {', '.join(ALLOCATIONS)}")
        self._validate_fit()
        if self.target_pfr is not None:
            self.target_pfr = pfr.parse_target(self.target_pfr)
        if self.allocation != "uniform" and isinstance(self.target_pfr, dict):
            raise BnnflowError(
                f"--allocation {self.allocation} distributes one global --target-pfr over the "
                "layers; per-layer targets already fix the counts"
            )
        if self.granularity < 1:
            raise BnnflowError(f"--granularity {self.granularity}: must be a positive integer")
        if min(self.sub_epochs, self.main_epochs, self.batch_size) < 1 or (
            self.stage_samples is not None and self.stage_samples < 1
        ):
            raise BnnflowError("--stage-samples, --sub-epochs, --stage-epochs and --batch-size must be >= 1")
        if not 0 <= self.gate_noise < abs(self.gate_init) or self.gate_init == 0:
            raise BnnflowError(
                f"gate noise {self.gate_noise} with gate init {self.gate_init}: give a non-zero init and "
                "a noise of at least 0 below its size, so that every gate starts on the side of its init"
            )
        if self.finetune_epochs < 0 or self.finetune_lr <= 0:
            raise BnnflowError("--finetune-epochs must be >= 0 and --finetune-lr > 0")
        if self.holdout < 0 or (self.holdout and not self.finetune_epochs):
            raise BnnflowError(
                f"--holdout {self.holdout}: give a positive number of training images, "
                "together with --finetune-epochs (it picks the fine-tune's best epoch)"
            )

    def _validate_fit(self) -> None:
        """``--fit BOARD --target-fps F [--budget ...]`` replaces ``--target-pfr``; nothing else mixes."""
        from build_flows.boards import BOARDS

        if self.allocation != "fit":
            if self.fit_board is not None or self.fit_fps is not None or self.fit_budget is not None:
                raise BnnflowError("--target-fps and --budget go with --fit BOARD")
            if self.target_pfr is None:
                raise BnnflowError("give --target-pfr P (or --fit BOARD --target-fps F)")
            return
        if self.fit_board is None:
            raise BnnflowError("allocation 'fit' is set by --fit BOARD --target-fps F")
        if self.target_pfr is not None:
            raise BnnflowError("--fit chooses the kept counts from the budget; drop --target-pfr")
        if self.fit_board not in BOARDS:
            raise BnnflowError(f"--fit {self.fit_board!r}: choose one of {', '.join(BOARDS)}")
        if self.fit_fps is None or not self.fit_fps > 0:
            raise BnnflowError(f"--fit {self.fit_board} needs a positive --target-fps F, got {self.fit_fps}")
        if not self.clock_ns > 0:
            raise BnnflowError(f"--clock-ns must be positive, got {self.clock_ns}")
        from prune.allocation import parse_budget

        parse_budget(self.fit_budget)

    def fit_target(self) -> tuple[str, float]:
        """Board and target FPS of allocation "fit", which :meth:`validate` requires together."""
        if self.fit_board is None or self.fit_fps is None:
            raise BnnflowError("allocation 'fit' is set by --fit BOARD --target-fps F")
        return self.fit_board, self.fit_fps


def with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored config with the defaults of options added since it was written, so that the
    state of a run started by an older bnnflow still resumes when those options are left alone."""
    defaults = {f.name: f.default for f in fields(PruneConfig) if f.default is not MISSING}
    return {**{k: v for k, v in defaults.items() if k not in stored}, **stored}
