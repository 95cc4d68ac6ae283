"""``bnnflow sim``: run the bit-exact simulator on a build folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bnnflow import validate as v
from bnnflow.errors import BnnflowError
from bnnflow.files import atomic_path, check_output_file
from build_flows.build_dir import SIM_JSON

NPY_MAGIC = b"\x93NUMPY"
RTL_IMAGES = 3  # --rtl and --cppsim default: each image streams through every node's HDL or compiled C++


def _opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("build_dir", type=Path, metavar="DIR", help="build folder written by `bnnflow build`")
    v.add_data_dir_option(p)
    p.add_argument(
        "--limit",
        type=v.arg_int(1),
        default=None,
        help=f"first N test images (default: all; with --rtl or --cppsim {RTL_IMAGES})",
    )
    p.add_argument(
        "--from-artifacts",
        action="store_true",
        help="take weights and thresholds from the generated files instead of the graph",
    )
    p.add_argument(
        "--finn-limit",
        type=v.arg_int(0),
        default=10,
        help="images also run through FINN's execute_onnx for agree_with_finn (default 10; 0: skip)",
    )
    p.add_argument("--batch-size", type=v.arg_int(1), default=1000)
    p.add_argument("--threads", type=v.arg_int(1), default=None, help="simulator threads (default: all cores)")
    p.add_argument(
        "--input",
        type=Path,
        default=None,
        help=".npy inputs in the build's input layout (N, ...); simulate them instead of the test set",
    )
    p.add_argument("--output", type=Path, default=None, help="where --input's outputs are written (.npy)")
    p.add_argument(
        "--wrap-accumulators",
        action="store_true",
        help="model the hardware's fixed-width accumulators (wrap where the generated accumulator "
        "type overflows) instead of FINN's unbounded Python semantics",
    )
    p.add_argument(
        "--rtl",
        action="store_true",
        help="co-simulate every RTL node's generated HDL with Verilator (random back-pressure) "
        "against the simulator, bit for bit, instead of the accuracy run",
    )
    p.add_argument(
        "--cppsim",
        action="store_true",
        help="run every HLS node in FINN's own C++ simulation (needs Vitis HLS and finn-hlslib: see "
        "`bnnflow doctor`) against the simulator, instead of the accuracy run",
    )
    p.add_argument(
        "--seed",
        type=v.arg_int(0, 2**31 - 1),
        default=0,
        help="--rtl: seed of the input gaps and output back-pressure (default 0)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--no-save",
        action="store_true",
        help=f"do not write DIR/{SIM_JSON} (the accuracy `bnnflow report` shows), e.g. for a read-only build folder",
    )


def _save_npy(path: Path, arr: np.ndarray) -> None:
    """Write atomically (a file handle: ``np.save`` would append .npy to another suffix)."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.save(f, arr)


