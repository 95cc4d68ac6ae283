"""Simulator vs FINN's execute_onnx vs PyTorch eval, same CNV build, same machine, one run.

The simulator and PyTorch classify the whole CIFAR-10 test set; FINN's Python
execution (one image at a time) runs on a sample. Each is timed with 1 thread
and with all threads (numba / torch), after a warm-up. Prints a markdown table
and the agreement of the three.

Usage: python benchmarks/sim_speed.py BUILD_DIR [--finn-n 10] [--limit N]
(BUILD_DIR: `bnnflow build models/zoo/cnv_w1a1.pt ...` output; its manifest
names the checkpoint).
"""

from __future__ import annotations

import argparse
import os
import time

import numba
import torch

from bnnflow import data
from hw import run, verify


def _time(fn, *args):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("build_dir")
    ap.add_argument("--finn-n", type=int, default=10)
    ap.add_argument("--limit", type=int, default=None, help="test images for simulator and PyTorch (default all)")
    a = ap.parse_args()
    ld = run.load(a.build_dir)
    ckpt = verify.checkpoint_of(ld.build)
    split = data.load(verify.dataset_of(ld.build), "test").subset(a.limit)
    x = verify.images_as_input(split.images, ld.graph.input_dtype)
    n = len(split)
    max_threads = numba.config.NUMBA_NUM_THREADS
    rows, preds = [], {}
    ld.sim.run(x[:4])  # compile / warm up
    for threads in sorted({1, max_threads}):
        numba.set_num_threads(threads)
        (out, _), dt = _time(ld.sim.predict, x)
        preds["sim"] = verify.top1(out)
        rows.append((f"bnnflow simulator ({threads} thread{'s' * (threads > 1)})", n, dt))
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        verify.torch_top1(ckpt, split.images[:500])  # warm up
        p, dt = _time(verify.torch_top1, ckpt, split.images)
        preds["torch"] = p
        rows.append((f"PyTorch eval, batch 500 ({threads} thread{'s' * (threads > 1)})", n, dt))
    torch.set_num_threads(1)
    verify.finn_execute(ld.build, x[:1])  # warm up
    (fout, _), dt = _time(verify.finn_execute, ld.build, x[: a.finn_n])
    rows.append(("FINN execute_onnx, HW graph before specialization (1 thread)", a.finn_n, dt))
    finn_ms = dt / a.finn_n * 1e3
    print(f"CNV build {a.build_dir}, checkpoint {ckpt}, {os.cpu_count()} CPUs\n")
    print("| engine | images | ms/image | images/s | vs FINN |")
    print("| --- | --- | --- | --- | --- |")
    for name, k, dt in rows:
        ms = dt / k * 1e3
        print(f"| {name} | {k} | {ms:.4f} | {k / dt:,.0f} | {finn_ms / ms:,.0f}x |")
    agree_torch = float((preds["sim"] == preds["torch"]).mean())
    agree_finn = float((verify.top1(fout) == preds["sim"][: a.finn_n]).mean())
    acc = float((preds["sim"] == split.labels).mean())
    print(f"\nagree_with_torch {agree_torch} (n={n}), agree_with_finn {agree_finn} (n={a.finn_n}), accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
