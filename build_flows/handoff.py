"""``DIR/handoff/``: what a Vivado machine needs to continue a build with FINN's own builder.

Every ``bnnflow build`` stops (without Vivado) or pauses (with it) after the
last step that needs no Xilinx tool, ``step_hw_codegen``, and writes there:

* ``intermediate_models/step_hw_codegen.onnx``: the model at that step, with
  every attribute that points into ``DIR/codegen`` emptied (FINN's value for
  "not generated yet"), so FINN's ``PrepareIP`` writes the code again from the
  model on the Vivado machine instead of reading a folder that is not there
  (the code generation is deterministic; ``codegen/`` is not copied);
* ``dataflow_config.json``: the ``DataflowBuildConfig`` of the build
  (``to_dict()``), with ``steps`` = that step plus FINN's remaining steps,
  ``start_step`` = the first of them, the outputs of a bitfile build, and
  paths relative to this folder; it loads with finn-plus's
  ``DataflowBuildConfig.construct_from`` (what ``finn build`` uses);
* ``folding_config.json``: the folding that was applied (FINN's report), and
  ``fifo_depths.json`` where the build was given one;
* ``handoff.json``: every step that ran, bnnflow's replacements of FINN steps
  by name and module (all of them run before the hand-off point, so the
  continuation needs FINN alone), FIFO options, the command;
* ``README.md``: the command for the Vivado machine.

``finn build`` resolves ``output_dir`` against the config's folder, so the
bitfile, driver and deployment package land in this folder.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bnnflow.files import atomic_path, atomic_write

HANDOFF_DIR = "handoff"
CONFIG_FILE = "dataflow_config.json"
RECORD_FILE = "handoff.json"
README_FILE = "README.md"
FOLDING_FILE = "folding_config.json"
DEPTHS_FILE = "fifo_depths.json"
MODELS_DIR = "intermediate_models"


def _model_without_codegen(src: Path, dst: Path, codegen_dir: Path) -> int:
    """Copy the FINN model ``src`` to ``dst`` with every string attribute naming ``codegen_dir`` emptied.

    Returns how many attributes were emptied.
    """
    import onnx

    model = onnx.load(str(src))
    prefix = str(codegen_dir).encode()
    emptied = 0
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.STRING and attr.s.startswith(prefix):
                attr.s = b""
                emptied += 1
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return emptied


def _step_record(name: str, fn: Callable[..., Any]) -> dict[str, Any]:
    """Name, implementing function and first doc line of one step that ran."""
    return {
        "name": name,
        "function": f"{fn.__module__}.{fn.__qualname__}",
        "replaces_finn_step": not fn.__module__.startswith("finn."),
        "doc": (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
    }


def finn_command(handoff: Path, last_step: str) -> str:
    """The shell command that continues the build with finn-plus's own CLI on a Vivado machine."""
    return f"cd {handoff} && finn build {CONFIG_FILE} {MODELS_DIR}/{last_step}.onnx --batch"


def write_handoff(
    build_dir: Path,
    cfg: Any,
    last_step: str,
    next_steps: list[str],
    steps_run: dict[str, Callable[..., Any]],
    folding_report: Path,
    fifo: dict[str, Any],
    depths_file: Path | None,
) -> Path:
    """Write ``build_dir/handoff`` (see the module docstring) and return it.

    ``cfg`` is the ``DataflowBuildConfig`` a bitfile build of this design
    runs with; ``last_step`` the last step that ran (its model is in
    ``build_dir/intermediate_models``); ``next_steps`` FINN's steps from
    there to the deployment package; ``steps_run`` every step that ran, by
    name, with the function that ran it.
    """
    out = build_dir / HANDOFF_DIR
    (out / MODELS_DIR).mkdir(parents=True, exist_ok=True)
    model = Path(MODELS_DIR) / f"{last_step}.onnx"
    emptied = _model_without_codegen(build_dir / model, out / model, build_dir / "codegen")
    shutil.copyfile(folding_report, out / FOLDING_FILE)
    if depths_file is not None:
        shutil.copyfile(depths_file, out / DEPTHS_FILE)
    hand = dataclasses.replace(
        cfg,
        output_dir=".",
        model_path=model,
        config_path=None,
        steps=[last_step, *next_steps],
        start_step=next_steps[0],
        stop_step=None,
        folding_config_file=Path(FOLDING_FILE),
        fifo_config_file=Path(DEPTHS_FILE) if depths_file is not None else None,
    )
    atomic_write(out / CONFIG_FILE, json.dumps(hand.to_dict(), indent=2) + "\n")
    command = finn_command(out, last_step)
    from importlib.metadata import version

    record = {
        "format": "bnnflow-handoff",
        "version": 1,
        "build": str(build_dir),
        "finn_plus": version("finn-plus"),
        "model": str(model),
        "codegen_paths_emptied": emptied,
        "config": CONFIG_FILE,
        "folding": FOLDING_FILE,
        "fifo": {**fifo, "depths_file": DEPTHS_FILE if depths_file else None},
        "last_vivado_free_step": last_step,
        "start_step": next_steps[0],
        "steps_to_run": next_steps,
        "steps_run": [_step_record(name, fn) for name, fn in steps_run.items()],
        "command": command,
    }
    atomic_write(out / RECORD_FILE, json.dumps(record, indent=2) + "\n")
    atomic_write(out / README_FILE, _readme(record))
    for f in out.rglob("*"):  # atomic writes leave mkstemp's 0600; the folder is meant to be handed on
        if f.is_file():
            f.chmod(0o644)
    return out


def _readme(record: dict[str, Any]) -> str:
    replaced = [s for s in record["steps_run"] if s["replaces_finn_step"]]
    lines = [
        "# Hand-off to a Vivado machine",
        "",
        f"This folder continues the bnnflow build `{record['build']}` with finn-plus {record['finn_plus']}'s "
        f"own builder from `{record['start_step']}`, on a machine with Vivado and Vitis HLS "
        "(run `bnnflow doctor` there first):",
        "",
        "```sh",
        record["command"],
        "```",
        "",
        "`finn build` installs FINN's dependencies (finn-hlslib, board files) on its first start (it "
        "needs the network). The bitfile and `.hwh` land in `bitfile/`, the PYNQ driver in `driver/`, the "
        "deployment package in `deploy/` (to copy to the board: `cd deploy && zip -r ../deploy.zip .`), "
        "FINN's reports in `report/`, all inside this folder.",
        "",
        f"- `{record['model']}`: the model after `{record['last_vivado_free_step']}` (the last step that "
        "needs no Xilinx tool); its code-generation paths are emptied, FINN writes the code again.",
        f"- `{record['config']}`: the DataflowBuildConfig (loads with "
        "`DataflowBuildConfig.construct_from`); steps: " + ", ".join(record["steps_to_run"]) + ".",
        f"- `{record['folding']}`: the folding that was applied.",
        f"- FIFO sizing: {json.dumps(record['fifo'])}.",
        "- bnnflow ran its own version of these FINN steps, all before the hand-off point (see "
        "`handoff.json`): " + ", ".join(f"`{s['name']}` ({s['function']})" for s in replaced) + ".",
        "",
    ]
    return "\n".join(lines)
