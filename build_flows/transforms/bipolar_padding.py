"""Constant (-1) padding of binary conv nets, carried through FINN's streamlining.

A binary conv net cannot pad with 0: 0 is not a binary value. bnnflow's
padded nets (VGG-11, NIN, ResNet-18) pad every conv input with -1 (an ONNX
``Pad`` with constant -1 in front of a conv without padding), and the conv
nets' first layer pads its 8-bit input with -1.0, the code of pixel value 0.
FINN (finn-plus 1.6.1) builds padding only as ``FMPadding``, which inserts
zeros, and three of its transformations go wrong on a nonzero pad value:

* ``MoveScalesPastIm2Col`` moves a scalar ``Mul`` past a ``Pad`` without
  dividing the pad value by the scale (right only for 0), so the first
  layer would pad with -1 in the INT8 domain instead of -128;
* ``ConvertBipolarMatMulToXnorPopcount`` turns the bipolar activations into
  bits (-1 -> 0) through the ``Pad`` but leaves its value at -1;
* no transformation absorbs a standalone NCHW ``Pad`` into the ``Im2Col`` of
  the lowered conv, and ``InferFMPadding`` takes only NHWC zero pads, so
  ``step_convert_to_hw`` fails.

The transformations here, in qonnx's ``Transformation`` form, keep every
step exact; bnnflow's ``step_streamline`` (see :mod:`build_flows.steps`)
runs them around FINN's own:

1. :class:`MoveScalarLinearPastPad` (before FINN's ``Streamline``): a scalar
   ``Mul``/``Add`` in front of a ``Pad`` goes behind it, the pad value
   divided by the scale or shifted by the bias. FINN's faulty move then
   finds nothing to move.
2. :class:`ZeroPadThresholdOutput` (before ``Streamline``): a ``Pad`` of
   value v behind an integer ``MultiThreshold`` shifts the thresholding's
   output by -v (a new output type) and pads with 0, with ``Add(v)`` behind
   the ``Pad`` for FINN to stream into the conv's thresholds. On the first
   layer this pads the UINT8 threshold count with 0, pixel value 0.
3. :class:`AbsorbPadIntoIm2Col` (after ``LowerConvsToMatMul``): the ``Pad``
   becomes the ``Im2Col``'s own ``pad_amount``/``pad_value``, which FINN's
   ``InferConvInpGen`` turns into ``FMPadding`` + sliding window. It checks
   that no ``Pad`` still feeds a ``Conv`` (else it would find nothing and the
   pad would be refused later).
4. :class:`BipolarPadToBinary` (after the XNOR conversion): an ``Im2Col`` of
   BINARY input pads with the bit of the bipolar value, 0 for -1: the zeros
   ``FMPadding`` inserts are exactly the -1 padding of the bipolar net. It
   checks that the XNOR conversion has run (before it, the input is still
   BIPOLAR and the pass would silently do nothing).

:func:`check_padding` refuses (:class:`~build_flows.transforms.errors.UnsupportedGraph`),
in one line naming the node, any padding the
four could not bring into a form FINN builds correctly, and
:func:`refuse_zero_padded_bipolar` a conv that zero-pads bipolar activations
(a user's net with ``padding=1`` on 1-bit activations): 0 is not a bipolar
value, and as bits FINN would pad with -1, a different network.
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import get_by_name

from build_flows.transforms.errors import UnsupportedGraph
from build_flows.transforms.order import require_convs_lowered, require_xnor_converted


def _constant_pad(model: ModelWrapper, node) -> tuple[np.ndarray, float] | None:
    """(pads, value) of a constant-mode ``Pad`` with static pads and value, else None."""
    if node.op_type != "Pad":
        return None
    mode = get_by_name(node.attribute, "mode")
    if mode is not None and mode.s.decode() != "constant":
        return None
    pads = model.get_initializer(node.input[1])
    if pads is None or (len(node.input) > 3 and node.input[3]):
        return None  # dynamic pads, or an axes input: not from a Brevitas export
    value = model.get_initializer(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1)
    if value is None:
        return None
    return np.asarray(pads, dtype=np.int64), float(np.asarray(value).reshape(-1)[0])


def _set_pad_value(model: ModelWrapper, node, value: float) -> None:
    """Give ``node`` (a Pad) its own constant-value initializer (others may share the old one)."""
    name = model.make_new_valueinfo_name()
    model.set_initializer(name, np.asarray(value, dtype=np.float32))
    if len(node.input) > 2:
        node.input[2] = name
    else:
        node.input.append(name)


def _single_consumer(model: ModelWrapper, tensor: str):
    consumers = model.find_consumers(tensor)
    return consumers[0] if consumers is not None and len(consumers) == 1 else None


class MoveScalarLinearPastPad(Transformation):
    """``Mul(s)``/``Add(b)`` with a scalar constant, then ``Pad(v)`` ->
    ``Pad(v / s)``/``Pad(v - b)``, then the ``Mul``/``Add``: the same tensor."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        graph = model.graph
        for node in graph.node:
            if node.op_type not in ("Mul", "Add") or model.get_initializer(node.input[0]) is not None:
                continue
            const = model.get_initializer(node.input[1])
            if const is None or const.size != 1:
                continue
            pad = _single_consumer(model, node.output[0])
            info = _constant_pad(model, pad) if pad is not None else None
            if info is None:
                continue
            c = float(const.reshape(-1)[0])
            if node.op_type == "Mul" and c == 0:
                continue
            _, value = info
            _set_pad_value(model, pad, value / c if node.op_type == "Mul" else value - c)
            # x -> L -> t -> Pad -> y   becomes   x -> Pad -> t -> L -> y
            x, t, y = node.input[0], node.output[0], pad.output[0]
            pad.input[0], pad.output[0] = x, t
            node.input[0], node.output[0] = t, y
            graph.node.remove(pad)
            graph.node.insert(model.get_node_index(node), pad)
            model.set_tensor_shape(t, None)
            model = model.transform(InferShapes())
            model = model.transform(InferDataTypes())
            return model, True
        return model, False


