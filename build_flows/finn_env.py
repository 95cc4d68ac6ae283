"""The one place where bnnflow prepares finn-plus to run in-process (and its work-arounds).

FINN's builder is meant to be started by the ``finn`` CLI inside a container
with Vivado. bnnflow calls its Python API instead, so it does what the CLI's
boot would do:

* FINN settings: ``initialize_dummy_settings()`` with ``FINN_BUILD_DIR``
  pointing at a folder of the build, so that FINN's code generation
  (``make_build_dir``) writes the generated code there and not in ``/tmp``.

and, only where Vivado is absent, three work-arounds (finn-plus 1.6.1):

1. ``finn.builder.build_dataflow_steps`` runs ``from finn.xsi import SimEngine``
   at import, which asks for Vivado's XSI simulator and raises
   ``OSError: XILINX_VIVADO environment variable not set``. Setting
   ``finn.xsi.SimEngine = None`` before that import lets the module load; no
   step we run without Vivado uses the simulator.
2. ``exit_buildflow`` writes ``report/metadata_builder.json`` with
   ``Path(get_vivado_root()).name`` after all reports are written, and
   ``get_vivado_root()`` raises without ``XILINX_VIVADO``. A placeholder path
   naming a version (``/opt/Xilinx/Vivado/<ver>``, which does not exist and is
   never executed) is set for that. :func:`vivado_available` checks for the
   ``vivado`` binary, so the placeholder never counts as an installation.
3. The builder redirects ``sys.stdout``/``sys.stderr`` for good and points the
   root logger at its log file; :func:`quiet_builder` restores both afterwards
   (this one applies with or without Vivado).

and one correction of FINN's bit-width minimization (with or without Vivado):

4. In XNOR mode, ``MVAU.minimize_accumulator_width`` sizes the accumulator
   for the +-1 x {0,1} products of the bipolar weights (range about
   [-MW/2, MW/2] per column), but the hardware (finn-hlslib's ``XnorMul``)
   accumulates a popcount in [0, MW]. For MW = 576 it picks INT10 (up to 511)
   where the popcount reaches 576; RoundAndClipThresholds then clips the
   thresholds to that narrow range, and the HLS accumulator (finn-hlslib
   accumulates in the threshold type, which is at least as wide as
   ``accDataType``) can wrap. :class:`WidenXnorAccumulators` widens every XNOR
   accumulator to cover [0, MW] between FINN's MinimizeAccumulatorWidth and
   RoundAndClipThresholds; :data:`STEP_REPLACEMENTS` puts it into FINN's two
   bit-width steps (same names, same transformations in FINN's order, two
   added). The other one,
   :class:`~build_flows.transforms.clamp_thresholds.ClampThresholdsToInputRange`,
   runs first: thresholds outside the range of the values they are compared
   with (channels that always or never fire) stop FINN's HW layers on an
   assertion, and clamping them to that range changes no output.
5. FINN's auto-folding (``SetFolding``) can leave an HLS MVAU with
   SIMD < MW / 1024, which finn-hlslib cannot build: code generation then
   stops with an assertion (a CNV at 300 FPS, MW = 2304 at SIMD 2).
   bnnflow's ``step_target_fps_parallelization`` runs FINN's step and then
   :class:`RaiseHlsMvauSimd`, and rewrites the changed SIMD values into
   FINN's ``report/auto_folding_config.json``. Folding files are checked for
   the same rule before FINN runs (:func:`build_flows.folding.check_folding`).
6. FINN's streamlining gets nonzero (-1) padding wrong in three places and
   cannot build a standalone NCHW ``Pad`` (:mod:`build_flows.bipolar_padding`),
   leaves a mean's 1/N in front of TopK (:mod:`build_flows.global_pool`),
   cannot absorb a residual sum into thresholds, and its XNOR conversion
   re-types a forked bipolar activation for every reader and fails on the
   second XNOR reader (:mod:`build_flows.residual`). bnnflow's
   ``step_streamline`` is FINN's, transformation for transformation, with
   those modules' exact rewrites put in around FINN's own, and a check that
   every pad ended as FINN's zero padding. Graphs without padding, global
   pooling or residual sums (TFC/SFC/LFC, CNV) come out as from FINN's step.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.util.basic import roundup_to_integer_multiple

from bnnflow.files import atomic_write
from build_flows.transforms.clamp_thresholds import ClampThresholdsToInputRange
from build_flows.transforms.non_binary_weights import NonBinaryMvauWeights

#: Placeholder for XILINX_VIVADO where Vivado is absent (work-around 2); never executed.
VIVADO_PLACEHOLDER = "/opt/Xilinx/Vivado/2024.2"


def _tool_bin(root_env: str, name: str) -> Path | None:
    """The Xilinx tool ``name`` under ``$root_env/bin``, else on PATH, else None."""
    root = os.environ.get(root_env)
    if root and (Path(root) / "bin" / name).is_file():
        return Path(root) / "bin" / name
    found = shutil.which(name)
    return Path(found) if found else None


def vivado_available() -> bool:
    """True where both Vivado and Vitis HLS can be run (sourced settings or on PATH).

    The IP generation, FIFO sizing, stitched IP, synthesis and bitfile steps
    need both; everything up to code generation needs neither.
    """
    return (_tool_bin("XILINX_VIVADO", "vivado") is not None
            and _tool_bin("XILINX_HLS", "vitis_hls") is not None)


def tool_versions() -> dict[str, str | None]:
    """Versions of the tools a build used, for the manifest."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for dist in ("finn-plus", "qonnx", "brevitas", "onnx", "torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    vivado = _tool_bin("XILINX_VIVADO", "vivado")
    out["vivado"] = str(vivado.parent.parent) if vivado and _tool_bin("XILINX_HLS", "vitis_hls") else None
    return out


