"""FINN builds of the padded conv nets (VGG-11, NIN, ResNet-18) at full and at pruned-like widths.

    python benchmarks/build_padded.py [--target-fps 1000] [--board Pynq-Z1] [--sim 1000] [--nets vgg11,nin]
                                      [--out build/bench_padded]

No trained VGG-11/NIN/ResNet-18 ships (CIFAR-10 training of these on a 2-core CPU is
out of reach), so the nets carry random binary weights with trained-like
BatchNorm statistics (tests/helpers.save_random_net, seed 2, 30% negative
scales). FINN's resource estimates and the build time depend on the widths
and the folding only, not on the weight values; the bit-exactness check
(simulator vs FINN's execution on a few images and vs Brevitas' top-1 on
``--sim`` test images) is meaningful for any weights. A net that does not fit
the board at the target is reported as such (bnnflow's budget check).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import models
from bnnflow.errors import BnnflowError
from build_flows.build import build
from hw import run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import save_random_net  # noqa: E402

NETS = {
    "vgg11": list(models.ARCHS["vgg11"].default_widths),
    "vgg11_pruned_widths": [40, 72, 152, 136, 304, 288, 312, 320],  # PFR 0.4 of the conv filters
    "nin": list(models.ARCHS["nin"].default_widths),
    "resnet18": list(models.ARCHS["resnet18"].default_widths),
    "resnet18_pruned_widths": [64, 128, 256, 512, 32, 32, 64, 64, 128, 128, 256, 256],  # inner widths halved
    "resnet18_half": [32, 64, 128, 256, 32, 32, 64, 64, 128, 128, 256, 256],  # every width halved
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target-fps", type=int, default=1000)
    p.add_argument("--board", default="Pynq-Z1")
    p.add_argument("--sim", type=int, default=1000, help="test images for the torch agreement")
    p.add_argument("--out", type=Path, default=Path("build/bench_padded"))
    p.add_argument("--nets", default=",".join(NETS), help=f"comma-separated subset of {', '.join(NETS)}")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in a.nets.split(","):
        widths = NETS[name]
        arch = name.split("_")[0]
        ckpt = save_random_net(arch, widths, a.out / f"{name}.pt", seed=2, negative_gamma=0.3)
        t0 = time.perf_counter()
        try:
            r = build(ckpt, a.board, a.out / name, target_fps=a.target_fps, n_check=100)
        except BnnflowError as exc:
            rows.append((name, widths, time.perf_counter() - t0, None, str(exc).split(": ", 1)[-1]))
            continue
        wall = time.perf_counter() - t0
        rep = run.sim_report(a.out / name, limit=a.sim, finn_limit=3)
        rows.append(
            (
                name,
                widths,
                wall,
                r,
                f"agree FINN {rep['agree_with_finn']:.3f} (on {rep['finn_n']}), "
                f"torch {rep['agree_with_torch']:.3f} (on {rep['n']})",
            )
        )
    print(f"\n{a.board}, target {a.target_fps} FPS, 100 MHz clock (FINN estimates, no Vivado)")
    for name, widths, wall, r, note in rows:
        if r is None:
            print(f"{name:20} {widths}  {wall:6.1f} s  DOES NOT BUILD: {note}")
        else:
            print(
                f"{name:20} {widths}  {wall:6.1f} s  {r.estimated_fps:7,.0f} FPS  LUT {r.totals['LUT']:8,.0f}  "
                f"BRAM18 {r.totals['BRAM_18K']:5,.0f}  {note}"
            )


if __name__ == "__main__":
    main()
