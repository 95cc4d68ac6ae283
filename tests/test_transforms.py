"""Each pass of :mod:`build_flows.transforms` on a small hand-made graph, as FINN tests its own.

Every test builds a graph of a few nodes with onnx's helpers, runs it with
``execute_onnx`` before and after the pass and compares, and checks that the
pass did what it is for (the node it removes is gone, the value it changes
changed). The order checks between passes are shown to fire, and the copies
of FINN's builder steps (:mod:`build_flows.steps`) are tied to finn-plus
1.6.1's step list and sources.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import qonnx_make_model

from build_flows.transforms import bipolar_padding as bp
from build_flows.transforms.errors import PassOrderError, UnsupportedGraph
from build_flows.transforms.global_pool import LowerGlobalAveragePoolBeforeTopK, ReduceMeanToGlobalAveragePool
from build_flows.transforms.hls_mvau_simd import RaiseHlsMvauSimd, hls_simd_fits, min_hls_simd
from build_flows.transforms.residual import (
    BinaryResidualToPopcountSum,
    MergeTwinThresholds,
    ResidualJoinToNHWC,
    SplitBipolarThresholdForks,
)
from build_flows.transforms.widen_xnor_accumulators import WidenXnorAccumulators, popcount_datatype

QONNX_DOMAIN = "qonnx.custom_op.general"
FPGA_DOMAIN = "finn.custom_op.fpgadataflow"
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test draws the same numbers, run alone or in the file."""
    global RNG
    RNG = np.random.default_rng(0)


OPSETS = [helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)]  # ReduceSum's axes input: 13
SPATIAL_PADS = np.array([0, 0, 1, 1, 0, 0, 1, 1])  # ONNX Pad of an NCHW map: H and W by 1 on both sides


# ---------------------------------------------------------------- helpers
def _model(
    nodes: list,
    inputs: dict[str, list[int]],
    outputs: dict[str, list[int]],
    inits: dict[str, np.ndarray] | None = None,
    dtypes: dict[str, str] | None = None,
    pads: np.ndarray | None = None,
) -> ModelWrapper:
    """A qonnx model of ``nodes`` with float tensors, float initializers and FINN datatypes, shapes
    inferred; ``pads``: the int64 initializer ``pads`` of a Pad node."""
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
    )
    model = ModelWrapper(qonnx_make_model(graph, opset_imports=OPSETS))
    for name, value in (inits or {}).items():
        model.set_initializer(name, np.asarray(value, dtype=np.float32))
    if pads is not None:
        model.set_initializer("pads", np.asarray(pads, dtype=np.int64))
    for name, dt in (dtypes or {}).items():
        model.set_tensor_datatype(name, DataType[dt])
    return model.transform(InferShapes()).transform(InferDataTypes())


