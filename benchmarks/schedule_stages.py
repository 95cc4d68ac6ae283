"""Held-out accuracy after every stage of one pruning schedule, to see where two selection rules part.

Runs ``prune.schedule.Pruner`` stage by stage at fixed per-layer kept counts
(default: the CNV front's 0.4x point) and measures the gated network on the
5,000 held-out training images after each select and retrain stage, without
the final fine-tune. ``--method`` is the pruner's (``subsidiary`` = learned,
``random``, ``msf-layerwise``); ``--gate-noise`` as in ``bnnflow prune``.

    .venv/bin/python benchmarks/schedule_stages.py models/zoo/cnv_w1a1.pt --method subsidiary --out learned.json
    .venv/bin/python benchmarks/schedule_stages.py models/zoo/cnv_w1a1.pt --method random --out random.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import models
from bnnflow import checkpoint
from bnnflow.evaluate import accuracy
from bnnflow.files import atomic_write
from prune.config import PruneConfig
from prune.schedule import Pruner

FRONT_04X = "conv1=32,conv2=16,conv3=80,conv4=96,conv5=256,conv6=128,fc1=272"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--kept", default=FRONT_04X, help="NAME=COUNT,... per prunable layer")
    ap.add_argument("--method", default="subsidiary")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gate-noise", type=float, default=0.0)
    ap.add_argument("--stage-samples", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    source = checkpoint.read_raw(a.checkpoint)  # the Pruner builds the network from it
    widths = dict(zip(models.ARCHS[source["arch"]].width_names(), source["widths"], strict=True))
    kept = {name: int(n) for name, n in (item.split("=") for item in a.kept.split(","))}
    cfg = PruneConfig(
        method=a.method,
        target_pfr={name: (widths[name] - n) / widths[name] for name, n in kept.items()},
        granularity=16,
        stage_samples=a.stage_samples,
        holdout=5000,
        finetune_epochs=1,  # only so that the held-out images are set aside; the fine-tune is not run
        eval_limit=100,
        seed=a.seed,
        gate_noise=a.gate_noise,
        data_dir=a.data_dir,
    )
    with tempfile.TemporaryDirectory(prefix="schedule-stages-") as work:
        pruner = Pruner(source, cfg, work, log=print)
        assert pruner.holdout is not None
        rows = [{"stage": "unpruned", "heldout": accuracy(pruner.net, pruner.holdout)}]
        t0 = time.time()
        for stage in pruner.stages:
            pruner.run_stage(stage)
            rows.append({"stage": stage.label(pruner.names), "heldout": accuracy(pruner.net, pruner.holdout)})
            print(json.dumps(rows[-1]), f"[{time.time() - t0:.0f}s]", flush=True)
    atomic_write(
        a.out,
        json.dumps({"config": vars(a) | {"checkpoint": str(a.checkpoint), "out": str(a.out)}, "rows": rows}, indent=1),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
