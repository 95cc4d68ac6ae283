"""Time one CNV training step (forward + backward + Adam, batch 100) several ways, side by side.

Variants, each on 1 and on 2 threads, interleaved in one run so that a busy
machine slows them alike:

- ``brevitas``: today's path, the Brevitas modules, NCHW;
- ``brevitas+cl``: the same in channels_last memory format;
- ``fast``: the same parameters run by the plain-torch twin of the binary
  quantizers (:mod:`models.fastpath`), NCHW;
- ``fast+cl``: the twin in channels_last;
- ``fast+compile``, ``fast+cl+compile``: the twin under ``torch.compile``
  (skipped with a line when compilation fails here).

Also times the data pipeline (a batch of crop+flip augmentation from the
uint8 array) and prints a profile of the fastest variant's step.

    .venv/bin/python benchmarks/train_speed.py [--steps 20] [--arch cnv] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import models
from bnnflow import data
from bnnflow.train import clip_latent_weights
from models import fastpath


def make_step(variant: str, arch: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
    torch.manual_seed(0)
    model = models.build(arch)
    model.train()
    cl = "+cl" in variant
    if cl:
        model = model.to(memory_format=torch.channels_last)
    fwd: Callable[[torch.Tensor], torch.Tensor]
    if variant.startswith("fast"):
        fwd = fastpath.forward_fn(model)
        if variant.endswith("+compile"):
            fwd = torch.compile(fwd)
    else:
        fwd = model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.cross_entropy(fwd(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        clip_latent_weights(model)

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--arch", default="cnv")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--variants", default="brevitas,brevitas+cl,fast,fast+cl,fast+compile,fast+cl+compile")
    a = ap.parse_args()
    split = data.load(models.ARCHS[a.arch].dataset, "train").subset(100 * (a.steps + 2))
    gen = torch.Generator().manual_seed(0)
    batches = list(data.batches(split, 100, True, models.ARCHS[a.arch].dataset == "cifar10", gen))

    # Data pipeline alone.
    t0 = time.perf_counter()
    for _ in data.batches(split, 100, True, True, torch.Generator().manual_seed(1)):
        pass
    per_batch = (time.perf_counter() - t0) / len(batches)
    print(f"data pipeline (crop+flip, uint8->float): {per_batch * 1e3:.1f} ms per batch of 100")

    steps: dict[str, Callable] = {}
    for v in a.variants.split(","):
        try:
            s = make_step(v, a.arch)
            t0 = time.perf_counter()
            s(*batches[0])  # warm-up (and compilation)
            s(*batches[0])
            print(f"{v}: first two steps {time.perf_counter() - t0:.1f} s")
            steps[v] = s
        except Exception as exc:  # a variant that does not run here is reported, not fatal
            print(f"{v}: does not run here ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(a.rounds):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for v, s in steps.items():
                t0 = time.perf_counter()
                for x, y in batches[1 : a.steps + 1]:
                    s(x, y)
                times.setdefault((v, threads), []).append((time.perf_counter() - t0) / a.steps)
    n_train = 50000 if models.ARCHS[a.arch].dataset == "cifar10" else 60000
    base = statistics.median(times[("brevitas", 2)]) if ("brevitas", 2) in times else None
    print(f"{'variant':<14} {'threads':>7} {'ms/step':>8} {'min/epoch':>9} {'speed-up':>8}")
    for (v, threads), ts in sorted(times.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        m = statistics.median(ts)
        up = f"{base / m:.2f}x" if base else "-"
        print(f"{v:<14} {threads:>7} {m * 1e3:>8.1f} {m * n_train / 100 / 60:>9.2f} {up:>8}")
    if a.profile and steps:
        best = min(((k, statistics.median(t)) for k, t in times.items() if k[1] == 2), key=lambda kv: kv[1])[0][0]
        torch.set_num_threads(2)
        with torch.profiler.profile() as prof:
            for x, y in batches[1:6]:
                steps[best](x, y)
        print(f"profile of {best}, 2 threads, 5 steps:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
