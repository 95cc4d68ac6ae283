"""Global average pooling as FINN builds it.

A global average over the spatial axes reaches the graph as ``ReduceMean``
(axes H, W of an NCHW tensor) from ``torch.mean``, the way NIN averages its
per-position class scores. FINN turns only ``GlobalAveragePool`` into a
streaming layer (``GlobalAccPool`` and a scalar ``Mul``);
:class:`ReduceMeanToGlobalAveragePool` rewrites the one into the other plus
a ``Flatten``, which computes the same tensor, so FINN's streamliner can move
scalar scales and biases past it (``GlobalAveragePool`` is one of its
invariants) and its HW conversion finds it.

At the end of streamlining the scales are gone (absorbed into the final
``TopK``) and the tail reads NHWC scores -> ``Transpose`` to NCHW ->
``GlobalAveragePool`` -> ``Flatten`` -> ``TopK``. FINN's ``GlobalAccPool``
would leave the 1/N of the mean as a float ``Mul`` in front of ``TopK``,
which then cannot become ``LabelSelect``.
:class:`LowerGlobalAveragePoolBeforeTopK` writes the tail in FINN's lowered
pooling form instead, ``Im2Col`` over the whole image -> ``Reshape`` ->
``ReduceSum``, which FINN's ``InferPoolFromReduce`` builds as a sliding
window and an ``AccPool``: the sum, whose argmax is the mean's (N > 0).
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import get_by_name


def _reduce_axes(model: ModelWrapper, node) -> list[int] | None:
    attr = get_by_name(node.attribute, "axes")
    if attr is not None:
        return list(attr.ints)
    if len(node.input) > 1 and node.input[1]:
        axes = model.get_initializer(node.input[1])
        return None if axes is None else [int(a) for a in axes.reshape(-1)]
    return None


class ReduceMeanToGlobalAveragePool(Transformation):
    """``ReduceMean`` over axes (2, 3) of a 4-D tensor -> ``GlobalAveragePool``
    (then ``Flatten`` where ``keepdims`` is 0)."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        graph = model.graph
        for node in graph.node:
            if node.op_type != "ReduceMean":
                continue
            shape = model.get_tensor_shape(node.input[0])
            axes = _reduce_axes(model, node)
            if shape is None or len(shape) != 4 or axes is None or sorted(a % 4 for a in axes) != [2, 3]:
                continue
            keep = get_by_name(node.attribute, "keepdims")
            keepdims = keep is None or keep.i != 0
            index = model.get_node_index(node)
            pooled = node.output[0] if keepdims else model.make_new_valueinfo_name()
            gap = helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=f"{node.name}_gap")
            graph.node.insert(index, gap)
            if not keepdims:
                flat = helper.make_node("Flatten", [pooled], [node.output[0]], axis=1, name=f"{node.name}_flat")
                graph.node.insert(index + 1, flat)
            graph.node.remove(node)
            model = model.transform(InferShapes())
            model = model.transform(InferDataTypes())
            return model, True
        return model, False


class LowerGlobalAveragePoolBeforeTopK(Transformation):
    """NHWC -> ``Transpose(0, 3, 1, 2)`` -> ``GlobalAveragePool`` -> ``Flatten`` -> ``TopK``
    (indices only) becomes ``Im2Col`` (whole image) -> ``Reshape`` -> ``ReduceSum`` -> ``TopK``."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        graph = model.graph
        for topk in graph.node:
            if topk.op_type != "TopK" or model.find_consumers(topk.output[0]):
                continue
            flat = model.find_producer(topk.input[0])
            gap = model.find_producer(flat.input[0]) if flat is not None and flat.op_type == "Flatten" else None
            trans = (
                model.find_producer(gap.input[0]) if gap is not None and gap.op_type == "GlobalAveragePool" else None
            )
            if gap is None or trans is None or trans.op_type != "Transpose":  # trans implies gap
                continue
            perm = get_by_name(trans.attribute, "perm")
            x = trans.input[0]
            shape, idt = model.get_tensor_shape(x), model.get_tensor_datatype(x)
            if (
                perm is None
                or list(perm.ints) != [0, 3, 1, 2]
                or shape is None
                or len(shape) != 4
                or shape[0] != 1
                or not idt.is_integer()
            ):
                continue
            if any(len(model.find_consumers(t.output[0]) or []) != 1 for t in (trans, gap, flat)):
                continue
            _, h, w, c = (int(d) for d in shape)
            windows, grouped, summed = (model.make_new_valueinfo_name() for _ in range(3))
            shape_init, axes_init = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
            model.set_initializer(shape_init, np.asarray([1, 1, 1, h * w, c], dtype=np.int64))
            model.set_initializer(axes_init, np.asarray([3], dtype=np.int64))
            nodes = [
                helper.make_node(
                    "Im2Col",
                    [x],
                    [windows],
                    domain="qonnx.custom_op.general",
                    stride=[1, 1],
                    kernel_size=[h, w],
                    pad_amount=[0, 0, 0, 0],
                    input_shape=f"(1,{h},{w},{c})",
                    dilations=[1, 1],
                    name=f"{gap.name}_window",
                ),
                helper.make_node("Reshape", [windows, shape_init], [grouped], name=f"{gap.name}_group"),
                helper.make_node("ReduceSum", [grouped, axes_init], [summed], keepdims=0, name=f"{gap.name}_sum"),
            ]
            index = model.get_node_index(trans)
            for k, node in enumerate(nodes):
                graph.node.insert(index + k, node)
            for old in (trans, gap, flat):
                graph.node.remove(old)
            topk.input[0] = summed
            axis = get_by_name(topk.attribute, "axis")
            if axis is not None:
                axis.i = -1
            extreme = max(abs(idt.min()), abs(idt.max())) * h * w
            sum_dt = DataType.get_smallest_possible(-extreme if idt.signed() else extreme)
            model.set_tensor_datatype(summed, sum_dt)
            for t in topk.output:
                model.set_tensor_shape(t, None)
            model = model.transform(InferShapes())
            model = model.transform(InferDataTypes())
            return model, True
        return model, False