def prepare(finn_build_dir: Path) -> None:
    """Make FINN's builder importable and point its generated code at ``finn_build_dir``.

    Call before importing ``finn.builder``; safe to call once per build.
    """
    finn_build_dir.mkdir(parents=True, exist_ok=True)
    os.environ["FINN_BUILD_DIR"] = str(finn_build_dir.absolute())
    if not vivado_available():
        if "finn.builder.build_dataflow_steps" not in sys.modules:
            import finn.xsi

            finn.xsi.SimEngine = None  # work-around 1
        if not os.environ.get("XILINX_VIVADO"):
            os.environ["XILINX_VIVADO"] = VIVADO_PLACEHOLDER  # work-around 2
    from finn.util import settings

    settings.initialize_dummy_settings()


@contextlib.contextmanager
def quiet_builder() -> Iterator[io.StringIO]:
    """Run FINN's builder with its console output captured (it stays in its log file).

    Restores ``sys.stdout``/``sys.stderr`` and the root logger's handlers that
    ``build_dataflow_cfg`` replaces (work-around 3), closing its log file.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield buf
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)
        logging.captureWarnings(False)


# ---------------------------------------------------------------- work-around 4
def popcount_datatype(mw: int) -> DataType:
    """The narrowest FINN datatype holding every popcount of an ``mw``-wide XNOR dot product."""
    return DataType[f"UINT{max(1, math.ceil(math.log2(mw + 1)))}"]


class WidenXnorAccumulators(Transformation):
    """Widen the ``accDataType`` of XNOR-mode MVAUs to cover the popcount range [0, MW].

    Run after FINN's ``MinimizeAccumulatorWidth`` and before its
    ``RoundAndClipThresholds`` (work-around 4). Exact: clipping thresholds to
    [0, 2^b] with 2^b > MW changes no comparison with a popcount in [0, MW].
    A node without activation also gets the new type as its output type,
    rounded up to whole bytes when it is the last node, as FINN does.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        from finn.util.fpgadataflow import is_fpgadataflow_node

        for node in model.graph.node:
            if not node.op_type.startswith("MVAU") or not is_fpgadataflow_node(node):
                continue
            inst = getCustomOp(node)
            if not inst.get_nodeattr("binaryXnorMode"):
                continue
            mw = int(inst.get_nodeattr("MW"))
            acc = DataType[inst.get_nodeattr("accDataType")]
            if acc.min() <= 0 and acc.max() >= mw:
                continue
            adt = popcount_datatype(mw)
            if inst.get_nodeattr("noActivation"):
                if model.find_direct_successors(node) is None:
                    adt = DataType[f"UINT{roundup_to_integer_multiple(adt.bitwidth(), 8)}"]
                inst.set_nodeattr("outputDataType", adt.name)
            inst.set_nodeattr("accDataType", adt.name)
        return model.transform(InferDataTypes()), False


