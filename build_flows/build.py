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
  bit-width steps run in :mod:`build_flows.steps`' version (work-around 4),
  FINN's transformations plus one that widens what FINN sizes too narrowly;
* ``DIR/manifest.json``: input and hash, board, part, clock, steps with
  durations, tool versions, what was skipped and why;
* ``DIR/handoff/`` (:mod:`build_flows.handoff`): the model after code
  generation, the ``DataflowBuildConfig`` as JSON and the applied folding,
  so that FINN's own builder continues on a Vivado machine from there;
* with Vivado: ``bnnflow doctor``'s checks first (:mod:`build_flows.doctor`;
  missing FINN dependencies installed by finn-plus's dependency manager),
  FINN's FIFO sizing options and a time limit on it (:mod:`build_flows.fifo`),
  and ``DIR/deploy.zip`` of FINN's deployment package.

FINN runs in calls of ``build_dataflow_cfg`` over one step list, using
its ``start_step``/``stop_step`` resume: up to specialization (then the
folding file is checked against the real node names), folding to estimates
(repeated while lowering the target), code generation (then the hand-off is
written), then, with Vivado, the rest.

Layout of DIR: :mod:`build_flows.build_dir` (FINN's own, ``report/auto_folding_config.json``
for a target FPS or ``report/applied_folding_config.json`` for a folding file,
``build_dataflow.log``; plus bnnflow's ``model.onnx``, ``codegen/``,
``handoff/`` and ``manifest.json``, a :class:`~build_flows.build_dir.Manifest`).

No partial DIR: while FINN runs, DIR is a symbolic link to a hidden folder
beside it (so every path FINN records names DIR); on success the link is
replaced by the folder, on failure both go and a previous build in DIR is
put back.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bnnflow import outdir, validate
from bnnflow.errors import BnnflowError, DoesNotFit, NotSupported
from bnnflow.files import atomic_path, read_json, sha256_file
from bnnflow.progress import progress
from build_flows import finn_env
from build_flows.boards import Board, get_board
from build_flows.build_dir import CODEGEN_DIR, GRAPH_OUTPUTS, INTERMEDIATE_DIR, MODEL_FILE, REPORT_DIR, Manifest
from build_flows.fifo import DEFAULT_TIMEOUT_MIN, HARDWARE_STEP, FifoOptions, fifo_options
from build_flows.folding import check_folding, lowered_target, over_budget, read_folding, utilization
from build_flows.handoff import HANDOFF_DIR, write_handoff
from build_flows.inputs import BuildInput, prepare_input
from build_flows.steps import STEP_REPLACEMENTS

FOLDING_FILE = "folding_config.json"
FIFO_DEPTHS_FILE = "fifo_depths.json"
DEPLOY_ZIP = "deploy.zip"
LAST_BEFORE_FOLDING = "step_specialize_layers"
ESTIMATES_STEP = "step_generate_estimate_reports"
MAX_LOWERINGS = 12
#: FINN steps that apply or act on a folding file's values
FOLDING_STEPS = (
    "step_apply_folding_config",
    "step_minimize_bit_width",
    "step_generate_estimate_reports",
    "step_hw_codegen",
)
MAX_CLOCK_NS = 1e6  # 1 kHz: anything slower is a typo


@dataclass(frozen=True)
class BuildResult:
    """Where the build is and FINN's headline estimates."""

    out_dir: Path
    manifest: Manifest

    @property
    def estimated_fps(self) -> float:
        return float(self.manifest.estimates["estimated_throughput_fps"])

    @property
    def totals(self) -> dict[str, float]:
        return dict(self.manifest.estimates["totals"])


def step_lists() -> tuple[list[str], list[str]]:
    """(FINN's step list without Vivado, the steps that need Vivado/Vitis HLS)."""
    import finn.builder.build_dataflow_config as bc

    free = list(bc.hw_codegen_dataflow_steps)
    return free, [s for s in bc.default_build_dataflow_steps if s not in free]


def _read_json(path: Path) -> Any:
    return read_json(path, "FINN did not write a readable report")