def _run(model: ModelWrapper, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every graph output for ``feed`` (FINN's execute_onnx: runs qonnx and FINN custom ops alike)."""
    from finn.core.onnx_exec import execute_onnx

    out = execute_onnx(model, {k: v.astype(np.float32) for k, v in feed.items()})
    return {o.name: out[o.name] for o in model.graph.output}


def _same(before: ModelWrapper, after: ModelWrapper, feeds: list[dict[str, np.ndarray]], flat: bool = False) -> None:
    """``after`` computes what ``before`` computes on every feed (and the feeds are not all alike);
    ``flat``: the values, whatever the shapes."""
    outs = []
    for feed in feeds:
        a, b = _run(before, feed), _run(after, feed)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(b[k].ravel() if flat else b[k], a[k].ravel() if flat else a[k])
        outs.append(np.concatenate([v.ravel() for v in a.values()]))
    assert len({o.tobytes() for o in outs}) > 1, "feeds that give one output compare nothing"


def _ops(model: ModelWrapper) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _threshold(inp: str, out: str, thr: str, out_dtype: str, name: str, **attrs: object):
    """qonnx's MultiThreshold; a BIPOLAR one maps {0, 1} to {-1, +1} as Brevitas' sign exports."""
    if out_dtype == "BIPOLAR":
        attrs = {"out_scale": 2.0, "out_bias": -1.0, **attrs}
    return helper.make_node(
        "MultiThreshold", [inp, thr], [out], domain=QONNX_DOMAIN, out_dtype=out_dtype, name=name, **attrs
    )


def _pad(inp: str, out: str, pads: str, value: str, name: str = "pad"):
    return helper.make_node("Pad", [inp, pads, value], [out], mode="constant", name=name)


def _copy(model: ModelWrapper) -> ModelWrapper:
    return ModelWrapper(model.model.__deepcopy__())


# ---------------------------------------------------------------- bipolar_padding
@pytest.mark.parametrize("op,const,new_value", [("Mul", 2.0, -0.5), ("Add", 0.25, -1.25)])
def test_move_scalar_linear_past_pad(op: str, const: float, new_value: float) -> None:
    """Mul(2)/Add(0.25) -> Pad(-1) == Pad(-0.5)/Pad(-1.25) -> Mul/Add."""
    pads = SPATIAL_PADS
    model = _model(
        [helper.make_node(op, ["x", "c"], ["t"], name="lin"), _pad("t", "y", "pads", "v")],
        {"x": [1, 2, 3, 3]},
        {"y": [1, 2, 5, 5]},
        {"c": np.array(const), "v": np.array(-1.0)},
        pads=pads,
    )
    after = _copy(model).transform(bp.MoveScalarLinearPastPad())
    assert _ops(after) == ["Pad", op]
    pad = after.graph.node[0]
    assert pad.input[0] == "x" and float(after.get_initializer(pad.input[2])) == new_value
    _same(model, after, [{"x": RNG.normal(size=(1, 2, 3, 3))} for _ in range(3)])


def _threshold_then_pad(value: float) -> ModelWrapper:
    """An integer MultiThreshold (UINT2: 3 thresholds per channel) then Pad(value)."""
    thr = np.sort(RNG.normal(size=(2, 3)), axis=1)
    return _model(
        [_threshold("x", "t", "thr", "UINT2", "mt"), _pad("t", "y", "pads", "v")],
        {"x": [1, 2, 3, 3]},
        {"y": [1, 2, 5, 5]},
        {"thr": thr, "v": np.array(value)},
        pads=SPATIAL_PADS,
    )


def test_zero_pad_threshold_output() -> None:
    """MultiThreshold -> Pad(-1) == MultiThreshold(bias + 1) -> Pad(0) -> Add(-1)."""
    model = _threshold_then_pad(-1.0)
    after = _copy(model).transform(bp.ZeroPadThresholdOutput())
    assert _ops(after) == ["MultiThreshold", "Pad", "Add"]
    assert float(after.get_initializer(after.graph.node[1].input[2])) == 0.0
    mt = getCustomOp(after.graph.node[0])
    assert mt.get_nodeattr("out_bias") == 1.0 and mt.get_nodeattr("out_dtype") == "UINT3"
    _same(model, after, [{"x": RNG.normal(size=(1, 2, 3, 3))} for _ in range(3)])
    assert _ops(_threshold_then_pad(0.0).transform(bp.ZeroPadThresholdOutput())) == ["MultiThreshold", "Pad"]


def _pad_transpose_im2col(value: float, idt: str = "INT8") -> ModelWrapper:
    """NCHW Pad(value) -> Transpose to NHWC -> 3x3 Im2Col without padding (a lowered conv's input)."""
    im2col = helper.make_node(
        "Im2Col",
        ["n"],
        ["y"],
        domain=QONNX_DOMAIN,
        stride=[1, 1],
        kernel_size=[3, 3],
        pad_amount=[0, 0, 0, 0],
        input_shape="(1,5,5,2)",
        dilations=[1, 1],
        name="im2col",
    )
    return _model(
        [
            _pad("x", "p", "pads", "v"),
            helper.make_node("Transpose", ["p"], ["n"], perm=[0, 2, 3, 1], name="nhwc"),
            im2col,
        ],
        {"x": [1, 2, 3, 3]},
        {"y": [1, 3, 3, 18]},
        {"v": np.array(value)},
        {"x": idt},
        pads=SPATIAL_PADS,
    )


def test_absorb_pad_into_im2col() -> None:
    model = _pad_transpose_im2col(-1.0)
    after = _copy(model).transform(bp.AbsorbPadIntoIm2Col())
    assert _ops(after) == ["Transpose", "Im2Col"]
    inst = getCustomOp(after.graph.node[1])
    assert inst.get_nodeattr("pad_amount") == [1, 1, 1, 1] and inst.get_nodeattr("pad_value") == -1
    _same(model, after, [{"x": RNG.integers(-128, 128, size=(1, 2, 3, 3))} for _ in range(3)])


def test_absorb_pad_into_im2col_needs_lowered_convs() -> None:
    """Before LowerConvsToMatMul the Pad still feeds a Conv: the pass refuses instead of finding nothing."""
    conv = helper.make_node("Conv", ["p", "w"], ["y"], kernel_shape=[3, 3], name="conv")
    model = _model(
        [_pad("x", "p", "pads", "v"), conv],
        {"x": [1, 2, 3, 3]},
        {"y": [1, 1, 3, 3]},
        {"v": np.array(-1.0), "w": RNG.choice([-1.0, 1.0], size=(1, 2, 3, 3))},
        pads=SPATIAL_PADS,
    )
    with pytest.raises(PassOrderError, match="AbsorbPadIntoIm2Col runs after LowerConvsToMatMul.*conv"):
        model.transform(bp.AbsorbPadIntoIm2Col())


def _bipolar_im2col_matmul() -> ModelWrapper:
    """sign(x) on an NHWC map -> Im2Col padding with -1 -> MatMul with bipolar weights (a lowered padded conv)."""
    im2col = helper.make_node(
        "Im2Col",
        ["s"],
        ["cols"],
        domain=QONNX_DOMAIN,
        stride=[1, 1],
        kernel_size=[3, 3],
        pad_amount=[1, 1, 1, 1],
        pad_value=-1,
        input_shape="(1,3,3,2)",
        dilations=[1, 1],
        name="im2col",
    )
    return _model(
        [
            _threshold("x", "s", "thr", "BIPOLAR", "mt", data_layout="NHWC"),
            im2col,
            helper.make_node("MatMul", ["cols", "w"], ["y"], name="mm"),
        ],
        {"x": [1, 3, 3, 2]},
        {"y": [1, 3, 3, 4]},
        {"thr": np.zeros((2, 1)), "w": RNG.choice([-1.0, 1.0], size=(18, 4))},
        {"w": "BIPOLAR"},
    )


def test_bipolar_pad_to_binary() -> None:
    """After the XNOR conversion the map is bits (-1 -> 0): the -1 padding becomes 0 padding, and the
    whole lowered conv computes what it did on the bipolar map; without the pass qonnx refuses to run
    the BINARY Im2Col padding with -1."""
    from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount

    model = _bipolar_im2col_matmul()
    xnor = _copy(model).transform(ConvertBipolarMatMulToXnorPopcount())
    assert xnor.get_tensor_datatype("s") == "BINARY" and "XnorPopcountMatMul" in _ops(xnor)
    after = _copy(xnor).transform(bp.BipolarPadToBinary())
    assert getCustomOp(after.get_nodes_by_op_type("Im2Col")[0]).get_nodeattr("pad_value") == 0
    feeds = [{"x": RNG.normal(size=(1, 3, 3, 2))} for _ in range(3)]
    _same(model, after, feeds)
    with pytest.raises(AssertionError, match="must allow pad_val"):
        _run(xnor, feeds[0])


def test_bipolar_pad_to_binary_needs_the_xnor_conversion() -> None:
    with pytest.raises(PassOrderError, match="BipolarPadToBinary runs after ConvertBipolarMatMulToXnorPopcount.*mm"):
        _bipolar_im2col_matmul().transform(bp.BipolarPadToBinary())


def test_refusals_are_plain_exceptions_with_one_line() -> None:
    """A zero-padded bipolar conv and a Pad left over after streamlining are refused (bnnflow names the file)."""
    model = _bipolar_im2col_matmul()
    getCustomOp(model.get_nodes_by_op_type("Im2Col")[0]).set_nodeattr("pad_value", 0)
    with pytest.raises(UnsupportedGraph, match="the 3x3 convolution on the 3x3x2 binary feature map zero-pads"):
        bp.refuse_zero_padded_bipolar(model)
    with pytest.raises(UnsupportedGraph, match=r"padding node pad \(value -1.0\) is not in front of a conv"):
        bp.check_padding(_pad_transpose_im2col(-1.0))
    with pytest.raises(UnsupportedGraph, match="convolution 1 .* pads with -1 on a INT8 tensor"):
        bp.check_padding(_pad_transpose_im2col(-1.0).transform(bp.AbsorbPadIntoIm2Col()))
    bp.check_padding(_pad_transpose_im2col(0.0).transform(bp.AbsorbPadIntoIm2Col()))  # zero padding: built


def test_integer_type_is_the_narrowest() -> None:
    for lo, hi in itertools.product(range(-20, 21), range(0, 40)):
        if lo > hi:
            continue
        dt = bp.integer_type(lo, hi)
        assert dt.allowed(lo) and dt.allowed(hi) and dt.is_integer()
        narrower = DataType[f"{'INT' if lo < 0 else 'UINT'}{dt.bitwidth() - 1}"] if dt.bitwidth() > 2 else None
        assert narrower is None or not (narrower.allowed(lo) and narrower.allowed(hi))


# ---------------------------------------------------------------- global_pool
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_mean_to_global_average_pool(keepdims: int) -> None:
    """ReduceMean over H, W == GlobalAveragePool (then Flatten without keepdims)."""
    shape = [1, 3] if not keepdims else [1, 3, 1, 1]
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=keepdims, name="mean")
    model = _model([node], {"x": [1, 3, 4, 4]}, {"y": shape})
    after = _copy(model).transform(ReduceMeanToGlobalAveragePool())
    assert _ops(after) == ["GlobalAveragePool"] + ["Flatten"] * (1 - keepdims)
    # integers over 16 positions: every mean is exact, so any difference is the pass's
    _same(model, after, [{"x": RNG.integers(-50, 50, size=(1, 3, 4, 4))} for _ in range(3)])


def test_lower_global_average_pool_before_topk() -> None:
    """NHWC scores -> Transpose -> GlobalAveragePool -> Flatten -> TopK: the same class from a ReduceSum."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2], name="nchw"),
        helper.make_node("GlobalAveragePool", ["t"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], axis=1, name="flat"),
        helper.make_node("TopK", ["f", "k"], ["values", "y"], axis=1, name="topk"),
    ]
    graph = helper.make_graph(
        nodes,
        "tail",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 1])],
    )
    model = ModelWrapper(qonnx_make_model(graph, opset_imports=OPSETS))
    model.set_initializer("k", np.array([1], dtype=np.int64))
    model.set_tensor_datatype("x", DataType["INT4"])
    model = model.transform(InferShapes()).transform(InferDataTypes())
    after = _copy(model).transform(LowerGlobalAveragePoolBeforeTopK())
    assert _ops(after) == ["Im2Col", "Reshape", "ReduceSum", "TopK"]
    assert after.get_tensor_datatype(after.graph.node[2].output[0]) == "INT6"  # 4 * [-8, 7]
    # the class index, now of shape (1, 1, 1, 1) as the ReduceSum leaves it
    _same(model, after, [{"x": RNG.integers(-8, 8, size=(1, 2, 2, 5))} for _ in range(6)], flat=True)


# ---------------------------------------------------------------- residual
def _residual_block(gamma: np.ndarray) -> ModelWrapper:
    """sign(BN(conv1x1(s)) + s) with s = sign(x): the shortcut s forks into the conv and the sum."""
    c = len(gamma)
    nodes = [
        _threshold("x", "s", "thr_s", "BIPOLAR", "mt_s"),
        helper.make_node("Conv", ["s", "w"], ["conv"], kernel_shape=[1, 1], name="conv"),
        helper.make_node(
            "BatchNormalization", ["conv", "gamma", "beta", "mean", "var"], ["bn"], epsilon=1e-5, name="bn"
        ),
        helper.make_node("Add", ["bn", "s"], ["sum"], name="add"),
        _threshold("sum", "y", "thr", "BIPOLAR", "mt"),
    ]
    return _model(
        nodes,
        {"x": [1, c, 3, 3]},
        {"y": [1, c, 3, 3]},
        {
            "thr_s": np.zeros((c, 1)),
            "w": RNG.choice([-1.0, 1.0], size=(c, c, 1, 1)),
            "gamma": gamma,
            "beta": RNG.uniform(-1, 1, c),
            "mean": RNG.uniform(-2, 2, c),
            "var": RNG.uniform(0.5, 4, c),
            "thr": np.zeros((1, 1)),
        },
        {"s": "BIPOLAR", "w": "BIPOLAR", "y": "BIPOLAR"},
    )


def test_binary_residual_to_popcount_sum() -> None:
    """Negative, zero and positive BatchNorm scales: the block becomes an integer test on the popcount."""
    gamma = np.array([0.7, -0.4, 0.0, 1.3, -1.1, 0.2])
    model = _residual_block(gamma)
    after = _copy(model).transform(BinaryResidualToPopcountSum())
    assert "BatchNormalization" not in _ops(after)
    bits = [n for n in after.get_nodes_by_op_type("MultiThreshold") if n.name == "mt_s_bit"]
    assert len(bits) == 1 and getCustomOp(bits[0]).get_nodeattr("out_dtype") == "BINARY"
    assert after.get_initializer("w")[1].tolist() == (-model.get_initializer("w")[1]).tolist()  # gamma < 0 flips
    _same(model, after, [{"x": RNG.normal(size=(1, 6, 3, 3))} for _ in range(8)])


def _fork() -> ModelWrapper:
    """One bipolar thresholding read by two bipolar MatMuls (a block input read by its conv and shortcut)."""
    nodes = [
        _threshold("x", "s", "thr", "BIPOLAR", "mt"),
        helper.make_node("MatMul", ["s", "w1"], ["y1"], name="mm1"),
        helper.make_node("MatMul", ["s", "w2"], ["y2"], name="mm2"),
    ]
    return _model(
        nodes,
        {"x": [1, 8]},
        {"y1": [1, 3], "y2": [1, 2]},
        {
            "thr": np.zeros((1, 1)),
            "w1": RNG.choice([-1.0, 1.0], size=(8, 3)),
            "w2": RNG.choice([-1.0, 1.0], size=(8, 2)),
        },
        {"s": "BIPOLAR", "w1": "BIPOLAR", "w2": "BIPOLAR"},
    )


def test_split_forks_then_xnor_then_merge_twins() -> None:
    """Split gives each XNOR reader its own thresholding, qonnx's XNOR conversion then succeeds, and
    MergeTwinThresholds joins the copies again; outputs equal the bipolar graph's throughout."""
    from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount

    model = _fork()
    feeds = [{"x": RNG.normal(size=(1, 8))} for _ in range(4)]
    split = _copy(model).transform(SplitBipolarThresholdForks())
    assert len(split.get_nodes_by_op_type("MultiThreshold")) == 2
    _same(model, split, feeds)
    xnor = _copy(split).transform(ConvertBipolarMatMulToXnorPopcount())
    thresholds = xnor.get_nodes_by_op_type("MultiThreshold")
    assert all(getCustomOp(n).get_nodeattr("out_dtype") == "BINARY" for n in thresholds)
    _same(model, xnor, feeds)
    merged = _copy(xnor).transform(MergeTwinThresholds())
    assert len(merged.get_nodes_by_op_type("MultiThreshold")) == 1
    _same(model, merged, feeds)


def test_merge_twins_needs_the_xnor_conversion() -> None:
    """Merging before the conversion would undo the split: the pass refuses."""
    split = _fork().transform(SplitBipolarThresholdForks())
    with pytest.raises(PassOrderError, match="MergeTwinThresholds runs after ConvertBipolarMatMulToXnorPopcount"):
        split.transform(MergeTwinThresholds())


def test_residual_join_to_nhwc() -> None:
    """NHWC popcount -> Transpose to NCHW -> Add(Mul(bit, E)) -> MultiThreshold: the sum runs in NHWC."""
    c = 4
    nodes = [
        helper.make_node("Transpose", ["p"], ["pt"], perm=[0, 3, 1, 2], name="nchw"),
        helper.make_node("Mul", ["bit", "e"], ["eb"], name="mul"),
        helper.make_node("Add", ["pt", "eb"], ["sum"], name="add"),
        _threshold("sum", "y", "thr", "UINT2", "mt"),
    ]
    model = _model(
        nodes,
        {"p": [1, 3, 3, c], "bit": [1, c, 3, 3]},
        {"y": [1, c, 3, 3]},
        {"e": RNG.integers(-3, 4, size=(1, c, 1, 1)), "thr": np.sort(RNG.integers(0, 12, size=(c, 3)), axis=1)},
        {"p": "UINT4", "bit": "BINARY"},
    )
    after = _copy(model).transform(ResidualJoinToNHWC())
    assert getCustomOp(after.get_nodes_by_op_type("MultiThreshold")[0]).get_nodeattr("data_layout") == "NHWC"
    assert after.find_producer("y").op_type == "Transpose"
    _same(
        model,
        after,
        [{"p": RNG.integers(0, 10, size=(1, 3, 3, c)), "bit": RNG.integers(0, 2, size=(1, c, 3, 3))} for _ in range(4)],
    )


# ---------------------------------------------------------------- widen_xnor_accumulators
def _xnor_mvau(mw: int, thresholds: np.ndarray) -> ModelWrapper:
    """One XNOR-mode MVAU: binary input and weights, popcounts in [0, mw], thresholds per channel."""
    mh = thresholds.shape[0]
    node = helper.make_node(
        "MVAU",
        ["x", "w", "thr"],
        ["y"],
        domain=FPGA_DOMAIN,
        backend="fpgadataflow",
        name="mvau",
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
    return _model(
        [node],
        {"x": [1, mw]},
        {"y": [1, mh]},
        {"w": RNG.integers(0, 2, (mw, mh)), "thr": thresholds},
        {"x": "BINARY", "w": "BINARY", "y": "BIPOLAR"},
    )


def test_popcount_datatype_is_qonnxs_smallest() -> None:
    """qonnx's DataType.get_smallest_possible(MW) is the narrowest UINT holding [0, MW] (UINT1 is BINARY)."""
    for mw in [*range(0, 5000), 2**16 - 1, 2**16, 10**6]:
        assert popcount_datatype(mw) == DataType[f"UINT{max(1, math.ceil(math.log2(mw + 1)))}"], mw


def test_widen_xnor_accumulators_keeps_high_thresholds() -> None:
    """FINN's MinimizeAccumulatorWidth sizes an XNOR MVAU of MW = 6 for the +-1 products (INT3 here), so
    RoundAndClipThresholds clips the threshold 6 and the outputs for popcounts 4 and 5 change; widened
    first, nothing changes. (On top, finn-hlslib's accumulator would wrap at popcount MW.)"""
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds

    mw = 6
    model = _xnor_mvau(mw, np.array([[1.0], [6.0]]))
    feeds = [{"x": np.array(bits)[None]} for bits in itertools.product((0, 1), repeat=mw)]
    narrow = _copy(model).transform(MinimizeAccumulatorWidth())
    assert DataType[getCustomOp(narrow.graph.node[0]).get_nodeattr("accDataType")].max() < mw
    widened = _copy(narrow).transform(WidenXnorAccumulators())
    acc = DataType[getCustomOp(widened.graph.node[0]).get_nodeattr("accDataType")]
    assert acc.min() <= 0 and acc.max() >= mw
    _same(model, widened.transform(RoundAndClipThresholds()), feeds)
    clipped = narrow.transform(RoundAndClipThresholds())
    assert any(not np.array_equal(_run(clipped, f)["y"], _run(model, f)["y"]) for f in feeds)


# ---------------------------------------------------------------- hls_mvau_simd
def test_raise_hls_mvau_simd() -> None:
    """MW = 2304 at SIMD 2 is below finn-hlslib's MW / 1024: raised to 3, the smallest divisor that fits."""
    mw = 2304
    node = helper.make_node(
        "MVAU_hls",
        ["x", "w", "thr"],
        ["y"],
        domain=FPGA_DOMAIN + ".hls",
        backend="fpgadataflow",
        name="mvau",
        MW=mw,
        MH=2,
        SIMD=2,
        PE=1,
        inputDataType="BINARY",
        weightDataType="BINARY",
        outputDataType="BIPOLAR",
        ActVal=0,
        binaryXnorMode=1,
        noActivation=0,
        numInputVectors=[1],
    )
    model = _model(
        [node],
        {"x": [1, mw]},
        {"y": [1, 2]},
        {"w": RNG.integers(0, 2, (mw, 2)), "thr": np.array([[mw / 2], [mw / 3]])},
        {"x": "BINARY", "w": "BINARY", "y": "BIPOLAR"},
    )
    fix = RaiseHlsMvauSimd()
    after = _copy(model).transform(fix)
    assert fix.raised == [("mvau", 2, 3)] and getCustomOp(after.graph.node[0]).get_nodeattr("SIMD") == 3
    assert not hls_simd_fits(mw, 2) and min_hls_simd(mw) == 3 and min_hls_simd(1000) == 1
    # FINN executes an HLS MVAU only in C++ simulation: compare the generic MVAU with the same attributes
    _same(_as_generic(model), _as_generic(after), [{"x": RNG.integers(0, 2, size=(1, mw))} for _ in range(3)])


def _as_generic(model: ModelWrapper) -> ModelWrapper:
    """The model with its HLS MVAUs as FINN's generic MVAU (same attributes; executable in Python)."""
    out = _copy(model)
    for node in out.graph.node:
        if node.op_type == "MVAU_hls":
            node.op_type, node.domain = "MVAU", FPGA_DOMAIN
    return out


# ---------------------------------------------------------------- the copied FINN steps
def _finn_steps_module(tmp_path: Path):
    from build_flows import finn_env

    finn_env.prepare(tmp_path / "codegen")  # FINN's builder imports only after the set-up
    import finn.builder.build_dataflow_steps as finn_steps

    return finn_steps


def test_copied_steps_match_finn_plus(tmp_path: Path) -> None:
    """bnnflow's copies were made from finn-plus 1.6.1: its step list and the source of every FINN
    function a step copies or wraps must be what they were copied from (else: re-copy, then update)."""
    import finn.builder.build_dataflow_config as bc

    from build_flows import steps

    finn_steps = _finn_steps_module(tmp_path)
    assert tuple(bc.default_build_dataflow_steps) == steps.FINN_STEPS
    assert set(steps.STEP_REPLACEMENTS) <= set(steps.FINN_STEPS)
    assert set(steps.STEP_REPLACEMENTS) <= set(steps.FINN_SOURCES)
    for name, sha in steps.FINN_SOURCES.items():
        source = inspect.getsource(getattr(finn_steps, name))
        assert hashlib.sha256(source.encode()).hexdigest() == sha, f"FINN's {name} changed: re-copy it"


def test_private_finn_apis_bnnflow_calls_are_there() -> None:
    """bnnflow calls three of finn-plus 1.6.1's private helpers, as FINN's own steps do (the copied steps
    call the same ones; rewriting them would be a second copy of FINN's logic): a finn-plus that renames
    or reshapes one fails here, not inside a build."""
    import finn.builder.build_dataflow_config as bc
    from finn.util import vivado

    cfg = bc.DataflowBuildConfig(
        output_dir="x",
        synth_clk_period_ns=10.0,
        target_fps=1000,
        generate_outputs=[bc.DataflowOutputType.ESTIMATE_REPORTS],
    )
    assert cfg._resolve_cycles_per_frame() == 100_000  # 10 ns clock, 1000 FPS
    assert cfg._resolve_verification_steps() == []
    assert list(inspect.signature(vivado._parse_vivado_timing_report).parameters) == ["report_path"]


def test_streamline_refusal_becomes_not_supported(tmp_path: Path) -> None:
    """A refusal inside the copied step reaches the build as bnnflow's NotSupported, in one line."""
    import finn.builder.build_dataflow_config as bc

    from bnnflow.errors import NotSupported
    from build_flows.steps import step_streamline

    _finn_steps_module(tmp_path)
    model = _model(
        [_pad("x", "y", "pads", "v")], {"x": [1, 2, 3, 3]}, {"y": [1, 2, 5, 5]}, {"v": np.array(3.0)}, pads=SPATIAL_PADS
    )
    cfg = bc.DataflowBuildConfig(
        output_dir=str(tmp_path), synth_clk_period_ns=10.0, generate_outputs=[bc.DataflowOutputType.ESTIMATE_REPORTS]
    )
    with pytest.raises(NotSupported, match=r"^not supported: padding node \S+ \(value 3.0\) is not in front") as exc:
        step_streamline(model, cfg)
    assert "\n" not in str(exc.value)
