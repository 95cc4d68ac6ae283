"""``bnnflow prune`` as one function: checkpoint in, pruned checkpoint and report out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bnnflow import checkpoint, outdir
from bnnflow.errors import BnnflowError
from bnnflow.evaluate import accuracy
from bnnflow.files import atomic_write, check_output_file
from models.nets import BinaryNet
from prune import pfr, report
from prune.config import PruneConfig
from prune.finetune import finetune
from prune.losses import distillation_loss
from prune.removal import physically_prune
from prune.schedule import Pruner

FIT_REPORT = "fit.md"


def default_work_dir(out: Path) -> Path:
    """Where stage checkpoints and the report go unless told: ``OUT`` without suffix + ``.prune``."""
    return out.with_name(out.stem + ".prune")


@torch.no_grad()
def check_exact(gated: BinaryNet, pruned: BinaryNet, x: torch.Tensor) -> float:
    """Largest logit difference between the gated and the pruned network on ``x``; raises if
    any prediction differs (that would be a bug in the removal, not a user error)."""
    gated.eval()
    a, b = gated(x), pruned(x)
    if not torch.equal(a.argmax(1), b.argmax(1)):
        raise AssertionError("physically pruned network disagrees with the gated one")
    return float((a - b).abs().max())


def finish(
    pruner: Pruner,
    source_path: str,
    out: Path,
    log: Callable[[str], None],
    resume: bool = False,
    max_epochs: int | None = None,
) -> dict[str, Any] | None:
    """Remove the gated filters for real, fine-tune if asked, evaluate on the whole test set, write
    OUT and the report; None if the fine-tune stopped after ``max_epochs`` epochs."""
    net, gates = pruner.net, pruner.gates
    pruned = physically_prune(net, gates)
    x = torch.from_numpy(pruner.monitor.images[:500]).float() / 255.0
    diff = check_exact(net, pruned, x)
    kept = {layer.name: pruned.widths[layer.width_index] for layer, _ in gates}
    history, wall = list(pruner.history), pruner.wall
    if pruner.cfg.finetune_epochs:
        pruned, rows, complete = finetune(
            pruned,
            distillation_loss(pruner.teacher, pruner.cfg),
            pruner.cfg,
            pruner.train_split,
            pruner.monitor,
            pruner.work_dir,
            resume,
            max_epochs,
            log,
            pruner.holdout,
        )
        if not complete:
            log(f"stopped after fine-tune epoch {len(rows)}/{pruner.cfg.finetune_epochs}; continue with --resume")
            return None
        last = history[-1]
        history += [
            {
                **row,
                "stage": last["stage"] + k + 1,
                "pfr": last["pfr"],
                "kept": last["kept"],
                "wall_time_s": round(wall + row["wall_time_s"], 1),
            }
            for k, row in enumerate(rows)
        ]
        wall = history[-1]["wall_time_s"]
    acc = accuracy(pruned, pruner.test_split, show_progress=True)
    info: dict[str, Any] = {
        "pfr": pfr.pfr(pruner.original, kept),
        "method": pruner.cfg.method,
        "kept": kept,
        "original_widths": list(net.widths),
        "target_pfr": pruner.cfg.target_pfr,
        "granularity": pruner.cfg.granularity,
        "allocation": pruner.cfg.allocation,
        "holdout": pruner.cfg.holdout,
        "prunable_filters": sum(pruner.original.values()),
        "pruned_filters": sum(pruner.original.values()) - sum(kept.values()),
        "source": source_path,
        "source_accuracy": pruner.source_meta.get("accuracy"),
        "source_n": pruner.source_meta.get("n"),
        "removed_constants": {
            layer.name: {"+1": int((gate.const[~gate.keep] > 0).sum()), "-1": int((gate.const[~gate.keep] < 0).sum())}
            for layer, gate in gates
        },
        "max_logit_diff_gated_vs_pruned": diff,
        "config": asdict(pruner.cfg),
        "history": history,
        "wall_time_s": round(wall, 1),
    }
    if pruner.cfg.allocation == "fit":
        info["fit"] = check_fit(pruned, history, pruner.cfg, log)
    meta = {
        "accuracy": acc,
        "n": len(pruner.test_split),
        "pruning": info,
        "train": pruner.source_meta.get("train"),
        "wall_time_s": round(wall, 1),
    }
    checkpoint.save(pruned, meta, out)
    source_acc = accuracy(pruner.teacher, pruner.test_split)
    summary = {
        "arch": net.arch,
        "source": source_path,
        "source_accuracy": source_acc,
        "out": str(out),
        "accuracy": acc,
        "n": len(pruner.test_split),
        "widths": list(pruned.widths),
        "wall_time_s": wall,
        "pruning": info,
    }
    paths = report.write(summary, pruner.work_dir)
    if "fit" in info:
        atomic_write(pruner.work_dir / FIT_REPORT, fit_markdown(info["fit"]))
    log(
        f"{net.arch} {pruner.cfg.method}: PFR {info['pfr']:.4f}, accuracy {acc:.4f} "
        f"(unpruned {source_acc:.4f}) on {len(pruner.test_split)} images -> {out}; report {paths['md']}"
    )
    return summary


def check_fit(
    pruned: BinaryNet, history: list[dict[str, Any]], cfg: PruneConfig, log: Callable[[str], None]
) -> dict[str, Any]:
    """The allocate stage's prediction for ``--fit`` next to FINN's estimates of the pruned network
    itself (its real weights, ``bnnflow build``'s flow up to the estimate reports), and whether
    those honour the budget."""
    from build_flows.cost import finn_estimates

    board, target_fps = cfg.fit_target()
    fit = dict(next(row["fit"] for row in history if row["label"] == "allocate all"))
    reports = finn_estimates(pruned, board, target_fps, cfg.clock_ns)
    built = {k: float(v) for k, v in reports["estimate_layer_resources"]["total"].items()}
    fps = float(reports["estimate_network_performance"]["estimated_throughput_fps"])
    over = [r for r, limit in fit["limits"].items() if built[r] > limit]
    in_range = all(fit["predicted"][r] <= built[r] <= fit["predicted_upper"][r] for r in fit["limits"])
    fit.update(built=built, built_fps=fps, within_budget=not over, within_prediction=in_range)
    log(
        f"FINN on the pruned network: LUT {built['LUT']:,.0f}, BRAM18 {built['BRAM_18K']:,.0f}, {fps:,.0f} FPS "
        f"(predicted LUT {fit['predicted']['LUT']:,.0f}-{fit['predicted_upper']['LUT']:,.0f}, BRAM18 "
        f"{fit['predicted']['BRAM_18K']:,.0f}-{fit['predicted_upper']['BRAM_18K']:,.0f}); "
        + (f"over the budget in {', '.join(over)}" if over else "within the budget")
    )
    return fit


def fit_markdown(fit: dict[str, Any]) -> str:
    """``WORK_DIR/fit.md``: budget, prediction and FINN's estimate of the pruned network, side by side."""
    lines = [
        f"# Fit to {fit['board']} at {fit['target_fps']:g} FPS ({fit['clock_ns']:g} ns clock)",
        "",
        f"- budget `{fit['budget'] or 'FINN utilisation limits'}`; widths {fit['widths']}; predicted loss "
        f"increase {fit['predicted_loss']:.4f}; {fit['cost_probes']} FINN probe builds",
        f"- FINN's estimate of the pruned network (its own weights) is "
        f"{'within' if fit['within_budget'] else '**over**'} the budget and "
        f"{'within' if fit['within_prediction'] else '**outside**'} the predicted range (balanced weights "
        "to one-sided columns, see build_flows/cost.py)",
        "",
        "| | limit | predicted | FINN, pruned network | unpruned |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in fit["limits"]:
        lines.append(
            f"| {r} | {fit['limits'][r]:,.0f} | {fit['predicted'][r]:,.0f}-{fit['predicted_upper'][r]:,.0f} "
            f"| {fit['built'][r]:,.0f} | {fit['unpruned'][r]:,.0f} |"
        )
    lines.append(
        f"| FPS | {fit['target_fps']:,.0f} | {fit['predicted_fps']:,.0f} | {fit['built_fps']:,.0f} | "
        f"{fit['unpruned_fps']:,.0f} |"
    )
    return "\n".join(lines) + "\n"


TRAIN_LIMIT = "train_limit"  # PruneConfig.extra key: train on the first N training images only


def limit_training_set(pruner: Pruner) -> None:
    """``cfg.extra["train_limit"] = N``: every stage, probe and fine-tune epoch draws from the first N
    training images (after the held-out ones are set aside). Why: ``bnnflow frontier`` runs dozens
    of prunings, and a front of a small net on a small subset is how it is tested and tried; being
    part of the config, the limit is stored in the checkpoint and checked on resume."""
    limit = pruner.cfg.extra.get(TRAIN_LIMIT)
    if limit is not None:
        pruner.train_split = pruner.train_split.subset(int(limit))


def prune_checkpoint(
    ckpt: Path | str,
    cfg: PruneConfig,
    out: Path | str,
    work_dir: Path | str | None = None,
    resume: bool = False,
    max_stages: int | None = None,
    log: Callable[[str], None] = print,
    cost_cache: Path | str | None = None,
) -> dict[str, Any] | None:
    """Prune the checkpoint ``ckpt``; returns the run summary, or None if stopped after ``max_stages``
    stages (fine-tune epochs count as stages here). ``cost_cache``: the FINN cost model's folder of
    probed layer graphs for ``--fit`` (default ``WORK_DIR/finn_cost``; any run may share one)."""
    cfg.validate()
    out = Path(out)
    if out.suffix != ".pt":
        raise BnnflowError(f"--out {out}: give a .pt file name for the pruned checkpoint")
    # Before any work: a run of hours must not end in an unwritable --out or overwrite its source.
    check_output_file(out, "--out")
    if out.exists() and Path(ckpt).exists() and out.samefile(ckpt):
        raise BnnflowError(f"--out {out}: is the checkpoint being pruned; give another file name")
    source = checkpoint.read_raw(ckpt)
    # Locked: two runs into one --out share the work folder and would both write its state.pt.
    with outdir.writing(work_dir if work_dir is not None else default_work_dir(out), "--work-dir") as work:
        pruner = Pruner(source, cfg, work, log, cost_cache)
        limit_training_set(pruner)
        if resume:
            if not pruner.resume():
                log(f"no {pruner.state_path} yet: starting from the first stage")
        done_before = pruner.done
        if not pruner.run(max_stages):
            log(f"stopped after stage {pruner.done}/{len(pruner.stages)}; continue with --resume")
            return None
        left = None if max_stages is None else max_stages - (pruner.done - done_before)
        return finish(pruner, str(ckpt), out, log, resume, left)
