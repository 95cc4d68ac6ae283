"""The build folder: its layout and ``manifest.json``, the contract between ``build`` and its readers.

``bnnflow build`` writes a build folder (FINN's builder layout plus bnnflow's
files); ``sim``, ``report``, ``sweep`` and the frontier read it. This module
is the one place that knows the layout, so that the build stage (which
writes it) owns it and no reader re-derives a path:

* ``intermediate_models/<step>.onnx``: the graph after each builder step;
  the accelerator the simulator runs is code generation's output,
  ``dataflow_parent.onnx`` wraps it with the nodes that stay in software,
  and ``step_create_dataflow_partition.onnx`` is the HW-layer graph before
  specialization, the one FINN itself executes in Python (the golden
  reference); the manifest's ``outputs`` name them;
* ``report/``: FINN's estimates (``estimate_*.json``) and, with Vivado, its
  synthesis reports; ``codegen/``: FINN's generated code per layer;
  ``handoff/``: what a Vivado machine continues from; ``model.onnx``: the
  QONNX input that was built;
* ``manifest.json``: :class:`Manifest`, what bnnflow recorded about the build
  (input, board and its capacity, clock, data set, the checkpoint's accuracy
  and pruning, FINN's headline estimates, tools); written last, atomically;
* ``sim.json``: ``bnnflow sim DIR``'s report (accuracy on the test set),
  which ``bnnflow report`` shows.

The manifest has a ``version``: a folder written by an older bnnflow (no
version, or an older one) is refused in one line that says to rebuild it,
instead of failing somewhere in a reader on a key that moved.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError
from bnnflow.files import atomic_write, read_json
from bnnflow.outdir import BUILD_FORMAT, MANIFEST, read_manifest

#: version of the manifest (and layout) this bnnflow writes and reads; 2: typed manifest, the
#: accelerator graph named in ``outputs``, ``sim.json`` written by ``bnnflow sim``
MANIFEST_VERSION = 2

INTERMEDIATE_DIR = "intermediate_models"
REPORT_DIR = "report"
CODEGEN_DIR = "codegen"
MODEL_FILE = "model.onnx"
SIM_JSON = "sim.json"
ACCEL_STEP = "step_hw_codegen"
GOLDEN_STEP = "step_create_dataflow_partition"
PARENT_MODEL = "dataflow_parent.onnx"
LAYER_REPORTS = ("estimate_layer_cycles.json", "estimate_layer_resources.json")

#: the graphs every build has, by their key in the manifest's ``outputs``, where build puts them
GRAPH_OUTPUTS = {
    "accelerator_graph": f"{INTERMEDIATE_DIR}/{ACCEL_STEP}.onnx",
    "hw_graph_before_specialization": f"{INTERMEDIATE_DIR}/{GOLDEN_STEP}.onnx",
    "parent_graph": f"{INTERMEDIATE_DIR}/{PARENT_MODEL}",
    "qonnx_input": MODEL_FILE,
}

REBUILD = "rebuild it with `bnnflow build`"
#: a folder without a bnnflow manifest is not one `bnnflow build` replaces (bnnflow.outdir.check_owned)
REBUILD_ELSEWHERE = "rebuild it with `bnnflow build` into a new folder (build does not replace this one)"
#: what to do about a manifest that cannot be read
MANIFEST_ADVICE = (
    "remove the folder and rebuild it with `bnnflow build`, or build into another --out "
    "(build does not replace a folder whose manifest it cannot read)"
)


@dataclass(frozen=True)
class Manifest:
    """``DIR/manifest.json``: what ``bnnflow build`` recorded, typed; readers take their figures
    from here rather than from the source checkpoint or FINN's tables."""

    input: str  # the file built, absolute path
    input_kind: str  # "checkpoint" or "qonnx"
    input_sha256: str
    board: str
    part: str
    capacity: dict[str, int]  # the board's LUT/FF/BRAM_18K/URAM/DSP (FINN's platform table)
    clock_ns: float
    target_fps: float | None  # as asked (None: a folding file)
    target_fps_used: float | None  # after lowering to fit
    lower_to_fit: bool
    folding_tries: list[dict[str, Any]]
    folding_file: str | None
    folding_file_sha256: str | None
    folding_applied: str  # FINN's report of the folding it applied
    dataset: str | None  # "mnist" / "cifar10"; None for a QONNX input
    arch: str | None
    widths: list[int] | None
    accuracy: float | None  # the checkpoint's stored test accuracy
    accuracy_n: int | None
    pruning: dict[str, Any] | None  # the checkpoint's pruning record (pfr, method, ...)
    export_check: dict[str, Any] | None
    input_notes: list[str]
    steps: list[dict[str, Any]]  # FINN steps that ran, with seconds
    estimates: dict[str, Any]  # FINN's network performance, resource totals and board utilisation
    vivado: bool
    doctor: list[str]
    fifo: dict[str, Any]
    skipped: list[dict[str, Any]]
    outputs: dict[str, str]  # key -> path inside the folder (GRAPH_OUTPUTS and the folders)
    tools: dict[str, str | None]
    finn_steps_replaced: dict[str, str]
    started_utc: str
    wall_time_s: float
    checkpoint: str | None = None  # the checkpoint built (absolute path), for sim's PyTorch reference
    format: str = BUILD_FORMAT
    version: int = MANIFEST_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {"format": d.pop("format"), "version": d.pop("version"), **d}

    def write(self, root: Path) -> None:
        """Write ``root/manifest.json`` atomically (the last file of a build: a folder with one is finished)."""
        atomic_write(root / MANIFEST, json.dumps(self.to_dict(), indent=2, default=str))

    @classmethod
    def from_dict(cls, obj: Any, path: Path) -> Manifest:
        """The manifest in ``obj`` (read from ``path``), every entry checked against its type."""
        root = path.parent
        if not isinstance(obj, dict):
            raise BnnflowError(
                f"{path}: holds a JSON {type(obj).__name__}, not the object `bnnflow build` writes; {MANIFEST_ADVICE}"
            )
        if obj.get("format") != BUILD_FORMAT:
            raise BnnflowError(
                f"{path}: not a bnnflow build manifest (format {obj.get('format')!r}, not "
                f"{BUILD_FORMAT!r}); {REBUILD_ELSEWHERE}"
            )
        version = obj.get("version")
        if version != MANIFEST_VERSION:
            newer = isinstance(version, int) and not isinstance(version, bool) and version > MANIFEST_VERSION
            age = "a newer" if newer else "an older"
            raise BnnflowError(
                f"{root}: a build folder of {age} bnnflow layout (manifest version "
                f"{version if version is not None else 'missing'}, this bnnflow reads version "
                f"{MANIFEST_VERSION}); {REBUILD}"
            )
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in obj:
                if f.default is dataclasses.MISSING:
                    raise BnnflowError(f"{path}: no {f.name!r} entry; the manifest is damaged: {REBUILD}")
                continue
            v = obj[f.name]
            if not _is_a(v, hints[f.name]):
                raise BnnflowError(
                    f"{path}: {f.name} is {_short(v)}, not {_type_name(hints[f.name])}; the "
                    f"manifest is damaged: {REBUILD}"
                )
            values[f.name] = v
        if not values["clock_ns"] > 0:
            raise BnnflowError(f"{path}: clock_ns is {values['clock_ns']!r}, not a clock period in ns; {REBUILD}")
        return cls(**values)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_a(v: Any, tp: Any) -> bool:
    """``v`` (parsed JSON) is of the annotated type ``tp`` (str, int, float, bool, Any, X | None,
    list[X], dict[str, X])."""
    if tp is Any:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return any(_is_a(v, a) for a in args)
    if tp is type(None):
        return v is None
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return _is_int(v)
    if tp is float:
        return _finite_number(v)
    if tp is str:
        return isinstance(v, str)
    if origin is list:
        return isinstance(v, list) and all(_is_a(x, args[0]) for x in v)
    if origin is dict:
        return isinstance(v, dict) and all(isinstance(k, str) and _is_a(x, args[1]) for k, x in v.items())
    raise TypeError(f"no check for {tp!r}")


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "")


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class BuildDir:
    """A build folder whose manifest was read and whose graphs are there; ``accel`` is the graph the
    simulator runs."""

    root: Path
    manifest: Manifest

    def _output(self, key: str) -> Path:
        return self.root / self.manifest.outputs[key]

    @property
    def accel(self) -> Path:
        return self._output("accelerator_graph")

    @property
    def accel_step(self) -> str:
        return self.accel.stem

    @property
    def golden(self) -> Path:
        return self._output("hw_graph_before_specialization")

    @property
    def parent(self) -> Path:
        return self._output("parent_graph")

    @property
    def report_dir(self) -> Path:
        return self.root / REPORT_DIR

    @property
    def sim_json(self) -> Path:
        return self.root / SIM_JSON

    @property
    def clock_ns(self) -> float:
        return float(self.manifest.clock_ns)

    def report(self, name: str) -> dict[str, Any] | None:
        """A JSON report of FINN's builder (e.g. ``estimate_layer_cycles.json``), or None when absent.

        FINN's reports are JSON objects; its per-layer estimates (:data:`LAYER_REPORTS`) map layer
        names to numbers or to objects of numbers. Anything else is a damaged file, refused here in
        one line rather than failing in whatever reads it."""
        path = self.report_dir / name
        if not path.is_file():
            return None
        obj = read_json(path, "cannot read FINN report", REBUILD)
        if not isinstance(obj, dict):
            raise BnnflowError(f"{path}: not a FINN report (a JSON {type(obj).__name__}, not an object); {REBUILD}")
        if name in LAYER_REPORTS:
            for layer, v in obj.items():
                values = v.values() if isinstance(v, dict) else [v]
                if not all(_finite_number(x) for x in values):
                    raise BnnflowError(
                        f"{path}: damaged FINN report: the entry of {layer} is {v!r}, not numbers; {REBUILD}"
                    )
        return obj


