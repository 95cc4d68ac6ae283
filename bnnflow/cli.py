"""The ``bnnflow`` command line.

Each subcommand parses its options and calls one stage function; the same
functions are what the tests call. A :class:`BnnflowError` is printed as one
line ``bnnflow: error: ...`` with exit status 2.

The CLI is the top of the import graph: it imports every stage's ``cli``
module (each lists its subcommands in ``COMMANDS``) and no stage imports it
(``tests/test_contracts.py`` checks the layering).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import build_flows.cli
import hw.cli
import prune.cli
import reports.cli
from bnnflow import validate as v
from bnnflow.errors import BnnflowError
from bnnflow.train_config import TrainConfig

Handler = Callable[[argparse.Namespace], int]
#: a subcommand: its name, the function adding its options, the function running it
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Handler]


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


# ---------------------------------------------------------------- train
def _train_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="architecture: tfc sfc lfc cnv nin vgg11 resnet18")
    p.add_argument("--out", type=Path, required=True, help="run folder (model.pt, state.pt)")
    p.add_argument("--epochs", type=v.arg_int(1), default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=v.arg_int(1), default=TrainConfig.batch_size)
    p.add_argument("--lr", type=v.arg_float(0.0, lo_open=True), default=TrainConfig.lr)
    p.add_argument("--lr-min", type=v.arg_float(0.0), default=TrainConfig.lr_min)
    p.add_argument("--schedule", choices=["cosine", "constant"], default=TrainConfig.schedule)
    p.add_argument("--weight-decay", type=v.arg_float(0.0), default=TrainConfig.weight_decay)
    p.add_argument("--seed", type=v.arg_int(0, 2**40), default=TrainConfig.seed)
    p.add_argument(
        "--widths",
        type=v.arg_list(v.arg_int(1, v.MAX_WIDTH), "widths"),
        default=None,
        help="comma-separated per-layer widths (default: the architecture's)",
    )
    p.add_argument("--no-augment", action="store_true", help="no CIFAR-10 crop/flip augmentation")
    p.add_argument("--train-limit", type=v.arg_int(1), default=None, help="use the first N training images")
    p.add_argument(
        "--eval-limit",
        type=v.arg_int(1),
        default=None,
        help="per-epoch test curve on the first N test images (the final figure uses all)",
    )
    p.add_argument(
        "--holdout",
        type=v.arg_int(0),
        default=TrainConfig.holdout,
        metavar="N",
        help="keep the last N training images out of training; the epoch best on them is "
        f"the one kept (0: keep the last epoch; default {TrainConfig.holdout})",
    )
    p.add_argument(
        "--no-fast", action="store_true", help="train through the Brevitas modules instead of their plain-torch twin"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the training steps (C++ compiler)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    p.add_argument(
        "--stop-after",
        type=v.arg_int(1),
        default=None,
        metavar="N",
        help="stop after N epochs of this call (continue later with --resume)",
    )
    p.add_argument("--init-from", type=Path, default=None, help="start from this checkpoint's weights")
    p.add_argument(
        "--float",
        action="store_true",
        help="train the network's full-precision counterpart (a --teacher; not a W1A1 network to build)",
    )
    p.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="distil this checkpoint's logits (e.g. a --float run's model.pt on the same data set)",
    )
    v.add_kd_options(p, TrainConfig.kd_weight, TrainConfig.kd_temp, "with --teacher: weight of the distillation term")
    v.add_data_dir_option(p)


def _train(a: argparse.Namespace) -> int:
    """Train a zoo network (checkpoint every epoch, --resume)."""
    from bnnflow import outdir
    from bnnflow.train import train

    cfg = TrainConfig(
        arch=a.model,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        lr_min=a.lr_min,
        schedule=a.schedule,
        weight_decay=a.weight_decay,
        seed=a.seed,
        augment=False if a.no_augment else None,
        widths=a.widths,
        train_limit=a.train_limit,
        eval_limit=a.eval_limit,
        data_dir=str(a.data_dir) if a.data_dir else None,
        fast=not a.no_fast,
        compile=a.compile,
        holdout=a.holdout,
        precision="float" if a.float else "binary",
        teacher=str(a.teacher) if a.teacher else None,
        kd_weight=a.kd_weight,
        kd_temp=a.kd_temp,
    )
    if a.stop_after is not None and a.stop_after < 1:
        raise BnnflowError(f"--stop-after {a.stop_after}: give a number of epochs >= 1")
    cfg.validate()
    outdir.check_output_dir(a.out, "--out")
    train(
        cfg,
        a.out,
        resume=a.resume,
        init_from=a.init_from,
        stop_after=a.stop_after,
        log=lambda line: print(line, flush=True),
    )
    return 0


# ---------------------------------------------------------------- info / eval
def _info_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def checkpoint_info(path: Path) -> dict[str, Any]:
    """What ``bnnflow info`` reports: architecture, widths, data set, stored accuracy, pruning."""
    from bnnflow import checkpoint

    raw = checkpoint.read_raw(path)
    model, meta = checkpoint.from_dict(raw, str(path), allow_float=True)
    info: dict[str, Any] = {
        "model": raw["arch"],
        "dataset": raw["dataset"],
        "precision": checkpoint.precision(raw),
        "widths": list(raw["widths"]),
        "width_names": model.width_names(),
        "default_widths": list(model.default_widths),
        "parameters": sum(p.numel() for p in model.parameters()),
        "accuracy": meta.get("accuracy"),
        "n": meta.get("n"),
        "epochs": meta.get("epochs"),
        "wall_time_s": meta.get("wall_time_s"),
        "train": meta.get("train"),
    }
    init = meta.get("init_from")
    if isinstance(init, dict):
        info["init_from"] = init
    pruning = checkpoint.pruning_record(meta)
    if pruning is not None:
        info.update(pruning)
    return info


def _info(a: argparse.Namespace) -> int:
    """Show what a checkpoint holds: model, widths, accuracy, pruning."""
    info = checkpoint_info(a.checkpoint)
    if a.json:
        _print_json(info)
    else:
        acc = info["accuracy"]
        kind = " (full precision: a teacher, not a W1A1 network)" if info["precision"] == "float" else ""
        print(f"{a.checkpoint}: {info['model']} on {info['dataset']}{kind}")
        print("  widths: " + ", ".join(f"{n}={w}" for n, w in zip(info["width_names"], info["widths"], strict=True)))
        print(f"  parameters: {info['parameters']:,}")
        print(f"  accuracy: {acc:.4f} on {info['n']} test images" if acc is not None else "  accuracy: -")
        if info.get("pfr") is not None:
            print(f"  pruned: {info['method']} PFR {info['pfr']:.4f}")
        if "init_from" in info:
            print(f"  trained from: {info['init_from']['file']} (SHA-256 {info['init_from']['sha256'][:12]})")
    return 0


def _eval_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--limit", type=v.arg_int(1), default=None, help="first N test images (default: all)")
    p.add_argument("--json", action="store_true")
    v.add_data_dir_option(p)


def _eval(a: argparse.Namespace) -> int:
    """Measure a checkpoint's test-set accuracy."""
    from bnnflow import checkpoint, data
    from bnnflow.evaluate import accuracy

    model, meta = checkpoint.load_for_inference(a.checkpoint)
    split = data.load(model.dataset, "test", a.data_dir).subset(a.limit)
    acc = accuracy(model, split, show_progress=not a.json)
    out = {
        "model": model.arch,
        "dataset": model.dataset,
        "widths": list(model.widths),
        "accuracy": acc,
        "n": len(split),
        "stored_accuracy": meta.get("accuracy"),
    }
    if a.json:
        _print_json(out)
    else:
        print(f"{a.checkpoint}: {model.arch} accuracy {acc:.4f} on {len(split)} {model.dataset} test images")
    return 0


