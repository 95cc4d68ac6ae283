"""Residual sums of binary nets as an exact integer sum FINN streams.

A bnnflow ResNet block computes ``sign(BN(conv(h)) + s)`` with a +-1
shortcut ``s`` (the identity, or a 1x1 binary conv with BatchNorm and sign).
FINN's streamlining cannot absorb a sum of two computed tensors into
thresholds, and its XNOR conversion turns a bipolar activation into bits
for *every* consumer, so a shortcut that also feeds the sum would silently
change from -1/+1 to 0/1.

With ``p = 2 * pc - K`` (``pc`` the XNOR popcount of the conv's K inputs),
BatchNorm ``a * p + b`` and the sign's threshold ``t``, channel by channel::

    a * (2 pc - K) + b + s >= t   <=>   pc + E * sb >= W        (sb = (s + 1) / 2)

with integers ``W = ceil((t - b + 1 + a K) / (2 a))`` (the threshold for
s = -1), ``E = W - ceil((t - b - 1 + a K) / (2 a))``, after flipping the
conv's weights of channels with ``a < 0`` (which negates ``p``);
channels with ``a = 0`` get constants that give the sign's fixed answer per
``sb``. :class:`BinaryResidualToPopcountSum` rewrites each block's
``BatchNormalization -> Add -> MultiThreshold`` into
``(p + K) * 0.5 + E * sb -> MultiThreshold(W)`` before FINN's streamlining
(FINN folds the first part into the popcount after its XNOR conversion) and
takes ``sb`` from a BINARY copy of the shortcut's thresholding, so the XNOR
conversion finds nothing to re-type; :class:`MergeTwinThresholds` folds the
copy back into the original once both are BINARY. FINN then builds the
block from its own layers: an MVAU without activation, ``ElementwiseMul``,
``ElementwiseAdd``, ``Thresholding`` and ``DuplicateStreams`` for the forks.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import NodeProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import get_by_name

from build_flows.transforms.bipolar_padding import integer_type
from build_flows.transforms.order import require_xnor_converted


def _is_bipolar_threshold(model: ModelWrapper, node) -> bool:
    if node is None or node.op_type != "MultiThreshold":
        return False
    inst = getCustomOp(node)
    return inst.get_nodeattr("out_dtype") == "BIPOLAR" and int(model.get_tensor_shape(node.input[1])[-1]) == 1


def _copy_threshold(node, output: str, name: str):
    """A new ``MultiThreshold`` node with ``node``'s inputs and attributes, writing ``output``."""
    twin = helper.make_node("MultiThreshold", list(node.input), [output], domain=node.domain, name=name)
    twin.attribute.extend(node.attribute)
    return twin


