"""The ``sim`` stage: simulate a build on a test set or on given inputs.

Both functions are what ``bnnflow sim`` and the tests call.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow import validate
from bnnflow.errors import BnnflowError
from bnnflow.files import atomic_write, check_writable_dir
from build_flows.build_dir import BuildDir, open_build
from hw import verify
from hw.artifacts import DECODED_OPS, Mismatch, load_artifacts
from hw.cycles import cycle_report
from hw.graph import HWGraph, load_graph
from hw.simulate import Simulator


@dataclass
class Loaded:
    """A build opened for simulation: paths, graph, simulator and the artifact check."""

    build: BuildDir
    graph: HWGraph
    sim: Simulator
    source: str  # "initializers" or "generated files"
    mismatches: list[Mismatch] | None  # None when no generated code exists


def _has_codegen(graph: HWGraph) -> bool:
    return any(layer.code_dir for layer in graph.hw_layers() if layer.op in ("MVAU", "Thresholding"))


def load(build_dir: Path | str, from_artifacts: bool = False, wrap_accumulators: bool = False) -> Loaded:
    """Open ``build_dir``; with ``from_artifacts`` the constants come from the generated files.

    The generated files are always decoded and compared with the graph when
    they exist, so a corrupted weight file is reported either way.
    """
    build = open_build(build_dir)
    graph = load_graph(build.accel, build.parent)
    mismatches = None
    if _has_codegen(graph):
        art_graph, mismatches = load_artifacts(graph, build.root)
        if from_artifacts:
            graph = art_graph
    elif from_artifacts:
        raise BnnflowError(
            f"{build.root}: the build has no generated code ({build.accel_step} is its last step); "
            "run `bnnflow build` with code generation to simulate from the generated files"
        )
    return Loaded(
        build,
        graph,
        Simulator(graph, wrap_accumulators),
        "generated files" if from_artifacts else "initializers",
        mismatches,
    )


def simulate_arrays(
    build_dir: Path | str,
    x: np.ndarray,
    from_artifacts: bool = False,
    batch_size: int = 1000,
    wrap_accumulators: bool = False,
) -> np.ndarray:
    """Outputs of the accelerator for inputs ``x`` given in the build's input layout."""
    validate.count(batch_size, "--batch-size")
    if np.ndim(x) == 0 or len(x) == 0:
        raise BnnflowError(
            f"the inputs hold {'a scalar' if np.ndim(x) == 0 else 'no images'}; give an array "
            "of shape (N, ...) with N >= 1"
        )
    return load(build_dir, from_artifacts, wrap_accumulators).sim.predict(x, batch_size)[0]


def sim_report(
    build_dir: Path | str,
    data_dir: Path | str | None = None,
    limit: int | None = None,
    from_artifacts: bool = False,
    finn_limit: int = 10,
    batch_size: int = 1000,
    wrap_accumulators: bool = False,
    save: bool = False,
) -> dict[str, Any]:
    """Simulate the build on its data set's test images and compare with FINN and PyTorch.

    ``agree_with_finn`` is measured on the first ``finn_limit`` images (FINN's
    Python execution takes a fraction of a second per image),
    ``agree_with_torch`` on all of them when the build names its checkpoint.
    With ``save`` the report is also written to ``DIR/sim.json`` (atomically), the hand-off to
    ``bnnflow report``, unless the generated files differ from the graph (then the accuracy is
    not the accelerator's).
    """
    from bnnflow import data

    validate.optional_count(limit, "--limit")
    validate.count(finn_limit, "--finn-limit", 0)
    validate.count(batch_size, "--batch-size")
    ld = load(build_dir, from_artifacts, wrap_accumulators)
    if save:
        _check_saveable(ld.build)
    dataset = verify.dataset_of(ld.build)
    if dataset is None:
        raise BnnflowError(
            f"{ld.build.root}: manifest.json names no data set or checkpoint; for a build of your own "
            "model use `bnnflow sim DIR --input X.npy --output Y.npy`"
        )
    split = data.load(dataset, "test", data_dir).subset(limit)
    x = verify.images_as_input(split.images, ld.graph.input_dtype)
    ld.sim.run(x[:2])  # compile the kernels before timing
    t0 = time.perf_counter()
    out, overflows = ld.sim.predict(x, batch_size)
    wall = time.perf_counter() - t0
    pred = verify.top1(out)
    report: dict[str, Any] = {
        "build": str(ld.build.root),
        "dataset": dataset,
        "n": len(split),
        "accuracy": float((pred == split.labels).mean()) if len(split) else None,
        "images_per_s": len(split) / wall if wall > 0 else None,
        "sim_seconds": wall,
        "weights_from": ld.source,
        "artifacts_match": None if ld.mismatches is None else not ld.mismatches,
        "artifact_mismatches": [str(m) for m in ld.mismatches or []],
        # layers whose constants are not decoded from generated files: they come from the graph
        "artifacts_not_decoded": [
            layer.name for layer in ld.graph.hw_layers() if layer.params and layer.op not in DECODED_OPS
        ],
        "wrap_accumulators": wrap_accumulators,
        # accumulator values outside the generated accumulator type: the hardware's ap_int would wrap there
        "accumulator_overflows": {k: int(v.sum()) for k, v in overflows.items() if v.sum()},
        "images_with_accumulator_overflow": int(np.logical_or.reduce([v > 0 for v in overflows.values()]).sum())
        if overflows
        else 0,
    }
    n_finn = min(finn_limit, len(split))
    if n_finn > 0 and ld.build.golden is not None:
        t0 = time.perf_counter()
        ref, _ = verify.finn_execute(ld.build, x[:n_finn])
        finn_wall = time.perf_counter() - t0
        same = np.all(ref.reshape(n_finn, -1) == out[:n_finn].reshape(n_finn, -1), axis=1)
        report.update(agree_with_finn=float(same.mean()), finn_n=n_finn, finn_images_per_s=n_finn / finn_wall)
    else:
        report.update(agree_with_finn=None, finn_n=0, finn_images_per_s=None)
    ckpt = verify.checkpoint_of(ld.build)
    if ckpt is not None:
        report["agree_with_torch"] = float((verify.torch_top1(ckpt, split.images) == pred).mean())
        report["checkpoint"] = str(ckpt)
    else:
        report["agree_with_torch"] = None
    cyc = cycle_report(ld.graph, ld.build.clock_ns)
    finn_cycles = ld.build.report("estimate_layer_cycles.json")
    report.update(
        fps_estimate=cyc["fps_estimate"],
        cycles=cyc,
        cycles_match_finn=None
        if finn_cycles is None
        else all(int(finn_cycles.get(k, -1)) == v for k, v in cyc["layers"].items()),
    )
    if save and not report["artifact_mismatches"]:
        atomic_write(ld.build.sim_json, json.dumps(report, indent=2, sort_keys=True))
    return report


def _check_saveable(build: BuildDir) -> None:
    """Before simulating: ``sim.json`` can be written (not a minutes-long run that fails at the end)."""
    try:
        check_writable_dir(build.root, str(build.sim_json))
    except BnnflowError:
        raise BnnflowError(
            f"{build.sim_json}: cannot be written ({build.root} is not writable); make it "
            "writable, or simulate without saving the report: --no-save"
        ) from None
