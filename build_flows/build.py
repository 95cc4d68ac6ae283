"""The ``build`` stage: a W1A1 network -> FINN dataflow accelerator for a PYNQ board.

FINN's own builder does the work (``build_dataflow_cfg`` with a
``DataflowBuildConfig`` and FINN's standard step functions: ConvertQONNXtoFINN,
streamlining with the XNOR-popcount conversion, HW layers, dataflow
partition, specialization, folding, bit-width minimization, estimate reports,
code generation; and where Vivado and Vitis HLS are installed, FINN's default
step list on to IP generation, FIFO sizing, stitched IP, synthesis, bitfile,
PYNQ driver and deployment package). bnnflow adds what FINN does not do:

* checks of the input and of a folding file before FINN runs
  (:mod:`build_flows.inputs`, :func:`build_flows.folding.check_folding`);
* a budget check of FINN's estimates against the board, refusing or (with
  ``lower_to_fit``) lowering the target FPS;
* XNOR accumulators sized for the popcount the hardware computes: FINN's two
  bit-width steps run in :mod:`build_flows.finn_env`'s version (work-around 4),
  FINN's transformations plus one that widens what FINN sizes too narrowly;
* ``DIR/manifest.json``: input and hash, board, part, clock, steps with
  durations, tool versions, what was skipped and why.

FINN runs in three calls of ``build_dataflow_cfg`` over one step list, using
its ``start_step``/``stop_step`` resume: up to specialization (then the
folding file is checked against the real node names), folding to estimates
(repeated while lowering the target), then the rest.

Layout of DIR (FINN's own): ``intermediate_models/<step>.onnx`` per step,
``intermediate_models/dataflow_parent.onnx``, ``report/estimate_*.json``,
``report/auto_folding_config.json`` (target FPS) or
``report/applied_folding_config.json`` (folding file), ``build_dataflow.log``;
plus ``model.onnx`` (the QONNX input that was built), ``codegen/`` (FINN's
generated HLS/RTL code per layer) and ``manifest.json``.

No partial DIR: while FINN runs, DIR is a symbolic link to a hidden folder
beside it (so every path FINN records names DIR); on success the link is
replaced by the folder, on failure both go and a previous build in DIR is
put back.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from bnnflow.files import sha256_file
from bnnflow.errors import BnnflowError
from bnnflow.progress import progress
from build_flows import finn_env
from build_flows.boards import Board, get_board
from build_flows.folding import check_folding, lowered_target, over_budget, read_folding, utilization
from build_flows.inputs import BuildInput, prepare_input

CODEGEN_DIR = "codegen"
MODEL_FILE = "model.onnx"
FOLDING_FILE = "folding_config.json"
LAST_BEFORE_FOLDING = "step_specialize_layers"
ESTIMATES_STEP = "step_generate_estimate_reports"
MAX_LOWERINGS = 12


@dataclass(frozen=True)
class BuildResult:
    """Where the build is and FINN's headline estimates."""

    out_dir: Path
    manifest: dict[str, Any]

    @property
    def estimated_fps(self) -> float:
        return float(self.manifest["estimates"]["estimated_throughput_fps"])

    @property
    def totals(self) -> dict[str, float]:
        return dict(self.manifest["estimates"]["totals"])


def step_lists() -> tuple[list[str], list[str]]:
    """(FINN's step list without Vivado, the steps that need Vivado/Vitis HLS)."""
    import finn.builder.build_dataflow_config as bc

    free = list(bc.hw_codegen_dataflow_steps)
    return free, [s for s in bc.default_build_dataflow_steps if s not in free]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BnnflowError(f"{path}: FINN did not write a readable report ({exc})") from None


