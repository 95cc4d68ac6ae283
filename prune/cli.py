"""``bnnflow prune`` (learned or baseline filter pruning of a checkpoint) and ``bnnflow frontier``
(the accuracy-vs-hardware front of pruning to fit a board)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from bnnflow import validate as v
from prune.config import PruneConfig

if TYPE_CHECKING:
    from prune.frontier import FrontConfig


def _opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="bnnflow checkpoint to prune")
    p.add_argument(
        "--method", default="subsidiary", help="subsidiary (learned, default) | msf-layerwise | msf-cascade | random"
    )
    p.add_argument(
        "--target-pfr",
        default=None,
        help="pruned-filter ratio in [0, 1): one number for every prunable layer, "
        "LAYER=RATIO pairs (fc1=0.6,fc2=0.4) or a .json file of them (not with --fit)",
    )
    p.add_argument(
        "--fit",
        default=None,
        metavar="BOARD",
        help="instead of a PFR: keep the per-layer counts of least probed loss whose FINN estimate "
        "fits BOARD's budget at --target-fps (Pynq-Z1, Pynq-Z2)",
    )
    p.add_argument(
        "--target-fps", type=v.arg_float(0, lo_open=True), default=None, metavar="F", help="with --fit: the frame rate"
    )
    p.add_argument(
        "--budget",
        default=None,
        metavar="lut=X,bram=Y",
        help="with --fit: X, Y fractions of the board (0.6) or multiples of the unpruned network's "
        "FINN estimate at F (0.5x); default FINN's utilisation limits (70%% of the LUTs, "
        "80%% of the BRAM18)",
    )
    p.add_argument(
        "--clock-ns",
        type=v.arg_float(0, lo_open=True),
        default=PruneConfig.clock_ns,
        help="with --fit: clock period of the design",
    )
    p.add_argument(
        "--cost-cache",
        type=Path,
        default=None,
        help="with --fit: folder of the FINN layer graphs the cost model probes, shareable between "
        "runs (default: WORK_DIR/finn_cost)",
    )
    p.add_argument(
        "--allocation",
        default="uniform",
        help="per-layer counts of a global target: uniform (same share everywhere), learned "
        "(probed by the subsidiary component, same PFR) or learned-mac (same PFR and at "
        "most the uniform split's MACs per frame)",
    )
    p.add_argument(
        "--granularity",
        type=v.arg_int(1),
        default=PruneConfig.granularity,
        help="every kept filter count is a multiple of this (FINN PE/SIMD)",
    )
    p.add_argument("--out", type=Path, required=True, help="pruned checkpoint (.pt)")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="stage checkpoints and report (default: OUT without .pt, plus .prune)",
    )
    p.add_argument("--resume", action="store_true", help="continue from WORK_DIR/state.pt")
    p.add_argument(
        "--stop-after",
        type=v.arg_int(1),
        default=None,
        metavar="N",
        help="run at most N stages now (continue later with --resume)",
    )
    p.add_argument(
        "--stage-samples",
        type=v.arg_int(0),
        default=PruneConfig.stage_samples,
        help="training images per stage, a fresh random subset each (0: all)",
    )
    p.add_argument(
        "--sub-epochs", type=v.arg_int(1), default=PruneConfig.sub_epochs, help="passes per subsidiary (gate) step"
    )
    p.add_argument(
        "--stage-epochs", type=v.arg_int(1), default=PruneConfig.main_epochs, help="passes per retraining step"
    )
    p.add_argument("--batch-size", type=v.arg_int(1), default=PruneConfig.batch_size)
    p.add_argument(
        "--lr-sub",
        type=v.arg_float(0, lo_open=True),
        default=PruneConfig.lr_sub,
        help="learning rate of the gate parameters",
    )
    p.add_argument(
        "--gate-noise",
        type=v.arg_float(0),
        default=PruneConfig.gate_noise,
        help="gate parameters start at gate init plus seeded uniform noise of this size (0: equal starts)",
    )
    p.add_argument(
        "--lr-main",
        type=v.arg_float(0, lo_open=True),
        default=PruneConfig.lr_main,
        help="learning rate of the retraining steps",
    )
    p.add_argument(
        "--finetune-epochs",
        type=v.arg_int(0),
        default=PruneConfig.finetune_epochs,
        help="after removal, fine-tune the whole pruned network for N full epochs (0: off)",
    )
    p.add_argument(
        "--finetune-lr",
        type=v.arg_float(0, lo_open=True),
        default=PruneConfig.finetune_lr,
        help="starting learning rate of the fine-tune",
    )
    p.add_argument(
        "--holdout",
        type=v.arg_int(0),
        default=PruneConfig.holdout,
        metavar="N",
        help="keep the last N training images out of every training step; the fine-tune then "
        "ends with its best epoch on them instead of its last (0: off)",
    )
    v.add_kd_options(p, PruneConfig.kd_weight, PruneConfig.kd_temp, "distillation weight (0: off)")
    p.add_argument(
        "--sparsity", type=v.arg_float(0), default=PruneConfig.sparsity, help="kept-filter penalty lambda (0: off)"
    )
    p.add_argument(
        "--eval-limit", type=v.arg_int(1), default=PruneConfig.eval_limit, help="test images for per-stage accuracy"
    )
    p.add_argument("--seed", type=v.arg_int(0, 2**40), default=PruneConfig.seed)
    v.add_data_dir_option(p)


def _prune(a: argparse.Namespace) -> int:
    """Prune filters of a checkpoint (learned main/subsidiary method or a baseline)."""
    from bnnflow.errors import BnnflowError
    from prune.config import PruneConfig
    from prune.pipeline import prune_checkpoint

    allocation = a.allocation
    if a.fit is not None:
        if a.allocation != "uniform":
            raise BnnflowError(f"--fit chooses the per-layer counts itself; drop --allocation {a.allocation}")
        allocation = "fit"

    cfg = PruneConfig(
        method=a.method,
        target_pfr=a.target_pfr,
        granularity=a.granularity,
        allocation=allocation,
        fit_board=a.fit,
        fit_fps=a.target_fps,
        fit_budget=a.budget,
        clock_ns=a.clock_ns,
        stage_samples=a.stage_samples or None,
        sub_epochs=a.sub_epochs,
        main_epochs=a.stage_epochs,
        batch_size=a.batch_size,
        lr_sub=a.lr_sub,
        gate_noise=a.gate_noise,
        lr_main=a.lr_main,
        kd_weight=a.kd_weight,
        kd_temp=a.kd_temp,
        sparsity=a.sparsity,
        finetune_epochs=a.finetune_epochs,
        finetune_lr=a.finetune_lr,
        holdout=a.holdout,
        eval_limit=a.eval_limit,
        seed=a.seed,
        data_dir=str(a.data_dir) if a.data_dir else None,
    )
    prune_checkpoint(
        a.checkpoint, cfg, a.out, a.work_dir, resume=a.resume, max_stages=a.stop_after, cost_cache=a.cost_cache
    )
    return 0


def _frontier_opts(p: argparse.ArgumentParser) -> None:
    from prune.frontier import FrontConfig as F  # the defaults live in the dataclass

    p.add_argument("checkpoint", type=Path, help="bnnflow checkpoint whose front to compute")
    p.add_argument("--board", required=True, help="Pynq-Z1 or Pynq-Z2")
    p.add_argument("--target-fps", type=v.arg_float(0, lo_open=True), required=True, metavar="F")
    p.add_argument(
        "--budgets",
        nargs="+",
        required=True,
        metavar="lut=X,bram=Y",
        help="one learned point per budget (as prune --budget: 0.6 of the board, 0.5x of the unpruned design)",
    )
    p.add_argument("--seeds", type=v.arg_list(v.arg_int(0, 2**40), "seeds"), default=list(F.seeds), help="e.g. 0,1")
    p.add_argument(
        "--methods",
        type=lambda s: [m.strip() for m in s.split(",") if m.strip()],
        default=None,
        help="comma-separated, among learned,uniform,msf-cascade,random (default: "
        "all); the unpruned control always runs",
    )
    p.add_argument("--out", type=Path, required=True, help="front folder (points/, frontier.md/html/png/json)")
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="Dask scheduler of an existing cluster, e.g. tcp://host:8786 (default: a local cluster)",
    )
    p.add_argument(
        "--workers", type=v.arg_int(1), default=None, help="local cluster: worker processes (default: cores)"
    )
    p.add_argument(
        "--threads",
        type=v.arg_int(1),
        default=None,
        help="torch/numba threads per point (default: cores / workers locally)",
    )
    p.add_argument("--clock-ns", type=v.arg_float(0, lo_open=True), default=F.clock_ns)
    p.add_argument("--granularity", type=v.arg_int(1), default=F.granularity, help="kept counts in multiples of this")
    p.add_argument(
        "--stage-samples", type=v.arg_int(0), default=F.stage_samples or 0, help="training images per stage (0: all)"
    )
    p.add_argument("--sub-epochs", type=v.arg_int(1), default=F.sub_epochs)
    p.add_argument("--stage-epochs", type=v.arg_int(1), default=F.stage_epochs)
    p.add_argument("--batch-size", type=v.arg_int(1), default=F.batch_size)
    p.add_argument(
        "--finetune-epochs", type=v.arg_int(0), default=F.finetune_epochs, help="fine-tune epochs of every point"
    )
    p.add_argument("--finetune-lr", type=v.arg_float(0, lo_open=True), default=F.finetune_lr)
    p.add_argument(
        "--holdout",
        type=v.arg_int(0),
        default=F.holdout,
        metavar="N",
        help="last N training images: never trained on; the fine-tune's epoch choice and the held-out column use them",
    )
    p.add_argument(
        "--train-limit",
        type=v.arg_int(1),
        default=F.train_limit,
        metavar="N",
        help="train every point on the first N training images only (quick fronts)",
    )
    p.add_argument("--eval-limit", type=v.arg_int(1), default=F.eval_limit, help="test images of the per-stage monitor")
    p.add_argument(
        "--sim-limit", type=v.arg_int(1), default=F.sim_limit, help="test images through the simulator (default: all)"
    )
    p.add_argument(
        "--finn-limit", type=v.arg_int(0), default=F.finn_limit, help="of those, also through FINN's execute_onnx"
    )
    p.add_argument(
        "--cost-cache",
        type=Path,
        default=None,
        help="folder of the FINN cost model's probed layer graphs, shareable with prune runs (default: OUT/finn_cost)",
    )
    v.add_data_dir_option(p)


def front_config(a: argparse.Namespace) -> FrontConfig:
    """The front ``bnnflow frontier``'s options describe."""
    from prune.frontier import METHODS, FrontConfig

    return FrontConfig(
        board=a.board,
        target_fps=a.target_fps,
        budgets=tuple(a.budgets),
        seeds=tuple(a.seeds),
        methods=tuple(a.methods or METHODS),
        clock_ns=a.clock_ns,
        granularity=a.granularity,
        stage_samples=a.stage_samples or None,
        sub_epochs=a.sub_epochs,
        stage_epochs=a.stage_epochs,
        batch_size=a.batch_size,
        finetune_epochs=a.finetune_epochs,
        finetune_lr=a.finetune_lr,
        holdout=a.holdout,
        train_limit=a.train_limit,
        eval_limit=a.eval_limit,
        sim_limit=a.sim_limit,
        finn_limit=a.finn_limit,
        data_dir=str(a.data_dir) if a.data_dir else None,
    )


def _frontier(a: argparse.Namespace) -> int:
    """Accuracy-vs-hardware front: prune to fit at several budgets (learned, baselines, control), build, simulate."""
    from prune.frontier import run_front

    run_front(a.checkpoint, front_config(a), a.out, a.scheduler, a.workers, a.threads, a.cost_cache)
    return 0


#: the subcommands of this stage, for ``bnnflow.cli``: (name, options, handler)
COMMANDS = [("prune", _opts, _prune), ("frontier", _frontier_opts, _frontier)]