class _Runner:
    """Calls FINN's builder for ranges of one step list, timing each step and keeping its errors."""

    def __init__(
        self,
        cfg: Any,
        model_file: Path,
        n_steps: int,
        fifo: FifoOptions,
        source: Path | None = None,
        folding: Path | None = None,
    ) -> None:
        import finn.builder.build_dataflow as bd
        from finn.builder.build_dataflow_steps import build_dataflow_step_lookup

        self.bd = bd
        self.cfg = cfg
        self.model_file = model_file
        #: the user's files that errors name (model_file is the build's copy, gone after a failure)
        self.source = source or model_file
        self.folding = folding
        self.durations: dict[str, float] = {}
        self.error: tuple[str, BaseException] | None = None
        self.log: list[str] = []
        self.bar = progress(range(n_steps), total=n_steps, desc="FINN build")
        #: bnnflow's versions of FINN steps, by FINN's step name
        self.replaced: dict[str, Callable[..., Any]] = dict(STEP_REPLACEMENTS)
        if fifo.timeout_min > 0:
            self.replaced[HARDWARE_STEP] = fifo.hardware_step()
        #: the function each step name runs
        self.lookup = {**build_dataflow_step_lookup, **self.replaced}
        cfg.steps = [self._wrap(self.lookup[s]) for s in cfg.steps]

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
            step, err = self.error or ("build_dataflow_cfg", RuntimeError("see the build log"))
            if isinstance(err, NotSupported):
                raise NotSupported(err.what, str(self.source)) from None
            if isinstance(err, BnnflowError):  # bnnflow's own checks inside a step: name the file
                raise BnnflowError(f"{self.source}: {err}") from None
            if isinstance(err, KeyboardInterrupt):
                raise err
            msg = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            if self.folding is not None and step in FOLDING_STEPS:
                raise BnnflowError(
                    f"{self.folding}: FINN's {step} failed with this folding file: "
                    f"{type(err).__name__}: {msg}; check its node attributes"
                )
            raise BnnflowError(f"{self.source}: FINN's {step} failed: {type(err).__name__}: {msg}")

    def finish(self) -> None:
        self.bar.close()
        logfile = Path(self.cfg.output_dir) / "build_dataflow.log"
        logfile.write_text("".join(self.log))
        (Path(self.cfg.output_dir) / REPORT_DIR / "time_per_step.json").write_text(
            json.dumps({**self.durations, "total_build_time": round(sum(self.durations.values()), 3)}, indent=2)
        )


def _estimates(out: Path, board: Board) -> dict[str, Any]:
    res = _read_json(out / REPORT_DIR / "estimate_layer_resources.json")
    perf = _read_json(out / REPORT_DIR / "estimate_network_performance.json")
    totals = {k: float(v) for k, v in res["total"].items()}
    return {**perf, "totals": totals, "utilization": utilization(totals, board)}


