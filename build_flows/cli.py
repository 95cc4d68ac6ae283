"""``bnnflow export`` and ``bnnflow build``."""

from __future__ import annotations

import argparse
from pathlib import Path

from bnnflow import validate as v
from build_flows.boards import BOARDS
from build_flows.build_dir import Manifest
from build_flows.fifo import DEFAULT_STRATEGY, DEFAULT_TIMEOUT_MIN, STRATEGIES


def _export_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, required=True, help="QONNX file to write")
    p.add_argument(
        "--check",
        type=v.arg_int(0),
        default=200,
        metavar="N",
        help="compare with Brevitas on the first N test images (default 200; 0: no check)",
    )
    v.add_data_dir_option(p)


def _export(a: argparse.Namespace) -> int:
    """Export a checkpoint to QONNX (UINT8 input, TopK) and check it against Brevitas."""
    from bnnflow.files import check_output_file
    from build_flows.export import export

    check_output_file(a.out, "--out")
    r = export(a.checkpoint, a.out, n_check=a.check, data_dir=a.data_dir)
    print(f"{r.path}: QONNX written")
    if r.n:
        print(
            f"  QONNX vs Brevitas on {r.n} {r.images} images: top-1 identical on "
            f"{r.top1_agreement:.1%}, max logit difference {r.max_logit_diff:.3g}"
        )
    return 0


def _build_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="bnnflow checkpoint (.pt) or QONNX file (.onnx) of a W1A1 net")
    p.add_argument("--board", required=True, choices=BOARDS)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--target-fps", type=v.arg_float(1.0), help="fold automatically for this throughput (FINN's SetFolding)"
    )
    g.add_argument("--folding", type=Path, help="FINN folding JSON keyed by finn-plus node names")
    p.add_argument(
        "--clock-ns", type=v.arg_float(0.0, lo_open=True), default=10.0, help="target clock period (default 10 ns)"
    )
    p.add_argument(
        "--lower-to-fit",
        action="store_true",
        help="lower the target FPS until FINN's estimates fit the board (default: refuse)",
    )
    p.add_argument(
        "--check",
        type=v.arg_int(0),
        default=100,
        metavar="N",
        help="for a checkpoint: compare its QONNX export with Brevitas on N test images",
    )
    p.add_argument("--out", type=Path, required=True, help="build folder (FINN's layout + manifest.json)")
    f = p.add_mutually_exclusive_group()
    f.add_argument(
        "--fifo-strategy",
        choices=STRATEGIES,
        default=None,
        help=f"FINN's FIFO sizing (a Vivado step; default {DEFAULT_STRATEGY}; force_minimal_fifos: "
        "no sizing, minimal depths)",
    )
    f.add_argument(
        "--fifo-depths",
        type=Path,
        default=None,
        metavar="FILE.json",
        help="FIFO depths instead of sizing (FINN's report/fifo_sizing.json format)",
    )
    p.add_argument(
        "--fifo-timeout",
        type=v.arg_float(0.0),
        default=DEFAULT_TIMEOUT_MIN,
        metavar="MIN",
        help=f"stop FINN's FIFO sizing after MIN minutes (default {DEFAULT_TIMEOUT_MIN:g}; 0: no limit)",
    )
    v.add_data_dir_option(p)


def _build(a: argparse.Namespace) -> int:
    """Compile a W1A1 network into a FINN dataflow accelerator for a PYNQ board."""
    from bnnflow.outdir import check_output_dir
    from build_flows.build import build

    check_output_dir(a.out, "--out", beside=True)
    tfps = None if a.target_fps is None else (int(a.target_fps) if a.target_fps.is_integer() else a.target_fps)
    r = build(
        a.input,
        a.board,
        a.out,
        target_fps=tfps,
        folding=a.folding,
        clock_ns=a.clock_ns,
        lower_to_fit=a.lower_to_fit,
        n_check=a.check,
        data_dir=a.data_dir,
        fifo_strategy=a.fifo_strategy,
        fifo_depths=a.fifo_depths,
        fifo_timeout_min=a.fifo_timeout,
    )
    for line in summary_lines(r.manifest, r.out_dir):
        print(line)
    return 0