class _Runner:
    """Calls FINN's builder for ranges of one step list, timing each step and keeping its errors."""

    def __init__(self, cfg: Any, model_file: Path, n_steps: int) -> None:
        import finn.builder.build_dataflow as bd
        from finn.builder.build_dataflow_steps import build_dataflow_step_lookup

        self.bd = bd
        self.cfg = cfg
        self.model_file = model_file
        self.durations: dict[str, float] = {}
        self.error: tuple[str, BaseException] | None = None
        self.log: list[str] = []
        self.bar = progress(range(n_steps), total=n_steps, desc="FINN build")
        lookup = {**build_dataflow_step_lookup, **finn_env.STEP_REPLACEMENTS}
        cfg.steps = [self._wrap(lookup[s]) for s in cfg.steps]

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def step(model: Any, cfg: Any) -> Any:
            t0 = time.perf_counter()
            self.bar.set_postfix_str(fn.__name__, refresh=False)
            try:
                out = fn(model, cfg)
            except BaseException as exc:
                self.error = (fn.__name__, exc)
                raise
            self.durations[fn.__name__] = round(time.perf_counter() - t0, 3)
            self.bar.update(1)
            return out

        return step

    def run(self, start: str | None, stop: str | None) -> None:
        self.cfg.start_step, self.cfg.stop_step = start, stop
        self.error = None
        logfile = Path(self.cfg.output_dir) / "build_dataflow.log"
        try:
            with finn_env.quiet_builder():
                rc = self.bd.build_dataflow_cfg(str(self.model_file), self.cfg)
        except Exception as exc:  # FINN re-raises under pytest instead of returning -1
            if self.error is None:
                self.error = ("build_dataflow_cfg", exc)
            rc = -1
        if logfile.is_file():
            self.log.append(logfile.read_text())  # each call starts the log afresh
        if rc != 0:
            step, exc = self.error or ("build_dataflow_cfg", RuntimeError("see the build log"))
            if isinstance(exc, BnnflowError):  # bnnflow's own checks inside a step: name the file
                raise BnnflowError(f"{self.model_file}: {exc}") from None
            if isinstance(exc, KeyboardInterrupt):
                raise exc
            msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise BnnflowError(f"{self.model_file}: FINN's {step} failed: {type(exc).__name__}: {msg}")

    def finish(self) -> None:
        self.bar.close()
        logfile = Path(self.cfg.output_dir) / "build_dataflow.log"
        logfile.write_text("".join(self.log))
        (Path(self.cfg.output_dir) / "report" / "time_per_step.json").write_text(
            json.dumps({**self.durations, "total_build_time": round(sum(self.durations.values()), 3)}, indent=2))


def _estimates(out: Path, board: Board) -> dict[str, Any]:
    res = _read_json(out / "report" / "estimate_layer_resources.json")
    perf = _read_json(out / "report" / "estimate_network_performance.json")
    totals = {k: float(v) for k, v in res["total"].items()}
    return {**perf, "totals": totals, "utilization": utilization(totals, board)}


def _fold_to_budget(runner: _Runner, out: Path, board: Board, target_fps: float | None,
                    lower_to_fit: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fold and estimate; while over budget, lower the target FPS (or refuse). Returns (estimates, tries)."""
    tries: list[dict[str, Any]] = []
    while True:
        runner.run("step_target_fps_parallelization", ESTIMATES_STEP)
        est = _estimates(out, board)
        over = over_budget(est["totals"], board)
        tries.append({"target_fps": runner.cfg.target_fps, "estimated_fps": est["estimated_throughput_fps"],
                      "totals": est["totals"], "fits": not over})
        if not over:
            return est, tries
        what = f"target {runner.cfg.target_fps} FPS" if target_fps else "this folding"
        usage = ", ".join(over)
        if target_fps is None:
            raise BnnflowError(f"the folding file gives a design over {board.name}'s budget ({usage}, FINN "
                               "estimates); lower PE/SIMD")
        if not lower_to_fit:
            raise BnnflowError(
                f"{what} is over {board.name}'s budget ({usage}, FINN estimates); give a lower --target-fps "
                f"(estimated {est['estimated_throughput_fps']:,.0f} FPS at this folding) or add --lower-to-fit")
        stuck = len(tries) > 1 and tries[-2]["totals"] == est["totals"]
        # Above what full parallelism reaches, a lower target changes nothing: start below it.
        reached = min(float(runner.cfg.target_fps), float(est["estimated_throughput_fps"]))
        new = lowered_target(reached, est["totals"], board)
        if stuck or len(tries) > MAX_LOWERINGS or new >= runner.cfg.target_fps:
            raise BnnflowError(f"no target FPS fits {board.name}: at {runner.cfg.target_fps} FPS the design "
                               f"still needs {usage} (FINN estimates); the network is too large for this board")
        runner.cfg.target_fps = new


def _claim(out: Path) -> tuple[Path, Path | None]:
    """Make ``out`` a link to a fresh hidden folder beside it; returns (folder, previous build moved aside)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_symlink():  # left by a killed build of ours
        if not out.readlink().name.startswith(f".{out.name}.building-"):
            raise BnnflowError(f"{out}: is a symbolic link; give another --out")
        out.unlink()
    old = None
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file()):
            raise BnnflowError(f"{out}: exists and is not a bnnflow build folder; give another --out or remove it")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()
        out.rename(old)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    work.chmod(0o755)
    out.symlink_to(work.name, target_is_directory=True)
    return work, old


