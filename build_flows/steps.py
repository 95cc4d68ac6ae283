"""bnnflow's versions of four finn-plus 1.6.1 builder steps, run under FINN's step names.

FINN's builder runs its steps by name; :data:`STEP_REPLACEMENTS` maps four
names to the functions here (the intermediate models keep FINN's file names):

* ``step_streamline`` and the two bit-width steps are copies of FINN's,
  transformation for transformation, with bnnflow's passes
  (:mod:`build_flows.transforms`) put in *between* FINN's own, which FINN's
  ``inject_steps_before``/``inject_steps_after`` cannot express (they add
  whole steps around a step);
* ``step_target_fps_parallelization`` calls FINN's step and then raises SIMD
  where finn-hlslib needs it. It stays a named step rather than a step
  injected after FINN's: FINN's intermediate model of that step, the folding
  report it writes and cost estimation (:mod:`build_flows.cost`) all need the
  folding with the raised SIMD.

Each function names the FINN function it copies or wraps and the sha256 of
that function's source (``inspect.getsource``) it was written against
(:data:`FINN_SOURCES`), and :data:`FINN_STEPS` is finn-plus 1.6.1's
``default_build_dataflow_steps``; ``tests/test_transforms.py`` fails when
either changes, so a finn-plus update is a conscious re-copy.

The work-arounds, by number (as the manifest and README refer to them; 1-3
are in :mod:`build_flows.finn_env`):

4. XNOR accumulators: :class:`~build_flows.transforms.widen_xnor_accumulators.WidenXnorAccumulators`
   between FINN's ``MinimizeAccumulatorWidth`` and ``RoundAndClipThresholds``;
   :class:`~build_flows.transforms.clamp_thresholds.ClampThresholdsToInputRange`
   first (thresholds outside the compared range stop FINN's HW layers on an
   assertion) and
   :class:`~build_flows.transforms.non_binary_weights.NonBinaryMvauWeights`
   after each ``MinimizeWeightBitWidth``.
5. HLS MVAU SIMD: :class:`~build_flows.transforms.hls_mvau_simd.RaiseHlsMvauSimd`
   after FINN's auto-folding, the changed SIMD values written into FINN's
   ``report/auto_folding_config.json``.
6. Streamlining: FINN gets nonzero (-1) padding wrong in three places and
   cannot build a standalone NCHW ``Pad``
   (:mod:`~build_flows.transforms.bipolar_padding`), leaves a mean's 1/N in
   front of TopK (:mod:`~build_flows.transforms.global_pool`), cannot absorb a
   residual sum into thresholds, and its XNOR conversion re-types a forked
   bipolar activation for every reader and fails on the second XNOR reader
   (:mod:`~build_flows.transforms.residual`). Graphs without padding, global
   pooling or residual sums (TFC/SFC/LFC, CNV) come out as from FINN's step.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.infer_datatypes import InferDataTypes

from bnnflow.errors import NotSupported
from bnnflow.files import atomic_write
from build_flows.transforms.clamp_thresholds import ClampThresholdsToInputRange
from build_flows.transforms.errors import UnsupportedGraph
from build_flows.transforms.hls_mvau_simd import RaiseHlsMvauSimd
from build_flows.transforms.non_binary_weights import NonBinaryMvauWeights
from build_flows.transforms.widen_xnor_accumulators import WidenXnorAccumulators

Step = Callable[[ModelWrapper, Any], ModelWrapper]
_F = TypeVar("_F", bound=Callable[..., Any])

#: finn-plus 1.6.1's ``default_build_dataflow_steps``: the step list the copies here were made from.
FINN_STEPS = (
    "step_qonnx_to_finn",
    "step_tidy_up",
    "step_streamline",
    "step_convert_to_hw",
    "step_minimize_bit_width_initial",
    "step_create_dataflow_partition",
    "step_specialize_layers",
    "step_target_fps_parallelization",
    "step_apply_folding_config",
    "step_minimize_bit_width",
    "step_transpose_decomposition",
    "step_generate_estimate_reports",
    "step_assign_ddr_weight_offsets",
    "step_generate_hardware",
    "step_create_stitched_ip",
    "step_measure_rtlsim_performance",
    "step_out_of_context_synthesis",
    "step_prepare_synthesis",
    "step_synthesize_bitfile",
    "step_make_driver",
    "step_deployment_package",
)

#: FINN function (in ``finn.builder.build_dataflow_steps``) -> sha256 of its finn-plus 1.6.1 source,
#: for every FINN function a function here copies or wraps.
FINN_SOURCES: dict[str, str] = {}


def _finn_original(name: str, source_sha256: str) -> Callable[[_F], _F]:
    """Record that the decorated function copies or wraps FINN's ``name`` as of ``source_sha256``."""

    def record(fn: _F) -> _F:
        FINN_SOURCES[name] = source_sha256
        return fn

    return record


