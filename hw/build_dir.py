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
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError
from bnnflow.outdir import BUILD_FORMAT, MANIFEST, read_manifest

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
LAYER_REPORTS = ("estimate_layer_cycles.json", "estimate_layer_resources.json")
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

    def report(self, name: str) -> dict[str, Any] | None:
        """A JSON report of FINN's builder (e.g. ``estimate_layer_cycles.json``), or None when absent.

        FINN's reports are JSON objects; its per-layer estimates (:data:`LAYER_REPORTS`) map layer
        names to numbers or to objects of numbers. Anything else is a damaged file, refused here in
        one line rather than failing in whatever reads it."""
        path = self.report_dir / name
        if not path.is_file():
            return None
        try:
            obj = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise BnnflowError(f"{path}: cannot read FINN report ({str(exc)[:200]}); {REBUILD}") from None
        if not isinstance(obj, dict):
            raise BnnflowError(f"{path}: not a FINN report (a JSON {type(obj).__name__}, not an object); {REBUILD}")
        if name in LAYER_REPORTS:
            for layer, v in obj.items():
                values = v.values() if isinstance(v, dict) else [v]
                if not all(_finite_number(x) for x in values):
                    raise BnnflowError(f"{path}: damaged FINN report: the entry of {layer} is {v!r}, not numbers; "
                                       f"{REBUILD}")
        return obj

    @property
    def clock_ns(self) -> float:
        """Clock period of the build (manifest), 10 ns (FINN's default) when not recorded."""
        for key in ("clock_ns", "synth_clk_period_ns"):
            if key in self.manifest:
                v = self.manifest[key]
                if not (_finite_number(v) and v > 0):
                    raise BnnflowError(f"{self.root / MANIFEST}: {key} is {v!r}, not a clock period in ns; "
                                       f"{REBUILD}")
                return float(v)
        return 10.0


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: The graphs every build of ``bnnflow build`` has (its manifest's ``outputs``): what a folder whose
#: manifest lists none must hold all the same.
BUILD_OUTPUTS = {
    "final_graph": "intermediate_models/step_hw_codegen.onnx",
    "hw_graph_before_specialization": f"intermediate_models/{GOLDEN_STEP}.onnx",
    "parent_graph": f"intermediate_models/{PARENT_MODEL}",
}
REBUILD = "rebuild it with `bnnflow build`"
#: a folder without a bnnflow manifest is not one `bnnflow build` replaces (bnnflow.outdir.check_owned)
REBUILD_ELSEWHERE = "rebuild it with `bnnflow build` into a new folder (build does not replace this one)"
#: what to do about a manifest that cannot be read
MANIFEST_ADVICE = ("remove the folder and rebuild it with `bnnflow build`, or build into another --out "
                   "(build does not replace a folder whose manifest it cannot read)")


def _check_outputs(root: Path, manifest: dict[str, Any], mpath: Path) -> None:
    """Every graph bnnflow's manifest lists must be there, inside the build folder: simulating an
    earlier step's graph, or skipping the FINN check, because a file went missing would pass
    silently. A manifest that lists no outputs (or no manifest) is not trusted: the graphs of
    :data:`BUILD_OUTPUTS` are required then."""
    listed = manifest.get("outputs")
    outputs = listed if isinstance(listed, dict) else BUILD_OUTPUTS
    redo = REBUILD if manifest.get("format") == BUILD_FORMAT else REBUILD_ELSEWHERE
    inside = root.resolve()
    for key, default in BUILD_OUTPUTS.items():
        rel = outputs.get(key, default)
        where = (f"{key} in {mpath.name}" if isinstance(listed, dict) and key in listed else
                 f"every `bnnflow build` writes it, and {mpath.name} does not list it" if mpath.exists() else
                 f"every `bnnflow build` writes it; there is no {mpath.name}")
        if not isinstance(rel, str) or not rel:
            raise BnnflowError(f"{mpath}: outputs.{key} is {rel!r}, not a path inside the build folder; {redo}")
        path = root / rel
        if not path.resolve().is_relative_to(inside):
            raise BnnflowError(f"{mpath}: outputs.{key} {rel!r} is not inside the build folder {root}; {redo}")
        if not path.is_file():
            raise BnnflowError(f"{path}: missing ({where}); the build folder is incomplete: {redo}")


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
    mpath = root / MANIFEST
    manifest = read_manifest(root, MANIFEST_ADVICE)
    if manifest is None:
        manifest = {}
    elif not isinstance(manifest, dict):
        raise BnnflowError(f"{mpath}: holds a JSON {type(manifest).__name__}, not the object `bnnflow build` "
                           f"writes; {MANIFEST_ADVICE}")
    _check_outputs(root, manifest, mpath)
    return BuildDir(
        root=root,
        accel=accel,
        accel_step=step,
        parent=parent if parent.is_file() else None,
        golden=golden if golden.is_file() else None,
        manifest=manifest,
    )