def _config(out: Path, board: Board, target_fps: float | None, folding_file: Path | None, clock_ns: float,
            steps: list[str], vivado: bool) -> Any:
    import finn.builder.build_dataflow_config as bc

    outputs = [bc.DataflowOutputType.ESTIMATE_REPORTS]
    if vivado:
        outputs += [bc.DataflowOutputType.STITCHED_IP, bc.DataflowOutputType.BITFILE,
                    bc.DataflowOutputType.PYNQ_DRIVER, bc.DataflowOutputType.DEPLOYMENT_PACKAGE]
    return bc.DataflowBuildConfig(
        output_dir=str(out), synth_clk_period_ns=clock_ns, board=board.name, fpga_part=board.part,
        shell_flow_type=bc.ShellFlowType.VIVADO_ZYNQ, target_fps=None if target_fps is None else int(target_fps),
        folding_config_file=folding_file, steps=steps, generate_outputs=outputs,
    )


def _validate_args(board: str, target_fps: float | None, folding: Path | None, clock_ns: float) -> Board:
    if (target_fps is None) == (folding is None):
        raise BnnflowError("give exactly one of --target-fps N or --folding FILE.json")
    if target_fps is not None and not target_fps > 0:
        raise BnnflowError(f"--target-fps must be positive, got {target_fps}")
    if not clock_ns > 0:
        raise BnnflowError(f"--clock-ns must be positive, got {clock_ns}")
    return get_board(board)


def build(input_path: Path | str, board: str, out_dir: Path | str, target_fps: float | None = None,
          folding: Path | str | None = None, clock_ns: float = 10.0, lower_to_fit: bool = False,
          n_check: int = 100, data_dir: Path | None = None) -> BuildResult:
    """Build ``input_path`` (bnnflow checkpoint or W1A1 QONNX file) for ``board`` into ``out_dir``.

    Folding comes from FINN's auto-folding for ``target_fps`` or from a FINN
    folding JSON ``folding``; ``clock_ns`` is the target clock period. A
    checkpoint is exported first, its QONNX graph checked against Brevitas on
    ``n_check`` test images. Without Vivado the build ends after code
    generation (a complete result); the manifest lists the skipped steps.
    """
    src = Path(input_path)
    folding = Path(folding) if folding is not None else None
    b = _validate_args(board, target_fps, folding, clock_ns)
    fold_cfg = read_folding(folding) if folding is not None else None
    if not src.is_file():
        raise BnnflowError(f"{src}: file not found (give a bnnflow checkpoint .pt or a QONNX .onnx file)")
    out = Path(out_dir).absolute()
    vivado = finn_env.vivado_available()
    free_steps, vivado_steps = step_lists()
    steps = free_steps + vivado_steps if vivado else free_steps
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()

    work, old = _claim(out)
    try:
        inp: BuildInput = prepare_input(src, out / MODEL_FILE, n_check, data_dir)
        finn_env.prepare(out / CODEGEN_DIR)
        folding_file = None
        if fold_cfg is not None:
            folding_file = out / FOLDING_FILE
            folding_file.write_text(json.dumps(fold_cfg, indent=2))
        cfg = _config(out, b, target_fps, folding_file, clock_ns, list(steps), vivado)
        runner = _Runner(cfg, out / MODEL_FILE, len(steps))
        runner.run(None, LAST_BEFORE_FOLDING)
        if fold_cfg is not None:
            from qonnx.core.modelwrapper import ModelWrapper
            from qonnx.transformation.general import GiveUniqueNodeNames

            graph = ModelWrapper(str(out / "intermediate_models" / f"{LAST_BEFORE_FOLDING}.onnx"))
            check_folding(fold_cfg, graph.transform(GiveUniqueNodeNames()), folding)
        est, tries = _fold_to_budget(runner, out, b, target_fps, lower_to_fit)
        after = steps[steps.index(ESTIMATES_STEP) + 1:]
        if after:
            runner.run(after[0], None)
        runner.finish()
        manifest = _manifest(inp, src, b, clock_ns, target_fps, folding, lower_to_fit, tries, est, runner,
                             vivado, vivado_steps, started, time.perf_counter() - t0)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        out.unlink()
        work.rename(out)
    except BaseException:
        if out.is_symlink():
            out.unlink()
        shutil.rmtree(work, ignore_errors=True)
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return BuildResult(out_dir=out, manifest=manifest)


