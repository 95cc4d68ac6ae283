"""Where things are in a build folder written by ``bnnflow build`` (FINN's builder layout).

``DIR/intermediate_models/<step>.onnx`` holds the graph after each builder
step; the accelerator is the dataflow partition after the last step that ran
(code generation when it ran), ``dataflow_parent.onnx`` wraps it with the
nodes that stay in software, and ``step_create_dataflow_partition.onnx`` is
the HW-layer graph before specialization, the one FINN itself can execute in
Python (our golden reference). ``DIR/report/`` holds FINN's estimates and
``DIR/manifest.json`` what bnnflow recorded about the build.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError

# Latest first: the accelerator graph is the output of the last of these that exists.
ACCEL_STEPS = (
    "step_hw_codegen",
    "step_generate_estimate_reports",
    "step_minimize_bit_width",
    "step_apply_folding_config",
    "step_target_fps_parallelization",
    "step_specialize_layers",
    "step_create_dataflow_partition",
)
GOLDEN_STEP = "step_create_dataflow_partition"
PARENT_MODEL = "dataflow_parent.onnx"


@dataclass(frozen=True)
class BuildDir:
    """Paths of one build folder; ``accel`` is the graph the simulator runs."""

    root: Path
    accel: Path
    accel_step: str
    parent: Path | None
    golden: Path | None
    manifest: dict[str, Any]

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def report(self, name: str) -> Any | None:
        """A JSON report of FINN's builder (e.g. ``estimate_layer_cycles.json``), or None."""
        path = self.report_dir / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BnnflowError(f"{path}: cannot read FINN report ({exc}); rebuild with `bnnflow build`") from exc

    @property
    def clock_ns(self) -> float:
        """Clock period of the build (manifest), 10 ns (FINN's default) when not recorded."""
        for key in ("clock_ns", "synth_clk_period_ns"):
            if key in self.manifest:
                return float(self.manifest[key])
        return 10.0


def _check_outputs(root: Path, manifest: Any, mpath: Path) -> None:
    """Every graph bnnflow's manifest lists must be there: simulating an earlier step's graph, or
    skipping the FINN check, because a file went missing would pass silently."""
    outputs = manifest.get("outputs") if isinstance(manifest, dict) else None
    if not isinstance(outputs, dict):
        return
    for key in ("final_graph", "hw_graph_before_specialization", "parent_graph"):
        rel = outputs.get(key)
        if isinstance(rel, str) and not (root / rel).is_file():
            raise BnnflowError(f"{root / rel}: missing ({key} in {mpath.name}); the build folder is incomplete: "
                               "rebuild it with `bnnflow build`")


def open_build(path: Path | str) -> BuildDir:
    """Locate the graphs and reports of the build folder ``path``."""
    root = Path(path)
    inter = root / "intermediate_models"
    if not inter.is_dir():
        raise BnnflowError(
            f"{root}: not a build folder (no intermediate_models/); create one with `bnnflow build`"
        )
    for step in ACCEL_STEPS:
        accel = inter / f"{step}.onnx"
        if accel.is_file():
            break
    else:
        raise BnnflowError(
            f"{root}: the build did not reach the dataflow partition step (no "
            f"intermediate_models/{GOLDEN_STEP}.onnx); see {root / 'build_dataflow.log'}"
        )
    parent = inter / PARENT_MODEL
    golden = inter / f"{GOLDEN_STEP}.onnx"
    manifest: dict[str, Any] = {}
    mpath = root / "manifest.json"
    if mpath.is_file():
        try:
            manifest = json.loads(mpath.read_text())
        except ValueError as exc:
            raise BnnflowError(f"{mpath}: not valid JSON ({exc}); rebuild with `bnnflow build`") from exc
        _check_outputs(root, manifest, mpath)
    return BuildDir(
        root=root,
        accel=accel,
        accel_step=step,
        parent=parent if parent.is_file() else None,
        golden=golden if golden.is_file() else None,
        manifest=manifest,
    )
