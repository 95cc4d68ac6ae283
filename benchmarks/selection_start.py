"""How well one layer's filter choice preserves the network right after it is made, by rule.

For each chosen prunable layer of a checkpoint, half its filters (or ``--keep``
of them, rounded to 16) are kept by each rule while every other layer stays
whole, with no retraining; the table is the distillation objective the pruner
minimises and the top-1 accuracy, both on 2,000 held-out training images
(never the test set). Rules: random (3 seeds), L1 norm of the latent
weights (MSF), the first K by index, and the subsidiary step (Adam on the
budgeted gates, as ``prune.schedule`` trains them) from equal starting values
(the default) or from ``--gate-noise``-style noisy ones (3 seeds), at other
learning rates and epoch counts, plus two gradient rules (accumulated
``dL/dg`` with all gates open; plain SGD on the gates). Each rule starts from
the same network and is independent of the others.

    .venv/bin/python benchmarks/selection_start.py models/zoo/cnv_w1a1.pt --layers conv2,conv4,conv6,fc1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bnnflow import checkpoint, data
from bnnflow.files import atomic_write
from prune import baselines
from prune.config import PruneConfig
from prune.gates import top_k_mask
from prune.losses import objective
from prune.schedule import Pruner, _random_subset
from prune.topology import unit_at

SAMPLES = 2000  # training images per subsidiary step, as in the front
NOISE = 1e-4  # the authors' spread


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--layers", required=True, help="comma-separated prunable layer names")
    ap.add_argument("--keep", type=float, default=0.5, help="share of each layer's filters kept")
    ap.add_argument("--rules", default=None, help="comma-separated subset of the rules (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, default=None, help="JSON of the table")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    cfg = PruneConfig(
        method="subsidiary",
        target_pfr=0.5,
        granularity=16,
        stage_samples=SAMPLES,
        holdout=5000,
        finetune_epochs=1,
        eval_limit=100,
        data_dir=a.data_dir,
    )
    work = tempfile.TemporaryDirectory(prefix="selection-start-")  # the Pruner's work folder, never written here
    pruner = Pruner(checkpoint.read_raw(a.checkpoint), cfg, work.name, log=lambda _s: None)
    net, teacher, gates = pruner.net, pruner.teacher, pruner.gates
    assert pruner.holdout is not None
    probe = _random_subset(pruner.holdout, SAMPLES, 5)
    with torch.no_grad():
        teacher.eval()
        teacher_logits = [teacher(x) for x, _ in data.batches(probe, 500, shuffle=False)]

    @torch.no_grad()
    def measure() -> tuple[float, float]:
        net.eval()
        loss, correct = 0.0, 0
        for (x, y), t in zip(data.batches(probe, 500, shuffle=False), teacher_logits, strict=True):
            out = net(x)
            loss += float(objective(out, y, t, cfg)) * len(y)
            correct += int((out.argmax(1) == y).sum())
        return round(loss / len(probe), 4), round(correct / len(probe), 4)

    def trained(i: int, k: int, opt: str, lr: float, epochs: int, noisy: bool, seed: int = 0) -> torch.Tensor:
        """The subsidiary step's ranking (``opt`` "grad": minus the accumulated dL/dg, all open)."""
        _, gate = gates.at(i)
        gen = torch.Generator().manual_seed(seed)
        gate.reset(cfg.gate_init, NOISE if noisy else 0.0, torch.Generator().manual_seed(seed))
        gate.learn(budget=None if opt == "grad" else k)
        for p in net.parameters():
            p.requires_grad_(False)
        optim = (torch.optim.Adam if opt == "adam" else torch.optim.SGD)([gate.m], lr=lr)
        split = _random_subset(pruner.train_split, SAMPLES, seed * 7919 + i)
        grad = torch.zeros_like(gate.m)
        for _ in range(epochs):
            for x, y in data.batches(split, 100, True, True, gen):
                net.eval()
                with torch.no_grad():
                    t = teacher(x)
                optim.zero_grad()
                objective(net(x), y, t, cfg).backward()
                assert gate.m.grad is not None
                if opt == "grad":
                    grad += gate.m.grad
                else:
                    optim.step()
        return -grad if opt == "grad" else gate.m.detach().clone()

    def rules(i: int, n: int, k: int) -> dict[str, Callable[[], torch.Tensor]]:
        unit = unit_at(net, gates.at(i)[0].unit)
        out: dict[str, Callable[[], torch.Tensor]] = {
            f"random{s}": (lambda s=s: torch.rand(n, generator=torch.Generator().manual_seed(100 + s)))
            for s in range(3)
        }
        out["l1"] = lambda: baselines.l1_scores(unit)
        out["first_k"] = lambda: torch.arange(n, 0, -1).float()
        out["adam1e-4x1"] = lambda: trained(i, k, "adam", 1e-4, 1, False)
        for s in range(3):
            out[f"adam1e-4x1_noise{s}"] = lambda s=s: trained(i, k, "adam", 1e-4, 1, True, s)
        out["adam1e-4x3_noise0"] = lambda: trained(i, k, "adam", 1e-4, 3, True)
        out["adam1e-3x1"] = lambda: trained(i, k, "adam", 1e-3, 1, False)
        out["adam1e-3x1_noise0"] = lambda: trained(i, k, "adam", 1e-3, 1, True)
        out["adam1e-4x5"] = lambda: trained(i, k, "adam", 1e-4, 5, False)
        out["grad"] = lambda: trained(i, k, "grad", 0.0, 1, False)
        out["sgd1e-1x1"] = lambda: trained(i, k, "sgd", 1e-1, 1, False)
        return out

    names = [layer.name for layer, _ in gates]
    table: dict[str, dict[str, object]] = {}
    for name in a.layers.split(","):
        if name not in names:
            sys.exit(f"--layers: {name!r} is not a prunable layer of {a.checkpoint} ({', '.join(names)})")
        i = names.index(name)
        _, gate = gates.at(i)
        n = gate.m.numel()
        k = max(16, int(round(n * a.keep / 16)) * 16)
        row: dict[str, object] = {"n": n, "k": k, "whole": measure()}
        t0 = time.time()
        for rule, scores in rules(i, n, k).items():
            if a.rules and rule not in a.rules.split(","):
                continue
            gate.fix(top_k_mask(scores(), k))
            row[rule] = measure()
            gate.reset(cfg.gate_init)
        row["seconds"] = round(time.time() - t0)
        table[name] = row
        print(name, json.dumps(row), flush=True)
    if a.out is not None:
        atomic_write(a.out, json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
