"""Read a FINN HW-layer graph into a flat list of typed layer descriptions.

The simulator never executes ONNX: it reads each node's attributes through
FINN's own custom-op classes (so defaults are FINN's), its constant inputs
(weights, thresholds) from the initializers, and shapes and datatypes from the
graph annotations. Specialized nodes (``MVAU_hls``, ``Thresholding_rtl``, ...)
and their generic forms (``MVAU``) map to the same layer kind: the variant
only changes how the hardware is built, not what it computes.

When the accelerator graph is given together with FINN's parent graph, the
software nodes around the ``StreamingDataflowPartition`` (e.g. the input
transpose NCHW -> NHWC) are inlined, so the simulator takes the same input
as the exported model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from onnx import NodeProto, helper

from bnnflow.errors import BnnflowError, brief
from build_flows.folding import split_impl

HW_DOMAIN = "finn.custom_op.fpgadataflow"

# Layer kinds the simulator implements; keys are FINN op types without the
# _hls/_rtl suffix, plus the plain ONNX ops FINN leaves in the parent graph.
SUPPORTED = frozenset(
    {
        "Thresholding",
        "MVAU",
        "VVAU",
        "ConvolutionInputGenerator",
        "Pool",
        "FMPadding",
        "LabelSelect",
        "StreamingDataWidthConverter",
        "StreamingFIFO",
        "Reshape",
        "DuplicateStreams",
        "AddStreams",
        "ElementwiseAdd",
        "ElementwiseSub",
        "ElementwiseMul",
        "GlobalAccPool",
        "Transpose",
        "Flatten",
        "Identity",
    }
)

# What each weight-carrying layer calls its constant inputs, by input position.
PARAM_ROLES = {
    "MVAU": {1: "weights", 2: "thresholds"},
    "VVAU": {1: "weights", 2: "thresholds"},
    "Thresholding": {1: "thresholds"},
}


@dataclass
class Layer:
    """One node of the accelerator (or a software node around it)."""

    name: str
    op: str  # base op type: "MVAU" for MVAU_hls/MVAU_rtl/MVAU
    impl: str  # "hls", "rtl", "" (generic HW node) or "onnx"
    inputs: list[str]  # dynamic input tensors
    outputs: list[str]
    attrs: dict[str, Any]
    params: dict[str, np.ndarray] = field(default_factory=dict)  # role -> constant
    param_tensors: dict[str, str] = field(default_factory=dict)  # role -> tensor name
    param_dtypes: dict[str, str] = field(default_factory=dict)  # role -> FINN datatype name
    in_shapes: list[tuple[int, ...]] = field(default_factory=list)
    out_shapes: list[tuple[int, ...]] = field(default_factory=list)
    in_dtypes: list[str] = field(default_factory=list)
    out_dtypes: list[str] = field(default_factory=list)

    @property
    def code_dir(self) -> str:
        """Folder code generation wrote this layer's files to ('' if it did not run)."""
        return str(self.attrs.get("code_gen_dir_ipgen", "") or "")


@dataclass
class HWGraph:
    """The layers in execution order and the graph's boundary tensors."""

    layers: list[Layer]
    input_name: str
    input_shape: tuple[int, ...]  # without the batch dimension
    input_dtype: str
    output_name: str
    output_shape: tuple[int, ...]
    output_dtype: str
    source: str

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def hw_layers(self) -> list[Layer]:
        """The layers that are part of the accelerator (not the software around it)."""
        return [layer for layer in self.layers if layer.impl != "onnx"]


def _split_op(op_type: str, domain: str) -> tuple[str, str]:
    if not domain.startswith(HW_DOMAIN):
        return op_type, "onnx"
    return split_impl(op_type)


