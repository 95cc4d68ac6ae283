#!/usr/bin/env python3
"""Prove that an installation of bnnflow (the Docker image) simulates a pruned network.

Runs what a user runs, through the ``bnnflow`` command line: the Vivado-free
``bnnflow build`` of a shipped checkpoint, ``bnnflow sim`` of that build on the
first ``--limit`` test images, and ``bnnflow eval`` of the Brevitas model on
the same images. It fails unless

- the simulator agrees with FINN's own execution and with PyTorch on every
  image it compared (``agree_with_finn`` and ``agree_with_torch`` are 1.0)
  and the generated weight/threshold files decode to the graph's values;
- the simulated accuracy equals the Brevitas model's accuracy on the same
  images (a subset's accuracy is only comparable with itself);
- that subset accuracy is not implausibly below the accuracy stored in the
  checkpoint (measured at training time on more test images): at most
  ``--sigmas`` binomial standard errors of the subset lower, which catches a
  broken data path that both models would share.

The Dockerfile's ``selftest`` stage runs this while the image builds, with
the data sets mounted at /data; it also runs in a finished image
(``docker run --entrypoint python IMAGE /opt/bnnflow/docker/selftest.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ZOO = Path(__file__).resolve().parent.parent / "models" / "zoo"
PREFERRED = "cnv_w1a1_fit.pt"


def pick_checkpoint(zoo: Path) -> Path:
    """The shipped pruned CNV; when absent, the best other shipped model.

    Order: the file named ``PREFERRED``, then pruned checkpoints, then CNV,
    then the highest stored accuracy.
    """
    from bnnflow import checkpoint

    def rank(path: Path) -> tuple[bool, bool, bool, float]:
        raw = checkpoint.read_raw(path)
        meta = raw.get("meta", {})
        return (path.name == PREFERRED, "pruning" in meta, raw.get("arch") == "cnv", float(meta.get("accuracy") or 0.0))

    found = sorted(zoo.glob("*.pt"))
    if not found:
        sys.exit(f"selftest: no checkpoint in {zoo}: the image must ship models/zoo/*.pt")
    return max(found, key=rank)


def bnnflow(*args: str, json_out: bool = False) -> tuple[Any, float]:
    """Run ``bnnflow ARGS`` (the image's entry point); its parsed JSON output and wall seconds."""
    cmd = [str(Path(sys.executable).parent / "bnnflow"), *args]
    print("selftest: $ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, stdout=subprocess.PIPE if json_out else None, text=True)
    wall = time.perf_counter() - t0
    # `bnnflow sim` exits 1 when generated files disagree with the graph; its JSON says which
    if res.returncode != 0 and not (json_out and res.returncode == 1 and res.stdout):
        sys.exit(f"selftest: `{' '.join(cmd)}` failed with exit status {res.returncode}")
    return (json.loads(res.stdout) if json_out else None), wall


def checks(sim: dict[str, Any], ev: dict[str, Any], limit: int, sigmas: float) -> list[tuple[str, bool]]:
    """Each verdict as (what was required, whether it held)."""
    n = sim["n"]
    stored = ev.get("stored_accuracy")
    out = [
        (f"simulated {n} images, {limit} asked (or the whole test set)", n == limit or n == ev["n"] < limit),
        (
            f"agree_with_finn == 1.0 on {sim.get('finn_n')} images (got {sim.get('agree_with_finn')})",
            sim.get("agree_with_finn") == 1.0,
        ),
        (
            f"agree_with_torch == 1.0 on {n} images (got {sim.get('agree_with_torch')})",
            sim.get("agree_with_torch") == 1.0,
        ),
        (
            f"generated files match the graph (artifacts_match {sim.get('artifacts_match')})",
            sim.get("artifacts_match") is not False and not sim.get("artifact_mismatches"),
        ),
        # compared as counts of correct images: eval's accuracy is a float32 mean, sim's a float64 one
        (
            f"simulated accuracy {sim['accuracy']:.4f} == Brevitas accuracy {ev['accuracy']:.4f} "
            f"on the same {ev['n']} images",
            ev["n"] == n and round(sim["accuracy"] * n) == round(ev["accuracy"] * n),
        ),
    ]
    if stored is not None:
        floor = stored - sigmas * math.sqrt(stored * (1.0 - stored) / n)
        out.append(
            (
                f"subset accuracy {ev['accuracy']:.4f} >= {floor:.4f} (stored {stored:.4f} "
                f"- {sigmas:g} standard errors for {n} images)",
                ev["accuracy"] >= floor,
            )
        )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help=f"checkpoint to build (default: {PREFERRED} in {ZOO}, else the best shipped one)",
    )
    p.add_argument("--limit", type=int, default=300, help="test images to simulate (default 300)")
    p.add_argument(
        "--finn-limit", type=int, default=10, help="of these, images also run through FINN's execute_onnx (default 10)"
    )
    p.add_argument("--board", default="Pynq-Z1")
    p.add_argument("--target-fps", type=int, default=1000)
    p.add_argument(
        "--sigmas",
        type=float,
        default=4.0,
        help="allowed shortfall of the subset accuracy below the stored one, in standard errors",
    )
    p.add_argument("--out", type=Path, default=None, help="keep the build folder here (default: a temp folder)")
    p.add_argument("--report", type=Path, default=None, help="write the verdict as JSON here")
    a = p.parse_args()

    ckpt = a.checkpoint or pick_checkpoint(ZOO)
    with tempfile.TemporaryDirectory(prefix="bnnflow-selftest-") as tmp:
        build = (a.out or Path(tmp)) / "build"
        _, build_s = bnnflow(
            "build", str(ckpt), "--board", a.board, "--target-fps", str(a.target_fps), "--out", str(build)
        )
        sim, sim_s = bnnflow(
            "sim", str(build), "--limit", str(a.limit), "--finn-limit", str(a.finn_limit), "--json", json_out=True
        )
    ev, eval_s = bnnflow("eval", str(ckpt), "--limit", str(a.limit), "--json", json_out=True)

    verdicts = checks(sim, ev, a.limit, a.sigmas)
    ok = all(held for _, held in verdicts)
    print(f"selftest: {ckpt.name} ({ev['model']} widths {ev['widths']}, {ev['dataset']})")
    for what, held in verdicts:
        print(f"  {'ok  ' if held else 'FAIL'} {what}")
    if sim.get("images_with_accumulator_overflow"):
        # FINN's Python execution does not wrap either, so this is no disagreement; shown, not judged
        print(
            f"  note: in {sim['images_with_accumulator_overflow']} images accumulators left FINN's accDataType "
            f"(the hardware would wrap): {sim['accumulator_overflows']}"
        )
    print(
        f"  simulator {sim['images_per_s']:.0f} images/s; estimated {sim['fps_estimate']:.0f} FPS on {a.board}; "
        f"wall: build {build_s:.0f} s, sim {sim_s:.0f} s, eval {eval_s:.0f} s"
    )
    if a.report:
        a.report.parent.mkdir(parents=True, exist_ok=True)
        a.report.write_text(
            json.dumps(
                {
                    "passed": ok,
                    "checkpoint": str(ckpt),
                    "limit": a.limit,
                    "checks": [{"check": w, "held": h} for w, h in verdicts],
                    "wall_s": {"build": build_s, "sim": sim_s, "eval": eval_s},
                    "sim": sim,
                    "eval": ev,
                },
                indent=2,
                sort_keys=True,
            )
        )
    print("selftest: " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