def _load_npy(path: Path) -> np.ndarray:
    hint = "save inputs with numpy.save, one array of shape (N, ...)"
    try:
        with path.open("rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError as exc:
        raise BnnflowError(f"--input {path}: cannot read it ({exc.strerror}); {hint}") from None
    if head != NPY_MAGIC:
        raise BnnflowError(f"--input {path}: not a .npy file (it does not start with NumPy's header); {hint}")
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise BnnflowError(f"--input {path}: cannot read as a .npy array ({exc}); {hint}") from None
    if x.ndim == 0:
        raise BnnflowError(f"--input {path}: holds a scalar, not a batch of inputs; {hint}")
    if x.dtype.hasobject or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise BnnflowError(f"--input {path}: holds {x.dtype} values, not numbers; {hint}")
    return x


def _sim(a: argparse.Namespace) -> int:
    """Simulate a build bit-exactly (test-set accuracy, agreement with FINN and PyTorch, cycles)."""
    from hw import run

    if a.threads is not None:
        import numba

        # numba.config sets its attributes at import: its stubs do not list them
        numba.set_num_threads(max(1, min(a.threads, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    if a.rtl and a.cppsim:
        raise BnnflowError("--rtl and --cppsim are two runs: give one of them")
    if a.rtl:
        if a.input is not None or a.output is not None:
            raise BnnflowError("--rtl drives the RTL nodes with test images; it takes no --input/--output")
        return _rtl(a)
    if a.cppsim:
        if a.input is not None or a.output is not None:
            raise BnnflowError("--cppsim runs the HLS nodes on test images; it takes no --input/--output")
        return _cppsim(a)
    if a.input is not None or a.output is not None:
        if a.input is None or a.output is None:
            raise BnnflowError("--input and --output go together: `bnnflow sim DIR --input X.npy --output Y.npy`")
        check_output_file(a.output, "--output")
        x = _load_npy(a.input)
        y = run.simulate_arrays(a.build_dir, x, a.from_artifacts, a.batch_size, a.wrap_accumulators)
        _save_npy(a.output, y)
        info = {"input": str(a.input), "output": str(a.output), "n": int(len(x)), "output_shape": list(y.shape)}
        print(json.dumps(info, indent=2) if a.json else f"wrote {a.output}: outputs {tuple(y.shape)}")
        return 0
    rep = run.sim_report(
        a.build_dir,
        a.data_dir,
        a.limit,
        a.from_artifacts,
        a.finn_limit,
        a.batch_size,
        a.wrap_accumulators,
        save=not a.no_save,
    )
    if a.json:
        print(json.dumps(rep, indent=2, sort_keys=True))
    else:

        def pct(v: float | None) -> str:
            return "-" if v is None else f"{v:.4f}"

        print(f"{rep['build']}: {rep['dataset']} test, {rep['n']} images, weights from {rep['weights_from']}")
        print(
            f"  accuracy {pct(rep['accuracy'])}   agree_with_finn {pct(rep['agree_with_finn'])} "
            f"(on {rep['finn_n']})   agree_with_torch {pct(rep['agree_with_torch'])}"
        )
        print(f"  simulator {rep['images_per_s']:.0f} images/s")
        c = rep["cycles"]
        print(
            f"  cycles: II {c['initiation_interval_cycles']} ({c['bottleneck']}), latency {c['latency_cycles']}, "
            f"{rep['fps_estimate']:.0f} FPS at {c['clock_ns']} ns"
        )
        if rep["accumulator_overflows"]:
            print(
                f"  WARNING accumulators outside their hardware type (the generated HLS would wrap) in "
                f"{rep['images_with_accumulator_overflow']} images: {rep['accumulator_overflows']}"
            )
        for m in rep["artifact_mismatches"]:
            print(f"  MISMATCH {m}")
        if rep["artifact_mismatches"]:
            print(f"  {SIM_JSON} not written: the generated files differ from the graph")
        elif not a.no_save:
            print(f"  wrote {a.build_dir / SIM_JSON} (the accuracy `bnnflow report` shows)")
    return 1 if rep["artifact_mismatches"] else 0


def _rtl(a: argparse.Namespace) -> int:
    """``sim --rtl``: one line per RTL node (or one JSON object per node); exit 1 on any mismatch."""
    from hw.rtl import cosim

    rep = cosim.cosim_build(a.build_dir, a.data_dir, a.limit or RTL_IMAGES, a.seed, a.from_artifacts)
    if a.json:
        print(json.dumps(rep, indent=2, sort_keys=True))
        return 0 if rep["ok"] else 1
    print(
        f"{rep['build']}: RTL co-simulation (Verilator) on {rep['images']} {rep['dataset']} test images, "
        f"{rep['gap_pct']}% input gaps, {rep['stall_pct']}% back-pressure, seed {rep['seed']}"
    )
    for r in rep["nodes"]:
        if not r["driven"]:
            print(f"  {r['node']:<36} {r['reason']}")
            continue
        verdict = "ok" if r["ok"] else "MISMATCH"
        extra = (" TIMED OUT" if r["timed_out"] else "") + (
            f" {r['protocol_violations']} protocol violations" if r["protocol_violations"] else ""
        )
        compiled = "cached" if r["cached"] else f"{r['compile_s']:.1f} s"
        print(
            f"  {r['node']:<36} {verdict:<8} {r['elements']} elements, {r['mismatches']} mismatches; "
            f"cycles {r['cycles']} (FINN estimate {r['finn_cycles']}); compile {compiled}, "
            f"run {r['run_s']:.2f} s{extra}"
        )
    if not rep["nodes"]:
        print("  no RTL nodes in this build")
    print(
        f"  {rep['hls_nodes_not_cosimulated']} HLS nodes: checked against FINN's Python execution only "
        "(no HLS simulator without Vitis)"
    )
    return 0 if rep["ok"] else 1


def _cppsim(a: argparse.Namespace) -> int:
    """``sim --cppsim``: one line per HLS node (or JSON); exit 1 on any mismatch."""
    from hw import cppsim

    rep = cppsim.cppsim_build(a.build_dir, a.data_dir, a.limit or RTL_IMAGES, a.from_artifacts)
    if a.json:
        print(json.dumps(rep, indent=2, sort_keys=True))
        return 0 if rep["ok"] else 1
    print(
        f"{rep['build']}: FINN's C++ simulation of the HLS nodes on {rep['images']} {rep['dataset']} test "
        f"images (compiled in {rep['compile_s']} s)"
    )
    for r in rep["nodes"]:
        print(
            f"  {r['node']:<36} {'ok' if r['ok'] else 'MISMATCH':<8} {r['elements']} elements, "
            f"{r['mismatches']} mismatches; run {r['run_s']:.2f} s"
        )
    return 0 if rep["ok"] else 1


#: the subcommands of this stage, for ``bnnflow.cli``: (name, options, handler)
COMMANDS = [("sim", _opts, _sim)]
