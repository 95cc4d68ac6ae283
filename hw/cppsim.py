"""FINN's own C++ simulation of every HLS layer of a build, compared with the simulator.

The HLS layers (``MVAU_hls``, ``Pool_hls``, ``LabelSelect_hls``, ...) are
otherwise checked against FINN's Python model of them only. Here FINN's
``PrepareCppSim`` and ``CompileCppSim`` generate and compile each node's C++
(finn-hlslib's kernels on Vitis HLS's ``ap_int``/``hls::stream`` headers) and
FINN's ``cppsim`` execution runs it on the node's input tensor as the
simulator computes it on real test images; its output is compared element by
element with the simulator's. It needs what bnnflow cannot ship: Vitis HLS's
headers and C simulation libraries (``XILINX_HLS``) and finn-hlslib in
``FINN_DEPS``. Without them the check stops before any work, in one line
naming what is missing (:func:`missing_requirements`, the same checks as
``bnnflow doctor``).

The build folder is not changed: the graph is copied and FINN writes its
C++ into a temporary folder.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow import validate
from bnnflow.errors import BnnflowError, brief


@dataclass
class NodeResult:
    """One HLS node's verdict: elements compared and how many differ."""

    node: str
    op_type: str
    elements: int
    mismatches: int
    run_s: float

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def missing_requirements() -> list[str]:
    """``name: detail`` of each requirement of FINN's C++ simulation that is not met (none: it can run)."""
    from build_flows import doctor

    settings = doctor.finn_settings()
    deps = doctor.finn_dependencies(settings)
    checks = [
        doctor.check_vitis_hls(None),
        doctor.check_hls_csim(),
        doctor.check_gxx(),
        doctor.check_finn_hlslib(settings, deps),
    ]
    return [f"{c.name} ({c.status}: {c.detail})" for c in checks if not c.ok]


def require() -> None:
    """One line naming what FINN's C++ simulation lacks here, before any work."""
    missing = missing_requirements()
    if missing:
        raise BnnflowError(
            "--cppsim runs FINN's C++ simulation of the HLS layers, which needs Vitis HLS and "
            f"finn-hlslib; not met here: {'; '.join(missing)}. `bnnflow doctor` lists them all"
        )


def compile_hls_nodes(accel: Path, work: Path) -> Any:
    """A copy of the accelerator graph whose HLS nodes FINN has generated and compiled C++ for (in ``work``)."""
    from finn.transformation.fpgadataflow.compile_cppsim import CompileCppSim
    from finn.transformation.fpgadataflow.prepare_cppsim import PrepareCppSim
    from finn.transformation.fpgadataflow.set_exec_mode import SetExecMode
    from qonnx.core.modelwrapper import ModelWrapper

    from build_flows import finn_env

    model = ModelWrapper(str(accel))
    for node in model.graph.node:  # FINN generates into fresh folders under FINN_BUILD_DIR, never the build's
        for attr in node.attribute:
            if attr.name in ("code_gen_dir_cppsim", "executable_path"):
                attr.s = b""
    finn_env.prepare(work)
    try:
        model = model.transform(PrepareCppSim(num_workers=1))
        model = model.transform(CompileCppSim(num_workers=1))
    except Exception as exc:  # FINN raises plain Exceptions for a failed compile, with the compiler's output
        raise BnnflowError(
            f"{accel}: FINN's C++ simulation of the HLS layers did not compile ({brief(exc)}); "
            "check the Vitis HLS and finn-hlslib lines of `bnnflow doctor`"
        ) from None
    return model.transform(SetExecMode("cppsim"))


def run_node(model: Any, node: Any, tensors: dict[str, np.ndarray]) -> NodeResult:
    """FINN's cppsim execution of one HLS node on the simulator's input tensors, against its output."""
    from qonnx.custom_op.registry import getCustomOp

    context: dict[str, np.ndarray] = {}
    for name in node.input:
        init = model.get_initializer(name)
        context[name] = init if init is not None else tensors[name]
    t0 = time.time()
    try:
        getCustomOp(node).execute_node(context, model.graph)
    except Exception as exc:  # the compiled model exits non-zero, or writes no output
        raise BnnflowError(f"FINN's C++ simulation of node {node.name} failed ({brief(exc)})") from None
    got, want = context[node.output[0]], tensors[node.output[0]]
    if got.size != want.size:
        raise BnnflowError(
            f"FINN's C++ simulation of node {node.name} gave {got.size} elements, the simulator {want.size}"
        )
    mismatches = int(np.count_nonzero(got.reshape(want.shape) != want))
    return NodeResult(node.name, node.op_type, int(want.size), mismatches, round(time.time() - t0, 3))


def cppsim_build(
    build_dir: Path | str, data_dir: Path | str | None = None, limit: int = 3, from_artifacts: bool = False
) -> dict[str, Any]:
    """Every HLS node of a build in FINN's C++ simulation against the simulator, on its data set's first
    ``limit`` test images."""
    from bnnflow import data
    from hw import run, verify

    validate.count(limit, "--limit")
    require()
    ld = run.load(build_dir, from_artifacts)
    dataset = verify.dataset_of(ld.build)
    if dataset is None:
        raise BnnflowError(
            f"{ld.build.root}: manifest.json names no data set or checkpoint, so there are no "
            "test images to run the HLS layers on"
        )
    split = data.load(dataset, "test", data_dir).subset(limit)
    x = verify.images_as_input(split.images, ld.graph.input_dtype)
    _, tensors = ld.sim.run(x, intermediates=True)
    with tempfile.TemporaryDirectory(prefix="bnnflow-cppsim-") as work:
        t0 = time.time()
        model = compile_hls_nodes(ld.build.accel, Path(work))
        compile_s = round(time.time() - t0, 1)
        results = []
        for node in model.graph.node:
            if not node.op_type.endswith("_hls"):
                continue
            absent = [t for t in (*node.input, node.output[0]) if t not in tensors and model.get_initializer(t) is None]
            if absent:
                raise BnnflowError(f"{ld.build.accel}: the simulator has no tensor {absent[0]} of node {node.name}")
            results.append(run_node(model, node, tensors))
    return {
        "build": str(ld.build.root),
        "dataset": dataset,
        "images": len(split),
        "compile_s": compile_s,
        "nodes": [r.as_dict() for r in results],
        "ok": all(r.ok for r in results),
    }