def _fold_to_budget(
    runner: _Runner, out: Path, board: Board, target_fps: float | None, lower_to_fit: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fold and estimate; while over budget, lower the target FPS (or refuse). Returns (estimates, tries)."""
    tries: list[dict[str, Any]] = []
    while True:
        runner.run("step_target_fps_parallelization", ESTIMATES_STEP)
        est = _estimates(out, board)
        over = over_budget(est["totals"], board)
        tries.append(
            {
                "target_fps": runner.cfg.target_fps,
                "estimated_fps": est["estimated_throughput_fps"],
                "totals": est["totals"],
                "fits": not over,
            }
        )
        if not over:
            return est, tries
        what = f"target {runner.cfg.target_fps} FPS" if target_fps else "this folding"
        usage = ", ".join(over)
        if target_fps is None:
            raise BnnflowError(
                f"the folding file gives a design over {board.name}'s budget ({usage}, FINN estimates); lower PE/SIMD"
            )
        if not lower_to_fit:
            raise BnnflowError(
                f"{what} is over {board.name}'s budget ({usage}, FINN estimates); give a lower --target-fps "
                f"(estimated {est['estimated_throughput_fps']:,.0f} FPS at this folding) or add --lower-to-fit"
            )
        # Above what full parallelism reaches, a lower target changes nothing: start below it.
        reached = min(float(runner.cfg.target_fps), float(est["estimated_throughput_fps"]))
        new = lowered_target(reached, est["totals"], board)
        if len(tries) > 1 and tries[-2]["totals"] == est["totals"]:
            # FINN's folding moves in steps (PE/SIMD divide the layer's sizes): a small
            # lowering can leave it where it was, so step further rather than give up.
            new = min(new, int(runner.cfg.target_fps) // 2)
        if len(tries) > MAX_LOWERINGS or new < 1 or new >= runner.cfg.target_fps:
            raise DoesNotFit(
                f"no target FPS fits {board.name}: at {runner.cfg.target_fps} FPS the design "
                f"still needs {usage} (FINN estimates); the network is too large for this board"
            )
        runner.cfg.target_fps = new


def _claim(out: Path) -> Any:
    """The crash-safe replace of ``out`` (:func:`bnnflow.outdir.replacing`): locked against a second
    run, refused unless ``out`` is empty or a bnnflow build, leftovers of killed runs cleaned; inside
    the block ``out`` links to a fresh hidden folder, and on any error or signal the previous build
    comes back."""
    return outdir.replacing(out, "--out")


def _config(
    out: Path,
    board: Board,
    target_fps: float | None,
    folding_file: Path | None,
    clock_ns: float,
    steps: list[str],
    vivado: bool,
    fifo: FifoOptions,
    depths_file: Path | None,
) -> Any:
    """FINN's build config; ``depths_file``: the copy of the FIFO depth file in DIR, if one was given."""
    import finn.builder.build_dataflow_config as bc

    outputs = [bc.DataflowOutputType.ESTIMATE_REPORTS]
    if vivado:
        outputs += [
            bc.DataflowOutputType.STITCHED_IP,
            bc.DataflowOutputType.BITFILE,
            bc.DataflowOutputType.PYNQ_DRIVER,
            bc.DataflowOutputType.DEPLOYMENT_PACKAGE,
        ]
    return bc.DataflowBuildConfig(
        output_dir=str(out),
        synth_clk_period_ns=clock_ns,
        board=board.name,
        fpga_part=board.part,
        shell_flow_type=bc.ShellFlowType.VIVADO_ZYNQ,
        target_fps=None if target_fps is None else int(target_fps),
        folding_config_file=folding_file,
        steps=steps,
        generate_outputs=outputs,
        **fifo.config_fields(depths_file),
    )


def _zip_deployment(out: Path) -> None:
    """``DIR/deploy.zip`` of FINN's deployment package (bitfile, .hwh, driver) for copying to the board."""
    with atomic_path(out / DEPLOY_ZIP) as tmp:
        shutil.make_archive(str(tmp.with_suffix("")), "zip", out / "deploy")


def _validate_args(board: str, target_fps: float | None, folding: Path | None, clock_ns: float) -> Board:
    if (target_fps is None) == (folding is None):
        raise BnnflowError("give exactly one of --target-fps N or --folding FILE.json")
    validate.number(clock_ns, "--clock-ns", 0.0, MAX_CLOCK_NS, lo_open=True)
    if target_fps is not None:
        # FINN folds for int(target) frames per second and at least one cycle per frame
        top = 1e9 / clock_ns
        validate.number(target_fps, "--target-fps", 1.0)
        if target_fps > top:
            raise BnnflowError(
                f"--target-fps {target_fps:g} is above one frame per clock cycle ({top:,.0f} FPS "
                f"at {clock_ns:g} ns), which no folding reaches; give at most {top:,.0f}"
            )
    return get_board(board)


def build(
    input_path: Path | str,
    board: str,
    out_dir: Path | str,
    target_fps: float | None = None,
    folding: Path | str | None = None,
    clock_ns: float = 10.0,
    lower_to_fit: bool = False,
    n_check: int = 100,
    data_dir: Path | None = None,
    fifo_strategy: str | None = None,
    fifo_depths: Path | str | None = None,
    fifo_timeout_min: float = DEFAULT_TIMEOUT_MIN,
) -> BuildResult:
    """Build ``input_path`` (bnnflow checkpoint or W1A1 QONNX file) for ``board`` into ``out_dir``.

    Folding comes from FINN's auto-folding for ``target_fps`` or from a FINN
    folding JSON ``folding``; ``clock_ns`` is the target clock period. A
    checkpoint is exported first, its QONNX graph checked against Brevitas on
    ``n_check`` test images. Without Vivado the build ends after code
    generation (a complete result, with ``DIR/handoff/`` for a Vivado
    machine); the manifest lists the skipped steps. FIFO sizing (a Vivado
    step): FINN's ``fifo_strategy`` or the depths in ``fifo_depths``, stopped
    after ``fifo_timeout_min`` minutes (0: no limit); they reach FINN's config
    and the hand-off either way.
    """
    src = Path(input_path)
    folding = Path(folding) if folding is not None else None
    b = _validate_args(board, target_fps, folding, clock_ns)
    fifo = fifo_options(fifo_strategy, fifo_depths, fifo_timeout_min)
    fold_cfg = read_folding(folding) if folding is not None else None
    if not src.is_file():
        raise BnnflowError(f"{src}: file not found (give a bnnflow checkpoint .pt or a QONNX .onnx file)")
    out = Path(out_dir).absolute()
    vivado = finn_env.vivado_available()
    checks: list[Any] = []  # bnnflow doctor's, where a bitfile build is about to start
    if vivado:
        from build_flows.doctor import ensure_ready

        checks = ensure_ready(b.name, out, None if fifo.depths_file else fifo.strategy)
    free_steps, vivado_steps = step_lists()
    steps = free_steps + vivado_steps if vivado else free_steps
    started = datetime.now(UTC)
    t0 = time.perf_counter()

    with _claim(out):
        inp: BuildInput = prepare_input(src, out / MODEL_FILE, n_check, data_dir)
        finn_env.prepare(out / CODEGEN_DIR)
        folding_file = None
        if fold_cfg is not None:
            folding_file = out / FOLDING_FILE
            folding_file.write_text(json.dumps(fold_cfg, indent=2))
        depths_file = None
        if fifo.depths_file is not None:
            depths_file = out / FIFO_DEPTHS_FILE
            shutil.copyfile(fifo.depths_file, depths_file)
        cfg = _config(out, b, target_fps, folding_file, clock_ns, list(steps), vivado, fifo, depths_file)
        runner = _Runner(cfg, out / MODEL_FILE, len(steps), fifo, src, folding)
        runner.run(None, LAST_BEFORE_FOLDING)
        if fold_cfg is not None and folding is not None:
            from qonnx.core.modelwrapper import ModelWrapper
            from qonnx.transformation.general import GiveUniqueNodeNames

            graph = ModelWrapper(str(out / INTERMEDIATE_DIR / f"{LAST_BEFORE_FOLDING}.onnx"))
            check_folding(fold_cfg, graph.transform(GiveUniqueNodeNames()), folding)
        est, tries = _fold_to_budget(runner, out, b, target_fps, lower_to_fit)
        codegen_step = free_steps[-1]
        runner.run(codegen_step, codegen_step)
        handoff_cfg = _config(out, b, runner.cfg.target_fps, folding_file, clock_ns, [], True, fifo, depths_file)
        write_handoff(
            out,
            handoff_cfg,
            codegen_step,
            vivado_steps,
            {s: runner.lookup[s] for s in runner.durations},
            out / _folding_applied(target_fps),
            fifo.record(),
            depths_file,
        )
        if vivado:
            runner.run(vivado_steps[0], None)
            _zip_deployment(out)
        runner.finish()
        manifest = _manifest(
            inp,
            src,
            b,
            clock_ns,
            target_fps,
            folding,
            lower_to_fit,
            tries,
            est,
            runner,
            vivado,
            vivado_steps,
            started,
            time.perf_counter() - t0,
            fifo,
            checks,
        )
        manifest.write(out)
    return BuildResult(out_dir=out, manifest=manifest)


def _folding_applied(target_fps: float | None) -> str:
    """FINN's report of the folding it applied (auto-folding for a target FPS, else the folding file)."""
    return f"{REPORT_DIR}/{'auto' if target_fps else 'applied'}_folding_config.json"


def _manifest(
    inp: BuildInput,
    src: Path,
    board: Board,
    clock_ns: float,
    target_fps: float | None,
    folding: Path | None,
    lower_to_fit: bool,
    tries: list[dict[str, Any]],
    est: dict[str, Any],
    runner: _Runner,
    vivado: bool,
    vivado_steps: list[str],
    started: datetime,
    wall_s: float,
    fifo: FifoOptions,
    checks: list[Any],
) -> Manifest:
    """What bnnflow records about a build (DIR/manifest.json); the checkpoint's accuracy and pruning
    go in so that readers need not reopen it."""
    ran = list(runner.durations)
    return Manifest(
        input=str(src.absolute()),
        input_kind=inp.kind,
        input_sha256=sha256_file(src),
        board=board.name,
        part=board.part,
        capacity=board.capacity,
        clock_ns=clock_ns,
        target_fps=target_fps,
        target_fps_used=tries[-1]["target_fps"],
        lower_to_fit=lower_to_fit,
        folding_tries=tries,
        folding_file=str(folding.absolute()) if folding else None,
        folding_file_sha256=sha256_file(folding) if folding else None,
        folding_applied=_folding_applied(target_fps),
        dataset=inp.dataset,
        arch=inp.arch,
        widths=inp.widths,
        accuracy=inp.meta.get("accuracy"),
        accuracy_n=inp.meta.get("n"),
        pruning=inp.meta.get("pruning"),
        export_check=inp.export,
        input_notes=inp.notes,
        steps=[{"name": s, "seconds": runner.durations[s]} for s in ran],
        estimates=est,
        vivado=vivado,
        doctor=[c.line() for c in checks],
        fifo=fifo.record(),
        skipped=[] if vivado else [{"steps": vivado_steps, "reason": "Vivado/Vitis HLS not found"}],
        outputs={
            **GRAPH_OUTPUTS,
            "final_graph": f"{INTERMEDIATE_DIR}/{ran[-1]}.onnx",
            "codegen_dir": CODEGEN_DIR,
            "reports": REPORT_DIR,
            "handoff": HANDOFF_DIR,
            **({"deployment_zip": DEPLOY_ZIP} if vivado else {}),
        },
        tools=finn_env.tool_versions(),
        finn_steps_replaced={
            name: f"{fn.__module__}.{fn.__name__}: {(fn.__doc__ or '').splitlines()[0]}"
            for name, fn in runner.replaced.items()
            if name in ran
        },
        started_utc=started.isoformat(timespec="seconds"),
        wall_time_s=round(wall_s, 2),
        checkpoint=str(src.absolute()) if inp.kind == "checkpoint" else None,
    )