def _hw_attrs(node: Any) -> dict[str, Any]:
    """All attributes of a FINN HW node, with FINN's defaults for those not set."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    attrs: dict[str, Any] = {}
    for name in inst.get_nodeattr_types():
        try:
            attrs[name] = inst.get_nodeattr(name)
        except Exception:  # attributes without default that are not set: not used by us
            continue
    return attrs


def _onnx_attrs(node: Any) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _check_dataflow(layers: list[Layer], graph_input: str, graph_output: str, source: str) -> None:
    """Refuse a graph whose nodes, in file order, read a tensor no earlier node writes.

    Why: the simulator runs the nodes in file order; a damaged or hand-edited
    graph (a node removed, an input renamed) would otherwise fail mid-run with
    a bare ``KeyError`` on the missing tensor.
    """
    written = {graph_input}
    for layer in layers:
        for name in layer.inputs:
            if name not in written:
                raise BnnflowError(
                    f"{source}: node {layer.name} reads tensor {name!r}, which no earlier node "
                    "writes (the graph is damaged or not in topological order); rebuild it"
                )
        written.update(layer.outputs)
    if graph_output not in written:
        raise BnnflowError(
            f"{source}: no node writes the graph output {graph_output!r} (the graph is damaged); rebuild it"
        )


def _layers_of(model: Any, source: str) -> list[Layer]:
    layers = []
    for node in model.graph.node:
        op, impl = _split_op(node.op_type, node.domain)
        if op == "StreamingDataflowPartition":
            raise BnnflowError(f"{source}: nested dataflow partition {node.name}; not supported")
        if op not in SUPPORTED:
            raise BnnflowError(
                f"{source}: node {node.name} has op type {node.op_type}, which the simulator does not "
                f"support (supported: {', '.join(sorted(SUPPORTED))})"
            )
        attrs = _hw_attrs(node) if impl != "onnx" else _onnx_attrs(node)
        layer = Layer(name=node.name, op=op, impl=impl, inputs=[], outputs=list(node.output), attrs=attrs)
        roles = PARAM_ROLES.get(op, {})
        for pos, tname in enumerate(node.input):
            init = model.get_initializer(tname)
            if init is None:
                layer.inputs.append(tname)
                layer.in_shapes.append(tuple(model.get_tensor_shape(tname)))
                layer.in_dtypes.append(model.get_tensor_datatype(tname).name)
            else:
                role = roles.get(pos, f"in{pos}")
                layer.params[role] = np.asarray(init)
                layer.param_tensors[role] = tname
                layer.param_dtypes[role] = model.get_tensor_datatype(tname).name
        for tname in node.output:
            layer.out_shapes.append(tuple(model.get_tensor_shape(tname)))
            layer.out_dtypes.append(model.get_tensor_datatype(tname).name)
        layers.append(layer)
    return layers


def read_model(path: Path) -> Any:
    """The ONNX file ``path`` as a qonnx ModelWrapper; a damaged file is one error naming it."""
    from qonnx.core.modelwrapper import ModelWrapper

    try:
        return ModelWrapper(str(path))
    except Exception as exc:  # protobuf's DecodeError, onnx's and OSError alike
        raise BnnflowError(f"{path}: cannot read ONNX model ({brief(exc)}); rebuild into a new --out") from None


def load_graph(accel_path: Path | str, parent_path: Path | str | None = None) -> HWGraph:
    """Read the accelerator graph, wrapped in the software nodes of ``parent_path`` if given.

    The graphs are files in a build folder, which may be damaged or hand-edited: a
    graph that parses as ONNX but lacks what a FINN build writes (a tensor's shape or
    datatype, a node attribute) is one error naming the files, not a traceback.
    """
    try:
        return _load_graph(Path(accel_path), parent_path)
    except (TypeError, KeyError, ValueError, AttributeError, IndexError) as exc:
        files = " and ".join(str(f) for f in (parent_path, accel_path) if f is not None)
        raise BnnflowError(
            f"{files}: not a FINN accelerator graph as bnnflow build writes it ({brief(exc)}); "
            "the graph is damaged: rebuild into a new --out"
        ) from None


def _load_graph(accel_path: Path, parent_path: Path | str | None) -> HWGraph:
    accel = read_model(accel_path)
    layers = _layers_of(accel, str(accel_path))
    model = accel
    source = str(accel_path)
    if parent_path is not None:
        parent = read_model(Path(parent_path))
        sdp = [n for n in parent.graph.node if n.op_type == "StreamingDataflowPartition"]
        if len(sdp) != 1:
            raise BnnflowError(f"{parent_path}: expected one StreamingDataflowPartition, found {len(sdp)}")
        before: list[NodeProto] = []  # nodes on the CPU side of the accelerator
        after: list[NodeProto] = []
        seen = False
        for node in parent.graph.node:
            if node is sdp[0]:
                seen = True
            elif node.op_type != "StreamingDataflowPartition":
                (after if seen else before).append(node)
        # Parent and partition name their boundary tensors alike (FINN keeps the names).
        sw = [n for n in parent.graph.node if n.op_type != "StreamingDataflowPartition"]
        for node in sw:
            if node.domain.startswith(HW_DOMAIN):
                raise BnnflowError(f"{parent_path}: HW node {node.name} outside the dataflow partition")
        sw_layers = {layer.name: layer for layer in _layers_of(_subgraph(parent, sw), str(parent_path))}
        layers = [sw_layers[n.name] for n in before] + layers + [sw_layers[n.name] for n in after]
        model = parent
        source = f"{parent_path} + {accel_path.name}"
    gin, gout = model.graph.input[0].name, model.graph.output[0].name
    _check_dataflow(layers, gin, gout, source)
    return HWGraph(
        layers=layers,
        input_name=gin,
        input_shape=tuple(model.get_tensor_shape(gin))[1:],
        input_dtype=model.get_tensor_datatype(gin).name,
        output_name=gout,
        output_shape=tuple(model.get_tensor_shape(gout))[1:],
        output_dtype=model.get_tensor_datatype(gout).name,
        source=source,
    )


def _subgraph(parent: Any, nodes: list[Any]) -> Any:
    """A view of ``parent`` that lists only ``nodes`` (shapes, types and initializers stay)."""
    import copy

    view = copy.deepcopy(parent)
    keep = {n.name for n in nodes}
    kept = [n for n in view.graph.node if n.name in keep]
    del view.graph.node[:]
    view.graph.node.extend(kept)
    return view