def _minimize_bit_width(model: ModelWrapper, cfg: Any) -> ModelWrapper:
    """FINN 1.6.1's ``_minimize_bit_width`` (build_dataflow_steps) with ClampThresholdsToInputRange in
    front, NonBinaryMvauWeights after each MinimizeWeightBitWidth and WidenXnorAccumulators added
    (work-around 4)."""
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds

    model = model.transform(ClampThresholdsToInputRange(), apply_to_subgraphs=True)
    if cfg.minimize_bit_width:
        model = model.transform(MinimizeWeightBitWidth(), apply_to_subgraphs=True)
        model = model.transform(NonBinaryMvauWeights(), apply_to_subgraphs=True)
        model = model.transform(MinimizeAccumulatorWidth(), apply_to_subgraphs=True)
    model = model.transform(WidenXnorAccumulators(), apply_to_subgraphs=True)
    model = model.transform(InferDataTypes(), apply_to_subgraphs=True)
    model = model.transform(RoundAndClipThresholds(), apply_to_subgraphs=True)
    model = model.transform(InferDataTypes(), apply_to_subgraphs=True)
    if cfg.minimize_bit_width:
        model = model.transform(MinimizeWeightBitWidth(), apply_to_subgraphs=True)
        model = model.transform(NonBinaryMvauWeights(), apply_to_subgraphs=True)
        model = model.transform(InferDataTypes(), apply_to_subgraphs=True)
    return model


def step_minimize_bit_width_initial(model: ModelWrapper, cfg: Any) -> ModelWrapper:
    """FINN's first bit-width pass (right after the conversion to HW layers), XNOR-safe."""
    return _minimize_bit_width(model, cfg)


def step_minimize_bit_width(model: ModelWrapper, cfg: Any) -> ModelWrapper:
    """FINN's bit-width pass after specialization, XNOR-safe.

    FINN's step also runs its C++ simulation here when ``verify_steps`` asks
    for it; bnnflow never does (its simulator checks the build instead).
    """
    return _minimize_bit_width(model, cfg)


# ---------------------------------------------------------------- work-around 5
#: finn-hlslib's HLS MVAU needs SIMD >= MW / HLS_MVAU_MAX_SF (FINN asserts it at code generation).
HLS_MVAU_MAX_SF = 1024


def hls_simd_fits(mw: int, simd: int) -> bool:
    """Whether finn-hlslib can build an HLS MVAU of width ``mw`` at ``simd``."""
    return simd * HLS_MVAU_MAX_SF >= mw


def min_hls_simd(mw: int) -> int:
    """The smallest SIMD that divides ``mw`` and that finn-hlslib can build."""
    return next(d for d in range(1, mw + 1) if mw % d == 0 and hls_simd_fits(mw, d))


class RaiseHlsMvauSimd(Transformation):
    """Raise the SIMD of every HLS MVAU below finn-hlslib's minimum to :func:`min_hls_simd`.

    More SIMD only shortens the layer's cycles, so a folding that met its
    target still meets it. ``raised`` lists (node, old SIMD, new SIMD).
    """

    def __init__(self) -> None:
        super().__init__()
        self.raised: list[tuple[str, int, int]] = []

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            if node.op_type != "MVAU_hls":
                continue
            inst = getCustomOp(node)
            mw, simd = int(inst.get_nodeattr("MW")), int(inst.get_nodeattr("SIMD"))
            if not hls_simd_fits(mw, simd):
                new = min_hls_simd(mw)
                inst.set_nodeattr("SIMD", new)
                self.raised.append((node.name, simd, new))
        return model, False