def _check_outputs(root: Path, manifest: Manifest, mpath: Path) -> None:
    """Every output the manifest lists is inside the build folder, and every graph of
    :data:`GRAPH_OUTPUTS` (and the final one) is listed and there: simulating an earlier step's
    graph, or skipping the FINN check, because a file went missing would pass silently."""
    inside = root.resolve()
    for key in [*GRAPH_OUTPUTS, "final_graph"]:
        if not manifest.outputs.get(key):
            raise BnnflowError(
                f"{mpath}: outputs.{key} is {manifest.outputs.get(key)!r}, not a path inside the "
                f"build folder; {REBUILD}"
            )
    for key, rel in manifest.outputs.items():
        path = root / rel
        if not path.resolve().is_relative_to(inside):
            raise BnnflowError(f"{mpath}: outputs.{key} {rel!r} is not inside the build folder {root}; {REBUILD}")
        if (key in GRAPH_OUTPUTS or key == "final_graph") and not path.is_file():
            raise BnnflowError(f"{path}: missing ({key} in {mpath.name}); the build folder is incomplete: {REBUILD}")


def read_build_manifest(root: Path) -> Manifest:
    """``root/manifest.json`` as a :class:`Manifest`; a folder without one, or of another format or
    version, is one BnnflowError naming it."""
    obj = read_manifest(root, MANIFEST_ADVICE)
    if obj is None:
        raise BnnflowError(f"{root}: not a bnnflow build folder (no {MANIFEST}); {REBUILD_ELSEWHERE}")
    return Manifest.from_dict(obj, root / MANIFEST)


def is_current_build(root: Path) -> bool:
    """``root`` holds a manifest of this bnnflow's format and version (a sweep may reuse it)."""
    try:
        read_build_manifest(root)
    except BnnflowError:
        return False
    return True


def open_build(path: Path | str) -> BuildDir:
    """The build folder ``path``, its manifest read and its graphs checked to be there."""
    root = Path(path)
    if not (root / INTERMEDIATE_DIR).is_dir():
        raise BnnflowError(f"{root}: not a build folder (no {INTERMEDIATE_DIR}/); create one with `bnnflow build`")
    manifest = read_build_manifest(root)
    _check_outputs(root, manifest, root / MANIFEST)
    return BuildDir(root=root, manifest=manifest)
