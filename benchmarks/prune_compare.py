"""Accuracy versus PFR: the learned method against the reconstructed baselines.

Runs ``bnnflow prune`` (the same stage function) for every method at every
PFR on one checkpoint, with the same stage budget, and prints a Markdown
table of the full-test-set accuracy of each pruned network (mean over
``--seeds``, with min-max when more than one).

    OMP_NUM_THREADS=1 python benchmarks/prune_compare.py models/zoo/sfc_w1a1.pt \\
        --pfrs 0.3,0.5,0.7 --seeds 0,1,2 --out runs/prune_compare/sfc
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bnnflow import checkpoint
from bnnflow.files import atomic_write
from prune.config import METHODS, PruneConfig
from prune.pipeline import prune_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--pfrs", default="0.3,0.5,0.7")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--granularity", type=int, default=1)
    ap.add_argument("--stage-samples", type=int, default=10000)
    ap.add_argument("--stage-epochs", type=int, default=1)
    ap.add_argument(
        "--finetune-epochs",
        type=int,
        default=0,
        help="whole-network fine-tune of each pruned net (prune.finetune), full epochs",
    )
    ap.add_argument("--allocation", default="uniform", help="uniform | learned (see prune/allocation.py)")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds; the table shows the mean")
    ap.add_argument("--out", type=Path, required=True, help="folder for the pruned checkpoints and reports")
    a = ap.parse_args()

    pfrs = [float(p) for p in a.pfrs.split(",")]
    methods = a.methods.split(",")
    seeds = [int(v) for v in a.seeds.split(",")]
    model, _ = checkpoint.load(a.checkpoint)
    rows = []
    for p in pfrs:
        for m in methods:
            for seed in seeds:
                cfg = PruneConfig(
                    method=m,
                    target_pfr=p,
                    granularity=a.granularity,
                    stage_samples=a.stage_samples or None,
                    main_epochs=a.stage_epochs,
                    seed=seed,
                    finetune_epochs=a.finetune_epochs,
                    allocation=a.allocation,
                )
                t0 = time.time()
                s = prune_checkpoint(a.checkpoint, cfg, a.out / f"{m}_{p:.2f}_s{seed}.pt", log=lambda _: None)
                rows.append(
                    {
                        "method": m,
                        "target_pfr": p,
                        "seed": seed,
                        "accuracy": s["accuracy"],
                        "pfr": s["pruning"]["pfr"],
                        "wall_s": round(time.time() - t0, 1),
                    }
                )
                print(
                    f"{m} target {p} seed {seed}: PFR {s['pruning']['pfr']:.4f} accuracy {s['accuracy']:.4f} "
                    f"[{time.time() - t0:.0f}s]",
                    flush=True,
                )
                atomic_write(a.out / "compare.json", json.dumps(rows, indent=2))  # after every run

    def cell(m: str, p: float) -> str:
        accs = [r["accuracy"] for r in rows if r["method"] == m and r["target_pfr"] == p]
        mean = statistics.mean(accs)
        return f"{mean:.4f}" + (f" ({min(accs):.4f}-{max(accs):.4f})" if len(accs) > 1 else "")

    achieved = {p: next(r["pfr"] for r in rows if r["target_pfr"] == p) for p in pfrs}
    print(
        f"\n{model.arch} {a.checkpoint}: unpruned accuracy {s['source_accuracy']:.4f} on {s['n']} test "
        f"images; stage samples {a.stage_samples}, stage epochs {a.stage_epochs}, seeds {a.seeds}\n"
    )
    print("| method | " + " | ".join(f"PFR {achieved[p]:.3f}" for p in pfrs) + " |")
    print("|---|" + "---:|" * len(pfrs))
    for m in methods:
        label = f"{m} (reconstructed)" if m.startswith("msf") else m
        print(f"| {label} | " + " | ".join(cell(m, p) for p in pfrs) + " |")


if __name__ == "__main__":
    main()