def integer_type(lo: int, hi: int) -> DataType:
    """The narrowest INTn/UINTn holding ``[lo, hi]``."""
    for bits in range(1, 33):
        dt = DataType[f"UINT{bits}"] if lo >= 0 else DataType[f"INT{max(bits, 2)}"]
        if dt.allowed(lo) and dt.allowed(hi):
            return dt
    raise ValueError(f"no integer type up to 32 bits holds [{lo}, {hi}]")


class ZeroPadThresholdOutput(Transformation):
    """Integer ``MultiThreshold`` (scale 1) -> ``Pad(v != 0)``  becomes
    ``MultiThreshold`` (bias - v) -> ``Pad(0)`` -> ``Add(v)``: the same tensor, zero padding."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        graph = model.graph
        for pad in graph.node:
            info = _constant_pad(model, pad)
            if info is None or info[1] == 0:
                continue
            mt = model.find_producer(pad.input[0])
            if mt is None or mt.op_type != "MultiThreshold" or _single_consumer(model, mt.output[0]) is not pad:
                continue
            inst = getCustomOp(mt)
            value, bias = info[1], float(inst.get_nodeattr("out_bias"))
            if float(inst.get_nodeattr("out_scale")) != 1.0 or value != int(value) or bias != int(bias):
                continue
            if DataType[inst.get_nodeattr("out_dtype")] == DataType["BIPOLAR"]:
                continue  # bipolar pads are made binary after the XNOR conversion
            n_thresholds = int(model.get_tensor_shape(mt.input[1])[-1])
            new_bias = int(bias - value)
            inst.set_nodeattr("out_bias", float(new_bias))
            inst.set_nodeattr("out_dtype", integer_type(new_bias, new_bias + n_thresholds).name)
            _set_pad_value(model, pad, 0.0)
            shifted = model.make_new_valueinfo_name()
            const = model.make_new_valueinfo_name()
            model.set_initializer(const, np.asarray(value, dtype=np.float32))
            add = helper.make_node("Add", [shifted, const], [pad.output[0]], name=f"{pad.name}_unshift")
            pad.output[0] = shifted
            graph.node.insert(model.get_node_index(pad) + 1, add)
            model = model.transform(InferShapes())
            model = model.transform(InferDataTypes())
            return model, True
        return model, False


class AbsorbPadIntoIm2Col(Transformation):
    """NCHW ``Pad`` (spatial only) -> ``Transpose`` to NHWC -> ``Im2Col`` without padding
    becomes ``Transpose`` -> ``Im2Col`` with that ``pad_amount`` and ``pad_value``."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        require_convs_lowered(model, type(self).__name__)
        graph = model.graph
        for pad in graph.node:
            info = _constant_pad(model, pad)
            if info is None:
                continue
            pads, value = info
            transpose = _single_consumer(model, pad.output[0])
            if transpose is None or transpose.op_type != "Transpose":
                continue
            perm = get_by_name(transpose.attribute, "perm")
            im2col = _single_consumer(model, transpose.output[0])
            if perm is None or list(perm.ints) != [0, 2, 3, 1] or im2col is None or im2col.op_type != "Im2Col":
                continue
            inst = getCustomOp(im2col)
            if len(pads) != 8 or any(pads[[0, 1, 4, 5]]) or any(inst.get_nodeattr("pad_amount")) or value != int(value):
                continue
            # ONNX pads: [N, C, H, W] begins then ends; Im2Col: [top, left, bottom, right].
            inst.set_nodeattr("pad_amount", [int(pads[2]), int(pads[3]), int(pads[6]), int(pads[7])])
            inst.set_nodeattr("pad_value", int(value))
            transpose.input[0] = pad.input[0]
            graph.node.remove(pad)
            model.set_tensor_shape(transpose.output[0], None)
            model = model.transform(InferShapes())
            model = model.transform(InferDataTypes())
            return model, True
        return model, False