def step_target_fps_parallelization(model: ModelWrapper, cfg: Any) -> ModelWrapper:
    """FINN's auto-folding for the target FPS, then SIMD raised where finn-hlslib needs it."""
    from finn.builder.build_dataflow_steps import step_target_fps_parallelization as finn_step

    model = finn_step(model, cfg)
    if cfg._resolve_cycles_per_frame() is None:
        return model
    fix = RaiseHlsMvauSimd()
    model = model.transform(fix)
    if fix.raised:
        report = Path(cfg.output_dir) / "report" / "auto_folding_config.json"
        folding = json.loads(report.read_text())
        for name, _, new in fix.raised:
            folding.setdefault(name, {})["SIMD"] = new
        atomic_write(report, json.dumps(folding, indent=2))
        logging.getLogger(__name__).warning(
            "raised SIMD to finn-hlslib's minimum (MW / 1024): %s",
            ", ".join(f"{n} {a} -> {b}" for n, a, b in fix.raised))
    return model


# ---------------------------------------------------------------- work-around 6
def step_streamline(model: ModelWrapper, cfg: Any) -> ModelWrapper:
    """FINN's ``step_streamline`` with the rewrites of :mod:`build_flows.bipolar_padding`,
    :mod:`build_flows.global_pool` and :mod:`build_flows.residual` (work-around 6)."""
    import finn.transformation.streamline.absorb as absorb
    from finn.builder.build_dataflow_config import VerificationStepType
    from finn.builder.build_dataflow_steps import verify_step
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.reorder import MakeMaxPoolNHWC
    from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul

    from build_flows import bipolar_padding as bp
    from build_flows.global_pool import LowerGlobalAveragePoolBeforeTopK, ReduceMeanToGlobalAveragePool
    from build_flows.residual import (BinaryResidualToPopcountSum, MergeTwinThresholds, ResidualJoinToNHWC,
                                      SplitBipolarThresholdForks)

    model = model.transform(ReduceMeanToGlobalAveragePool())
    model = model.transform(BinaryResidualToPopcountSum())
    model = model.transform(absorb.AbsorbScalarBiasIntoMultiThreshold())
    model = model.transform(bp.MoveScalarLinearPastPad())
    model = model.transform(bp.ZeroPadThresholdOutput())
    model = model.transform(Streamline())
    if len(model.get_nodes_by_op_type("Conv")) > 0:
        model = model.transform(LowerConvsToMatMul())
        model = model.transform(bp.AbsorbPadIntoIm2Col())
        model = model.transform(MakeMaxPoolNHWC())
        model = model.transform(absorb.AbsorbTransposeIntoMultiThreshold())
        model = model.transform(MakeMaxPoolNHWC())
        model = model.transform(absorb.AbsorbConsecutiveTransposes())
        bp.refuse_zero_padded_bipolar(model)
    model = model.transform(SplitBipolarThresholdForks())
    model = model.transform(ConvertBipolarMatMulToXnorPopcount())
    model = model.transform(bp.BipolarPadToBinary())
    model = model.transform(MergeTwinThresholds())
    model = model.transform(Streamline())
    model = model.transform(ResidualJoinToNHWC())
    model = model.transform(absorb.AbsorbConsecutiveTransposes())
    model = model.transform(absorb.AbsorbTransposeIntoMultiThreshold())
    model = model.transform(MakeMaxPoolNHWC())
    model = model.transform(absorb.AbsorbConsecutiveTransposes())
    model = model.transform(absorb.AbsorbScalarMulAddIntoTopK())
    model = model.transform(LowerGlobalAveragePoolBeforeTopK())
    model = model.transform(InferDataLayouts())
    model = model.transform(RemoveUnusedTensors())
    bp.check_padding(model)
    if VerificationStepType.STREAMLINED_PYTHON in cfg._resolve_verification_steps():
        verify_step(model, cfg, "streamlined_python", need_parent=False)
    return model


#: FINN builder steps bnnflow runs in its own version, by FINN's step name (the
#: intermediate models keep FINN's file names).
STEP_REPLACEMENTS: dict[str, Callable[[ModelWrapper, Any], ModelWrapper]] = {
    "step_streamline": step_streamline,
    "step_minimize_bit_width_initial": step_minimize_bit_width_initial,
    "step_minimize_bit_width": step_minimize_bit_width,
    "step_target_fps_parallelization": step_target_fps_parallelization,
}