def _bn_affine(model: ModelWrapper, bn) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm as ``a * x + b``, in float64 (qonnx's ``BatchNormToAffine`` formula).

    Not ``BatchNormToAffine`` itself: that is a graph rewrite (every BatchNorm
    node into ``Mul``/``Add`` with float32 constants), while
    :func:`block_constants` needs ``a`` and ``b`` of this one node as numbers,
    in the precision its ``ceil`` bounds are exact in.
    """
    gamma, beta, mean, var = (model.get_initializer(i).astype(np.float64) for i in bn.input[1:5])
    eps_attr = get_by_name(bn.attribute, "epsilon")
    eps = eps_attr.f if eps_attr is not None else 1e-5
    a = gamma / np.sqrt(var + eps)
    return a, beta - mean * a


def block_constants(a: np.ndarray, b: np.ndarray, t: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(E, W) per channel for ``a >= 0``: ``[a (2 pc - K) + b + s >= t] == [pc + E sb >= W]``."""
    e, w = np.zeros(len(a), dtype=np.int64), np.zeros(len(a), dtype=np.int64)
    for c in range(len(a)):
        if a[c] > 0:
            w_lo = math.ceil((t[c] - b[c] + 1 + a[c] * k) / (2 * a[c]))  # s = -1
            w_hi = math.ceil((t[c] - b[c] - 1 + a[c] * k) / (2 * a[c]))  # s = +1
            w[c], e[c] = w_lo, w_lo - w_hi
        else:  # the sign does not depend on pc: [b + s >= t] per s, pc in [0, K]
            lo, hi = b[c] - 1 >= t[c], b[c] + 1 >= t[c]
            w[c] = 0 if lo else k + 1
            e[c] = (0 if hi else -k - 1) if lo else (k + 1 if hi else 0)
    return e, w


def _const(model: ModelWrapper, value: np.ndarray | float, shape: tuple[int, ...], dt: DataType) -> str:
    """A new initializer (never one another node may share)."""
    name = model.make_new_valueinfo_name()
    model.set_initializer(name, np.asarray(value, dtype=np.float32).reshape(shape))
    model.set_tensor_datatype(name, dt)
    return name


class BinaryResidualToPopcountSum(Transformation):
    """``Conv -> BatchNormalization -> Add(., s) -> MultiThreshold`` (bipolar s, sign) becomes
    ``Conv -> Add(K) -> Mul(0.5) -> Add(., E * sb) -> MultiThreshold(W)`` (see the module doc)."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        graph = model.graph
        for add in graph.node:
            if add.op_type != "Add" or any(model.get_initializer(i) is not None for i in add.input):
                continue
            out = model.find_consumers(add.output[0]) or []
            if len(out) != 1 or not _is_bipolar_threshold(model, out[0]):
                continue
            mt_out = out[0]
            producers = [model.find_producer(i) for i in add.input]
            bn_side = [k for k, p in enumerate(producers) if p is not None and p.op_type == "BatchNormalization"]
            if len(bn_side) != 1:
                continue
            bn, mt_s = producers[bn_side[0]], producers[1 - bn_side[0]]
            conv = model.find_producer(bn.input[0])
            if not _is_bipolar_threshold(model, mt_s) or conv is None or conv.op_type != "Conv":
                continue
            weights = model.get_initializer(conv.input[1])
            if (
                weights is None
                or model.get_tensor_datatype(conv.input[1]) != DataType["BIPOLAR"]
                or len(model.find_consumers(bn.output[0])) != 1
            ):
                continue
            a, b = _bn_affine(model, bn)
            channels, k = weights.shape[0], int(np.prod(weights.shape[1:]))
            t = np.broadcast_to(model.get_initializer(mt_out.input[1]).astype(np.float64).reshape(-1), (channels,))
            flip = a < 0
            weights = weights.copy()
            weights[flip] *= -1
            model.set_initializer(conv.input[1], weights)
            e, w = block_constants(np.abs(a), b, t, k)

            # The shortcut bit: the shortcut's thresholding with BINARY output (a copy if it forks).
            if len(model.find_consumers(mt_s.output[0])) == 1:
                bit_node, bit = mt_s, mt_s.output[0]
            else:
                bit = model.make_new_valueinfo_name()
                bit_node = _copy_threshold(mt_s, bit, f"{mt_s.name}_bit")
            inst = getCustomOp(bit_node)
            inst.set_nodeattr("out_dtype", "BINARY")
            inst.set_nodeattr("out_scale", 1.0)
            inst.set_nodeattr("out_bias", 0.0)
            if bit_node is not mt_s:  # insert after setting: the graph holds a copy of the proto
                graph.node.insert(model.get_node_index(mt_s) + 1, bit_node)
            shifted, popcount, scaled = (model.make_new_valueinfo_name() for _ in range(3))
            index = model.get_node_index(bn)
            graph.node.remove(bn)
            float32 = DataType["FLOAT32"]
            e_const = _const(model, e, (1, channels, 1, 1), integer_type(int(e.min()), int(e.max())))
            for j, node in enumerate(
                [
                    helper.make_node(
                        "Add", [conv.output[0], _const(model, float(k), (), float32)], [shifted], name=f"{add.name}_pc0"
                    ),
                    helper.make_node(
                        "Mul", [shifted, _const(model, 0.5, (), float32)], [popcount], name=f"{add.name}_pc1"
                    ),
                    helper.make_node("Mul", [bit, e_const], [scaled], name=f"{add.name}_e"),
                ]
            ):
                graph.node.insert(index + j, node)
            add.input[0], add.input[1] = popcount, scaled
            mt_out.input[1] = _const(model, w, (channels, 1), float32)
            model = model.transform(InferShapes())
            model = model.transform(InferDataTypes())
            return model, True
        return model, False


class SplitBipolarThresholdForks(Transformation):
    """A bipolar ``MultiThreshold`` read by several nodes gets one copy per extra reader.

    FINN's XNOR conversion re-types the thresholding upstream of each XNOR
    MatMul to BINARY and then fails on a second MatMul that reads the same,
    already re-typed one (a ResNet block's 3x3 conv and its 1x1 shortcut both
    read the block input). Copies make every reader's thresholding its own;
    :class:`MergeTwinThresholds` joins them again after the conversion.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        graph = model.graph
        for node in graph.node:
            consumers = model.find_consumers(node.output[0]) or []
            if not _is_bipolar_threshold(model, node) or len(consumers) < 2:
                continue
            index = model.get_node_index(node)
            for k, consumer in enumerate(consumers[1:], start=1):
                out = model.make_new_valueinfo_name()
                graph.node.insert(index + k, _copy_threshold(node, out, f"{node.name}_fork{k}"))
                for j, i in enumerate(consumer.input):
                    if i == node.output[0]:
                        consumer.input[j] = out
            model = model.transform(InferShapes())
            model = model.transform(InferDataTypes())
            return model, True
        return model, False


class MergeTwinThresholds(Transformation):
    """Two ``MultiThreshold`` nodes with the same input, thresholds and attributes: the second's
    consumers read the first (FINN's XNOR conversion makes the shortcut's copy a twin).

    Only after the XNOR conversion (checked): before it, merging would undo
    :class:`SplitBipolarThresholdForks` and the conversion would fail again.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        require_xnor_converted(model, type(self).__name__)
        seen: dict[tuple, NodeProto] = {}
        for node in model.graph.node:
            if node.op_type != "MultiThreshold":
                continue
            thresholds = model.get_initializer(node.input[1])
            if thresholds is None:
                continue
            key = (
                node.input[0],
                thresholds.tobytes(),
                thresholds.shape,
                tuple(sorted(a.SerializeToString() for a in node.attribute)),
            )
            twin = seen.setdefault(key, node)
            if twin is node:
                continue
            for consumer in model.find_consumers(node.output[0]) or []:
                for j, i in enumerate(consumer.input):
                    if i == node.output[0]:
                        consumer.input[j] = twin.output[0]
            model.graph.node.remove(node)
            return model, True
        return model, False


class ResidualJoinToNHWC(Transformation):
    """Run the block's sum and sign in FINN's channel-last layout.

    After lowering, a block's sum reads ``Transpose(popcount, NHWC -> NCHW)``
    and ``Mul(bit, E)`` in NCHW. The sum moves to NHWC (the popcount without
    its Transpose, the bit through a Transpose to NHWC, ``E`` reshaped) and
    its ``MultiThreshold`` to ``data_layout`` NHWC, followed by a Transpose
    back for its readers; FINN's ``AbsorbConsecutiveTransposes`` then removes
    the pairs that cancel, so FINN's elementwise and thresholding layers get
    the channel-last streams they build.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        graph = model.graph
        for add in graph.node:
            if add.op_type != "Add" or any(model.get_initializer(i) is not None for i in add.input):
                continue
            producers = [model.find_producer(i) for i in add.input]
            kinds = [p.op_type if p is not None else "" for p in producers]  # "": a graph input
            if sorted(kinds) != ["Mul", "Transpose"]:
                continue
            trans, mul = (producers[0], producers[1]) if kinds[0] == "Transpose" else (producers[1], producers[0])
            perm = get_by_name(trans.attribute, "perm")
            e = model.get_initializer(mul.input[1])
            consumers = model.find_consumers(add.output[0]) or []
            if (
                perm is None
                or list(perm.ints) != [0, 3, 1, 2]
                or e is None
                or e.ndim != 4
                or e.shape[2:] != (1, 1)
                or len(consumers) != 1
                or consumers[0].op_type != "MultiThreshold"
            ):
                continue
            mt = consumers[0]
            e_dt = model.get_tensor_datatype(mul.input[1])
            new_e = model.make_new_valueinfo_name()
            model.set_initializer(new_e, e.reshape(1, 1, 1, -1))
            model.set_tensor_datatype(new_e, e_dt)
            bit_nhwc, sum_nhwc, out_nhwc = (model.make_new_valueinfo_name() for _ in range(3))
            to_nhwc = helper.make_node(
                "Transpose", [mul.input[0]], [bit_nhwc], perm=[0, 2, 3, 1], name=f"{mul.name}_nhwc"
            )
            graph.node.insert(model.get_node_index(mul), to_nhwc)
            mul.input[0], mul.input[1] = bit_nhwc, new_e
            add.input[list(add.input).index(trans.output[0])] = trans.input[0]
            if not model.find_consumers(trans.output[0]):
                graph.node.remove(trans)
            old_out = mt.output[0]
            add.output[0], mt.input[0], mt.output[0] = sum_nhwc, sum_nhwc, out_nhwc
            getCustomOp(mt).set_nodeattr("data_layout", "NHWC")
            back = helper.make_node("Transpose", [out_nhwc], [old_out], perm=[0, 3, 1, 2], name=f"{mt.name}_nchw")
            graph.node.insert(model.get_node_index(mt) + 1, back)
            for t in (mul.output[0], sum_nhwc, out_nhwc):
                model.set_tensor_shape(t, None)
            model = model.transform(InferShapes())
            model = model.transform(InferDataTypes())
            return model, True
        return model, False