# ---------------------------------------------------------------- work-around 4
@_finn_original("_minimize_bit_width", "7cc9c98676fb7ac34e9ea2acd1b09b235b9a0fcf09be70529d42cf41ec6ad947")
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


@_finn_original("step_minimize_bit_width_initial", "a690d31e9c05df3f20f70a6f0892c4ed9308220e5980cf538a7092e466fcfd7d")
def step_minimize_bit_width_initial(model: ModelWrapper, cfg: Any) -> ModelWrapper:
    """FINN's first bit-width pass (right after the conversion to HW layers), XNOR-safe."""
    return _minimize_bit_width(model, cfg)


@_finn_original("step_minimize_bit_width", "0fe73d8ddef3ef8bec18c13e85a28acdfb7c41df85f1363a0738071b26744272")
def step_minimize_bit_width(model: ModelWrapper, cfg: Any) -> ModelWrapper:
    """FINN's bit-width pass after specialization, XNOR-safe.

    FINN's step also runs its C++ simulation here when ``verify_steps`` asks
    for it; bnnflow never does (its simulator checks the build instead).
    """
    return _minimize_bit_width(model, cfg)


# ---------------------------------------------------------------- work-around 5
@_finn_original("step_target_fps_parallelization", "593af0665b67e4b8995db60ebd43aa7452eac545ec069161b8c0907a20e79238")
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
            ", ".join(f"{n} {a} -> {b}" for n, a, b in fix.raised),
        )
    return model


# ---------------------------------------------------------------- work-around 6
@_finn_original("step_streamline", "bde4eaa236e2a20cb3801a84933c4963597ee1f848b753d8c0a6beb4f81db18e")
def step_streamline(model: ModelWrapper, cfg: Any) -> ModelWrapper:
    """FINN's ``step_streamline`` with the rewrites of :mod:`build_flows.transforms.bipolar_padding`,
    :mod:`~build_flows.transforms.global_pool` and :mod:`~build_flows.transforms.residual`
    (work-around 6)."""
    try:
        return _streamline(model, cfg)
    except UnsupportedGraph as exc:
        raise NotSupported(exc.what) from None


def _streamline(model: ModelWrapper, cfg: Any) -> ModelWrapper:
    import finn.transformation.streamline.absorb as absorb
    from finn.builder.build_dataflow_config import VerificationStepType
    from finn.builder.build_dataflow_steps import verify_step
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.reorder import MakeMaxPoolNHWC
    from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul

    from build_flows.transforms import bipolar_padding as bp
    from build_flows.transforms.global_pool import LowerGlobalAveragePoolBeforeTopK, ReduceMeanToGlobalAveragePool
    from build_flows.transforms.residual import (
        BinaryResidualToPopcountSum,
        MergeTwinThresholds,
        ResidualJoinToNHWC,
        SplitBipolarThresholdForks,
    )

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
STEP_REPLACEMENTS: dict[str, Step] = {
    "step_streamline": step_streamline,
    "step_minimize_bit_width_initial": step_minimize_bit_width_initial,
    "step_minimize_bit_width": step_minimize_bit_width,
    "step_target_fps_parallelization": step_target_fps_parallelization,
}