# ---------------------------------------------------------------- entry point
#: every subcommand, in the pipeline's order
COMMANDS: list[Command] = [
    ("train", _train_opts, _train),
    ("info", _info_opts, _info),
    ("eval", _eval_opts, _eval),
    *prune.cli.COMMANDS,
    *build_flows.cli.COMMANDS,
    *hw.cli.COMMANDS,
    *reports.cli.COMMANDS,
]


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the usage is one ``--help`` away), exit status 2 as before."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bnnflow", description="Train, prune, compile (FINN) and simulate binary neural networks.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, setup, fn in COMMANDS:
        sp = sub.add_parser(name, help=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else None)
        setup(sp)
        sp.set_defaults(handler=fn)
    return p


#: what the line printed on Ctrl-C / SIGTERM adds, per command
AFTER_INTERRUPT = {
    "train": "; continue the run with the same command and --resume",
    "prune": "; continue the run with the same command and --resume",
    "build": "; --out is as it was before this run (the previous build, if any, is kept)",
    "sweep": "; the builds finished so far are kept: rerun the same command to go on",
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except BnnflowError as exc:
        print(f"bnnflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        import signal

        signum = getattr(exc, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        then = AFTER_INTERRUPT.get(args.command, "; no output file was left half-written")
        print(f"bnnflow: interrupted by {name}{then}", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