def summary_lines(m: Manifest, out_dir: Path) -> list[str]:
    """The short summary ``bnnflow build`` prints."""
    est, cap = m.estimates, m.capacity
    t = est["totals"]
    acc = m.accuracy
    lines = [f"{m.input} -> {out_dir} ({m.board}, {m.part}, {1000.0 / m.clock_ns:g} MHz)"]
    if acc is not None:
        lines.append(f"  accuracy: {acc:.2%} on {m.accuracy_n} {m.dataset} test images (checkpoint)")
    if m.export_check and m.export_check["n"]:
        e = m.export_check
        lines.append(
            f"  QONNX vs Brevitas: top-1 identical on {e['top1_agreement']:.1%} of {e['n']} "
            f"{e['images']} images, max logit difference {e['max_logit_diff']:.3g}"
        )
    for note in m.input_notes:
        lines.append(f"  input: {note}")
    target = m.target_fps
    if target is not None and m.target_fps_used != target:
        lines.append(f"  target FPS lowered from {target:g} to {m.target_fps_used:g} to fit the board")
    used = m.target_fps_used if target is not None else None
    if used is not None and float(est["estimated_throughput_fps"]) < float(used):
        lines.append(
            f"  WARNING target {float(used):,.0f} FPS not reached: FINN's folding reaches an estimated "
            f"{est['estimated_throughput_fps']:,.0f} FPS (bottleneck {est['max_cycles_node_name']}); "
            "a faster clock (--clock-ns) or a smaller network goes further"
        )
    lines.append(
        f"  estimated: {est['estimated_throughput_fps']:,.0f} FPS (bottleneck {est['max_cycles_node_name']}, "
        f"{est['max_cycles']:,} cycles), latency {est['estimated_latency_ns'] / 1000:,.1f} us"
    )
    lines.append(
        f"  estimated resources: LUT {t.get('LUT', 0):,.0f}/{cap['LUT']:,}, "
        f"BRAM18 {t.get('BRAM_18K', 0):,.0f}/{cap['BRAM_18K']:,}, DSP {t.get('DSP', 0):,.0f}/{cap['DSP']:,}"
    )
    lines.append(
        f"  outputs: {out_dir}/report/ (estimates), {out_dir}/{m.outputs['codegen_dir']}/ "
        f"(generated code), {out_dir}/intermediate_models/, {out_dir}/manifest.json"
    )
    lines.append(f"  build time: {m.wall_time_s:.1f} s")
    for skip in m.skipped:
        lines.append(
            f"  {skip['reason']}: stopped after code generation; these steps need Vivado: {', '.join(skip['steps'])}"
        )
        lines.append(f"  to continue on a Vivado machine: {out_dir}/{m.outputs['handoff']}/README.md")
    return lines


def _doctor_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--board", default=BOARDS[0], choices=BOARDS, help=f"target board (default {BOARDS[0]})")
    p.add_argument(
        "--fifo-strategy",
        choices=STRATEGIES,
        default=DEFAULT_STRATEGY,
        help=f"the FIFO sizing the build will use (default {DEFAULT_STRATEGY})",
    )
    p.add_argument("--out", type=Path, default=Path("."), help="where builds go (for the disk space check)")


def _doctor(a: argparse.Namespace) -> int:
    """Check what a bitfile build needs here (Vivado, Vitis HLS, XSI, FINN's dependencies, board files, ...)."""
    from build_flows.doctor import run_checks

    checks = run_checks(a.board, a.out, a.fifo_strategy)
    for c in checks:
        print(c.line())
    failing = [c for c in checks if not c.ok]
    if failing:
        print(f"a bitfile build for {a.board} cannot start here: {len(failing)} of {len(checks)} requirements not met")
        return 1
    print(f"a bitfile build for {a.board} can start here")
    return 0


#: the subcommands of this stage, for ``bnnflow.cli``: (name, options, handler)
COMMANDS = [("export", _export_opts, _export), ("build", _build_opts, _build), ("doctor", _doctor_opts, _doctor)]