def _manifest(inp: BuildInput, src: Path, board: Board, clock_ns: float, target_fps: float | None,
              folding: Path | None, lower_to_fit: bool, tries: list[dict[str, Any]], est: dict[str, Any],
              runner: _Runner, vivado: bool, vivado_steps: list[str], started: datetime,
              wall_s: float) -> dict[str, Any]:
    """What bnnflow records about a build (DIR/manifest.json)."""
    ran = list(runner.durations)
    m: dict[str, Any] = {
        "format": "bnnflow-build", "version": 1,
        "input": str(src.absolute()), "input_kind": inp.kind, "input_sha256": sha256_file(src),
        "board": board.name, "part": board.part, "capacity": board.capacity, "clock_ns": clock_ns,
        "target_fps": target_fps, "target_fps_used": tries[-1]["target_fps"],
        "lower_to_fit": lower_to_fit, "folding_tries": tries,
        "folding_file": str(folding.absolute()) if folding else None,
        "folding_file_sha256": sha256_file(folding) if folding else None,
        "folding_applied": "report/auto_folding_config.json" if target_fps else "report/applied_folding_config.json",
        "dataset": inp.dataset, "arch": inp.arch, "widths": inp.widths,
        "accuracy": inp.meta.get("accuracy"), "accuracy_n": inp.meta.get("n"),
        "pruning": inp.meta.get("pruning"), "export_check": inp.export, "input_notes": inp.notes,
        "steps": [{"name": s, "seconds": runner.durations[s]} for s in ran],
        "estimates": est,
        "vivado": vivado,
        "skipped": [] if vivado else [{"steps": vivado_steps, "reason": "Vivado/Vitis HLS not found"}],
        "outputs": {
            "qonnx_input": MODEL_FILE,
            "hw_graph_before_specialization": "intermediate_models/step_create_dataflow_partition.onnx",
            "parent_graph": "intermediate_models/dataflow_parent.onnx",
            "final_graph": f"intermediate_models/{ran[-1]}.onnx",
            "codegen_dir": CODEGEN_DIR,
            "reports": "report",
        },
        "tools": finn_env.tool_versions(),
        "finn_steps_replaced": {name: f"{fn.__module__}.{fn.__name__}: {(fn.__doc__ or '').splitlines()[0]}"
                                for name, fn in finn_env.STEP_REPLACEMENTS.items() if name in ran},
        "started_utc": started.isoformat(timespec="seconds"), "wall_time_s": round(wall_s, 2),
    }
    if inp.kind == "checkpoint":
        m["checkpoint"] = str(src.absolute())
    return m