class BipolarPadToBinary(Transformation):
    """``Im2Col`` on BINARY input padding with a bipolar value: pad with its bit (-1 -> 0, +1 -> 1)."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        require_xnor_converted(model, type(self).__name__)
        for node in model.graph.node:
            if node.op_type != "Im2Col" or model.get_tensor_datatype(node.input[0]) != DataType["BINARY"]:
                continue
            inst = getCustomOp(node)
            if any(inst.get_nodeattr("pad_amount")) and inst.get_nodeattr("pad_value") in (-1, 1):
                inst.set_nodeattr("pad_value", (inst.get_nodeattr("pad_value") + 1) // 2)
        return model, False


def refuse_zero_padded_bipolar(model: ModelWrapper) -> None:
    """Refuse an ``Im2Col`` that pads a BIPOLAR tensor with 0 (run before the XNOR conversion).

    The message names the convolution by kernel and input shape: 1x1 convolutions have no
    ``Im2Col``, so counting these nodes would not count the network's convolutions.
    """
    for node in model.get_nodes_by_op_type("Im2Col"):
        inst = getCustomOp(node)
        if (
            model.get_tensor_datatype(node.input[0]) == DataType["BIPOLAR"]
            and any(inst.get_nodeattr("pad_amount"))
            and inst.get_nodeattr("pad_value") == 0
        ):
            k = "x".join(str(v) for v in inst.get_nodeattr("kernel_size"))
            _, h, w, c = model.get_tensor_shape(node.input[0])
            raise UnsupportedGraph(
                f"the {k} convolution on the {h}x{w}x{c} binary feature map zero-pads 1-bit (bipolar) "
                "activations; 0 is not a binary value, and FINN's XNOR layers would pad with -1 instead. "
                "Pad binary activations with -1 (models.layers.BinaryPad, nn.ConstantPad2d(p, -1.0)) or "
                "use convolutions without padding"
            )


def check_padding(model: ModelWrapper) -> None:
    """Refuse padding that did not end as zero padding of an ``Im2Col`` (what FINN builds)."""
    convs = 0
    for node in model.graph.node:
        convs += node.op_type == "Im2Col"
        if node.op_type == "Pad":
            info = _constant_pad(model, node)
            raise UnsupportedGraph(
                f"padding node {node.name} (value {info[1] if info else 'not constant'}) is not in front "
                "of a convolution on a thresholded or binary tensor; bnnflow builds padding only as "
                "-1/0 padding of conv inputs"
            )
        if node.op_type == "Im2Col":
            inst = getCustomOp(node)
            if any(inst.get_nodeattr("pad_amount")) and inst.get_nodeattr("pad_value") != 0:
                raise UnsupportedGraph(
                    f"convolution {convs} (counting from the input) pads with {inst.get_nodeattr('pad_value')} on a "
                    f"{model.get_tensor_datatype(node.input[0]).name} tensor; FINN's FMPadding pads with 0 only"
                )
