"""Conformance run: many seeded random W1A1 nets, each exported, built, simulated and compared.

Every case must end ``exact``, ``refused`` or ``too-large`` (see :mod:`conformance.run`).
Results are appended to ``OUT/results.jsonl`` as each case finishes, so an
interrupted run continues where it stopped; ``OUT/summary.json`` counts the
outcomes and names the refusals.

    .venv/bin/python benchmarks/conformance_suite.py --seeds 0-199 --out runs/conformance
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from bnnflow.files import atomic_write
from bnnflow.progress import progress
from conformance.run import CaseResult, run_case, summarize


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-199", help="e.g. 0-199 or 3,7,10-20")
    ap.add_argument("--out", type=Path, default=Path("runs/conformance"))
    ap.add_argument("--keep", action="store_true", help="keep each case's build folder")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    log = a.out / "results.jsonl"
    done: dict[int, CaseResult] = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            if line.strip():
                r = CaseResult(**json.loads(line))
                done[r.seed] = r
    todo = [s for s in _seeds(a.seeds) if s not in done]
    t0 = time.perf_counter()
    for seed in progress(todo, total=len(todo), desc="conformance"):
        work = a.out / "cases" / str(seed)
        shutil.rmtree(work, ignore_errors=True)
        r = run_case(seed, work)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        done[seed] = r
        with log.open("a") as f:
            f.write(json.dumps(asdict(r)) + "\n")
        print(r.line(), flush=True)
    results = [done[s] for s in _seeds(a.seeds) if s in done]
    summary = summarize(results)
    summary["wall_s_this_call"] = round(time.perf_counter() - t0, 1)
    summary["failures"] = [r.line() for r in results if r.outcome not in ("exact", "refused", "too-large")]
    atomic_write(a.out / "summary.json", json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=2))
    for line in summary["failures"]:
        print(line)
    return 0 if not summary["failures"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
