"""Any W1A1 net, not only the zoo's: the threshold clamp pass, FC layers after feature maps, random nets.

The pass is tested as FINN tests its own: a small hand-made graph executed
with ``execute_onnx`` before and after. The random nets come from
:mod:`conformance.nets` (Brevitas, exported with ``export_qonnx``) and are
built, simulated on real images and compared with qonnx and FINN by
:func:`conformance.run.run_case`; ``benchmarks/conformance_suite.py`` runs
hundreds of them.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from build_flows.transforms.clamp_thresholds import ClampThresholdsToInputRange
from conformance.nets import random_spec
from conformance.run import run_case

FPGA_DOMAIN = "finn.custom_op.fpgadataflow"


def _xnor_mvau(thresholds: np.ndarray, mw: int = 6) -> ModelWrapper:
    """One XNOR-mode MVAU: binary input and weights, MH = len(thresholds) channels, bipolar output."""
    mh = thresholds.shape[0]
    inp = helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, mw])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, mh])
    node = helper.make_node(
        "MVAU",
        ["inp", "weights", "thresh"],
        ["out"],
        domain=FPGA_DOMAIN,
        backend="fpgadataflow",
        MW=mw,
        MH=mh,
        SIMD=1,
        PE=1,
        inputDataType="BINARY",
        weightDataType="BINARY",
        outputDataType="BIPOLAR",
        ActVal=0,
        binaryXnorMode=1,
        noActivation=0,
        numInputVectors=[1],
    )
    model = ModelWrapper(helper.make_model(helper.make_graph([node], "xnor_mvau", [inp], [out])))
    model.set_tensor_datatype("inp", DataType["BINARY"])
    model.set_tensor_datatype("weights", DataType["BINARY"])
    model.set_tensor_datatype("out", DataType["BIPOLAR"])
    rng = np.random.default_rng(0)
    model.set_initializer("weights", rng.integers(0, 2, (mw, mh)).astype(np.float32))
    model.set_initializer("thresh", thresholds.astype(np.float32))
    return model


def _thresholding(thresholds: np.ndarray, idt: str) -> ModelWrapper:
    """One Thresholding node on ``idt`` input, C = len(thresholds) channels, several steps each."""
    c, steps = thresholds.shape
    inp = helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, c])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, c])
    odt = f"UINT{max(1, int(np.ceil(np.log2(steps + 1))))}"
    node = helper.make_node(
        "Thresholding",
        ["inp", "thresh"],
        ["out"],
        domain=FPGA_DOMAIN,
        backend="fpgadataflow",
        NumChannels=c,
        PE=1,
        numSteps=steps,
        inputDataType=idt,
        weightDataType="INT32",
        outputDataType=odt,
        ActVal=0,
        numInputVectors=[1],
    )
    model = ModelWrapper(helper.make_model(helper.make_graph([node], "thresholding", [inp], [out])))
    model.set_tensor_datatype("inp", DataType[idt])
    model.set_tensor_datatype("out", DataType[odt])
    model.set_initializer("thresh", thresholds.astype(np.float32))
    return model


def _outputs(model: ModelWrapper, inputs: np.ndarray) -> np.ndarray:
    from finn.core.onnx_exec import execute_onnx

    return np.stack([execute_onnx(model, {"inp": x[None].astype(np.float32)})["out"][0] for x in inputs])


def test_clamp_keeps_xnor_mvau_outputs_and_satisfies_finn() -> None:
    """Thresholds -5, -0.5, 0, 2.5, 7 and 13 against popcounts 0..6: clamped to [0, 7], outputs unchanged."""
    thr = np.array([[-5.0], [-0.5], [0.0], [2.5], [7.0], [13.0]])
    model = _xnor_mvau(thr)
    with pytest.raises(AssertionError):  # FINN refuses negative XNOR thresholds (the build's failure)
        getCustomOp(model.graph.node[0]).get_hw_compatible_threshold_tensor(thr)
    inputs = np.array(list(itertools.product((0, 1), repeat=6)))
    before = _outputs(model, inputs)
    after_model = model.transform(ClampThresholdsToInputRange())
    new = after_model.get_initializer("thresh")
    assert new.ravel().tolist() == [0, 0, 0, 3, 7, 7]
    np.testing.assert_array_equal(_outputs(after_model, inputs), before)
    getCustomOp(after_model.graph.node[0]).get_hw_compatible_threshold_tensor(new)
    assert len(set(before[:, 0])) == 1 and len(set(before[:, 5])) == 1  # always / never fire


def test_clamp_keeps_unsigned_thresholding_outputs() -> None:
    """A Thresholding node on UINT4 input (an input quantizer without the 2x-1 front) with thresholds
    below 0 and above 15: clamped to [0, 16], every output unchanged."""
    thr = np.array([[-9.0, -1.0, 3.0], [-2.0, 7.5, 40.0]])
    model = _thresholding(thr, "UINT4")
    with pytest.raises(AssertionError):
        getCustomOp(model.graph.node[0]).get_hw_compatible_threshold_tensor(thr)
    inputs = np.array([[v, v] for v in range(16)])
    before = _outputs(model, inputs)
    clamped = model.transform(ClampThresholdsToInputRange())
    assert clamped.get_initializer("thresh").tolist() == [[0, 0, 3], [0, 8, 16]]
    np.testing.assert_array_equal(_outputs(clamped, inputs), before)


def test_clamp_leaves_in_range_and_non_xnor_nodes_alone() -> None:
    thr = np.array([[0.0], [3.0], [7.0]])
    model = _xnor_mvau(thr)
    getCustomOp(model.graph.node[0]).set_nodeattr("binaryXnorMode", 0)
    wild = np.array([[-50.0], [3.0], [90.0]])
    model.set_initializer("thresh", wild)
    assert np.array_equal(model.transform(ClampThresholdsToInputRange()).get_initializer("thresh"), wild)
    signed = _thresholding(np.array([[-3.0, 5.0]]), "INT4")  # in range for INT4 [-8, 7]
    assert signed.transform(ClampThresholdsToInputRange()).get_initializer("thresh").tolist() == [[-3, 5]]


# Random nets chosen for what each exercises (see conformance.nets.random_spec):
#  2: FC-only on 8-bit input without the 2x-1 front (input thresholds below 0: defect 1)
#  0: "wild" BatchNorm, XNOR thresholds outside [0, MW] (defect 1), -1 padding, pool 3, FC after a map
#  7: a 1x1 conv feeding an FC layer on a 20x20 map (defect 2: MW = H*W*C, one vector per image)
#  1: 1-bit input with the front, 5x5 kernels, padding 2, prime widths, 2 classes
#  3: 12 classes, a 1-channel conv, 200000 FPS (full unfolding)
# 17: a 1-output conv on 8-bit input whose 3 weights are all +1 (typed BINARY by FINN: NonBinaryMvauWeights)
# 125: a conv with one input and one output channel (FINN makes it a depthwise VVAU), zero-padding the
#      8-bit input
CASES = (2, 0, 7, 1, 3, 17, 125)


@pytest.mark.parametrize("seed", CASES)
def test_random_net_is_bit_exact(seed: int, tmp_path: Path) -> None:
    r = run_case(seed, tmp_path / "case")
    assert r.outcome == "exact", r.line()
    assert r.tensors_compared >= sum(layer.kind != "pool" for layer in random_spec(seed).layers)


def test_zero_padded_binary_conv_is_refused_in_one_line(tmp_path: Path) -> None:
    """Seed 45 zero-pads binary activations (QuantConv2d(padding=1), as a user writes it first)."""
    r = run_case(45, tmp_path / "case")
    assert r.outcome == "refused", r.line()
    assert "not supported: the 3x3 convolution on the 13x13x17 binary feature map zero-pads" in r.detail
    assert "\n" not in r.detail and not (tmp_path / "case" / "build").exists()


def test_spec_generator_is_seeded_and_varied() -> None:
    specs = [random_spec(s) for s in range(200)]
    assert [s.describe() for s in specs[:20]] == [random_spec(s).describe() for s in range(20)]
    kinds = [[layer.kind for layer in s.layers] for s in specs]
    assert any("conv" not in k for k in kinds) and any("pool" in k for k in kinds)
    assert any(k.count("conv") >= 3 for k in kinds)
    assert {s.in_ch for s in specs} == {1, 3} and {s.input_bits for s in specs} == {1, 8}
    assert {s.bn_style for s in specs} == {"trained", "wild"} and {s.front for s in specs} == {True, False}
    assert {s.classes for s in specs} == set(range(2, 13))
    assert any(layer.pad and not layer.zero_pad for s in specs for layer in s.layers)
    assert any(layer.zero_pad for s in specs for layer in s.layers)
    assert {layer.kernel for s in specs for layer in s.layers if layer.kind == "conv"} == {1, 3, 5}


def _int8_mvau(weights: np.ndarray, op: str = "MVAU_hls") -> ModelWrapper:
    """One non-XNOR MVAU on INT8 input with +-1 weights typed BIPOLAR, thresholds to a bipolar output."""
    mw, mh = weights.shape
    inp = helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, mw])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, mh])
    domain = FPGA_DOMAIN + (".hls" if op.endswith("_hls") else "")
    node = helper.make_node(
        op,
        ["inp", "weights", "thresh"],
        ["out"],
        domain=domain,
        backend="fpgadataflow",
        MW=mw,
        MH=mh,
        SIMD=1,
        PE=1,
        inputDataType="INT8",
        weightDataType="BIPOLAR",
        outputDataType="BIPOLAR",
        ActVal=0,
        binaryXnorMode=0,
        noActivation=0,
        numInputVectors=[1],
    )
    model = ModelWrapper(helper.make_model(helper.make_graph([node], "int8_mvau", [inp], [out])))
    model.set_tensor_datatype("inp", DataType["INT8"])
    model.set_tensor_datatype("weights", DataType["BIPOLAR"])
    model.set_tensor_datatype("out", DataType["BIPOLAR"])
    model.set_initializer("weights", weights.astype(np.float32))
    model.set_initializer("thresh", np.zeros((mh, 1), np.float32))
    return model


def test_all_plus_one_weights_stay_buildable() -> None:
    """FINN's MinimizeWeightBitWidth types all-+1 weights BINARY, which its HLS MVAU refuses;
    NonBinaryMvauWeights types them BIPOLAR again, with the same outputs."""
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth

    from build_flows.transforms.non_binary_weights import NonBinaryMvauWeights

    model = _int8_mvau(np.ones((3, 1))).transform(MinimizeWeightBitWidth())
    inst = getCustomOp(model.graph.node[0])
    assert inst.get_nodeattr("weightDataType") == "BINARY"
    with pytest.raises(Exception, match="True binary"):
        inst.get_template_param_values()
    inputs = np.array(list(itertools.product((-128, -1, 0, 1, 127), repeat=3)))
    generic = _int8_mvau(np.ones((3, 1)), op="MVAU")
    before = _outputs(generic, inputs)
    fixed = model.transform(NonBinaryMvauWeights())
    inst = getCustomOp(fixed.graph.node[0])
    assert inst.get_nodeattr("weightDataType") == "BIPOLAR" and fixed.get_tensor_datatype("weights") == "BIPOLAR"
    assert inst.get_template_param_values()["TWeightI"]  # FINN's HLS template now resolves
    generic_fixed = _int8_mvau(np.ones((3, 1)), op="MVAU").transform(MinimizeWeightBitWidth())
    np.testing.assert_array_equal(_outputs(generic_fixed.transform(NonBinaryMvauWeights()), inputs), before)
    mixed = _int8_mvau(np.array([[1.0], [-1.0], [1.0]])).transform(MinimizeWeightBitWidth())
    assert getCustomOp(mixed.transform(NonBinaryMvauWeights()).graph.node[0]).get_nodeattr("weightDataType") != "BINARY"
