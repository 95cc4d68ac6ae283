"""Build time and FINN's estimates for the shipped CNV, unpruned and pruned, at the same target FPS.

    python benchmarks/build_cnv.py [--target-fps 3000] [--board Pynq-Z1] [--out build/bench_cnv]

Builds each shipped checkpoint that exists (models/zoo/cnv_w1a1.pt,
models/zoo/cnv_w1a1_pruned.pt) with ``build_flows.build.build`` (no Vivado:
up to code generation) and prints one row per model: wall time of the whole
build (export + check + FINN), the time of FINN's steps, estimated FPS, LUT
and BRAM18 totals.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from build_flows.build import build
from models import ZOO_DIR


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target-fps", type=int, default=3000)
    p.add_argument("--board", default="Pynq-Z1")
    p.add_argument("--out", type=Path, default=Path("build/bench_cnv"))
    a = p.parse_args()
    rows = []
    for name in ("cnv_w1a1", "cnv_w1a1_pruned"):
        ckpt = ZOO_DIR / f"{name}.pt"
        if not ckpt.is_file():
            print(f"{ckpt}: not present, skipped")
            continue
        t0 = time.perf_counter()
        r = build(ckpt, a.board, a.out / name, target_fps=a.target_fps)
        wall = time.perf_counter() - t0
        finn_s = sum(s["seconds"] for s in r.manifest.steps)
        rows.append((name, wall, finn_s, r.estimated_fps, r.totals["LUT"], r.totals["BRAM_18K"], r.manifest.accuracy))
    print(f"\n{a.board}, target {a.target_fps} FPS, 100 MHz clock (FINN estimates, no Vivado)")
    print(f"{'model':18} {'build s':>8} {'FINN s':>7} {'est. FPS':>9} {'LUT':>7} {'BRAM18':>7} {'accuracy':>9}")
    for name, wall, finn_s, fps, lut, bram, acc in rows:
        acc_s = f"{acc:.4f}" if acc is not None else "-"
        print(f"{name:18} {wall:8.1f} {finn_s:7.1f} {fps:9,.0f} {lut:7,.0f} {bram:7,.0f} {acc_s:>9}")


if __name__ == "__main__":
    main()
