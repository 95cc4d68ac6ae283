"""What ``bnnflow build`` accepts: a bnnflow checkpoint or a QONNX file of a W1A1 net.

Everything here runs before FINN does, so a bad input ends in one clear
:class:`BnnflowError` instead of a failure deep inside a FINN step:

* an unreadable or corrupt ONNX file;
* op types the W1A1 flow does not handle (named, with their nodes);
* quantizers that are not binary: weights must be 1-bit (``BipolarQuant`` or
  a 1-bit ``Quant``), activations too, except one quantizer of at most 8 bits
  on the input path (the conv nets' 8-bit input);
* weight layers whose weights are not quantized at all;
* constants that are not finite (NaN or infinite weights, thresholds,
  scales, float attributes), a BatchNorm variance below zero and a quantizer
  scale that is not positive: FINN's streamlining would turn them into NaN
  thresholds and spin for minutes on them (:func:`check_finite`).

A QONNX file from elsewhere gets the pre/post-processing FINN expects where it
lacks them, as FINN's end-to-end flows add them: a ``/255`` front with a UINT8
input when the input is float (so the network must take [0, 1] images), and
qonnx's ``InsertTopK`` when the graph does not end in TopK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow import checkpoint
from bnnflow.errors import BnnflowError, CheckpointError, NotSupported

#: Op types of a W1A1 QONNX graph that FINN's builder turns into a dataflow accelerator.
SUPPORTED_OPS = frozenset(
    {
        "Quant",
        "BipolarQuant",
        "Conv",
        "Gemm",
        "MatMul",
        "BatchNormalization",
        "MaxPool",
        "Reshape",
        "Flatten",
        "Transpose",
        "Identity",
        "Mul",
        "Add",
        "Sub",
        "Div",
        "TopK",
        "Pad",
        "ReduceMean",
    }
)
WEIGHT_OPS = frozenset({"Conv", "Gemm", "MatMul"})


@dataclass
class BuildInput:
    """The QONNX file FINN builds and what is known about where it came from."""

    path: Path  # the QONNX file handed to FINN (inside the build folder)
    kind: str  # "checkpoint" or "qonnx"
    source: Path
    dataset: str | None = None
    arch: str | None = None
    widths: list[int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] | None = None  # agreement check of a checkpoint export
    notes: list[str] = field(default_factory=list)


def _looks_like_checkpoint(path: Path) -> bool:
    if path.suffix in (".pt", ".pth"):
        return True
    if path.suffix == ".onnx":
        return False
    with path.open("rb") as f:
        return f.read(2) == b"PK"  # torch.save's zip container


def load_qonnx(path: Path) -> Any:
    """Read an ONNX file into a qonnx ModelWrapper, or say it is not a readable ONNX model."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper

    try:
        proto = onnx.load(str(path))
        if len(proto.graph.node) == 0:
            raise ValueError("the graph has no nodes")
        onnx.checker.check_model(proto)
    except Exception as exc:  # protobuf raises DecodeError and others for corrupt files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BnnflowError(
            f"{path}: not a readable ONNX model ({first}); give a QONNX file exported "
            "with brevitas.export.export_qonnx or a bnnflow checkpoint"
        ) from None
    return ModelWrapper(proto)


def _nonfinite(arr: np.ndarray) -> bool:
    return np.issubdtype(arr.dtype, np.floating) and not bool(np.isfinite(arr).all())


def check_finite(model: Any, path: Path) -> None:
    """Refuse a graph whose constants cannot give finite values (see the module docstring).

    ``model`` is an ONNX ModelProto or a qonnx ModelWrapper; ``path`` the user's file errors name.
    """
    from onnx import AttributeProto, numpy_helper

    graph = model.graph
    hint = "e.g. a training run that diverged; export the network again from finite weights"
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # first: an infinite scale has a known cause worth naming
        if (
            node.op_type in ("Quant", "BipolarQuant")
            and len(node.input) > 1
            and node.input[1] in consts
            and np.isinf(consts[node.input[1]]).any()
        ):
            raise BnnflowError(
                f"{path}: quantizer {node.name} has an infinite scale, as Brevitas gives a 1-bit integer weight "
                "quantizer (weight_bit_width=1 on the default Int8WeightPerTensorFloat divides by the largest "
                "1-bit narrow-range integer, 0); use a binary one (weight_quant=SignedBinaryWeightPerTensorConst) "
                "and export again"
            )
    for init in graph.initializer:
        arr = consts[init.name]
        if _nonfinite(arr):
            raise BnnflowError(f"{path}: weights are not finite (NaN or infinite values in {init.name}); {hint}")
    for node in graph.node:
        for a in node.attribute:
            if a.type == AttributeProto.FLOAT:
                values = np.array([a.f])
            elif a.type == AttributeProto.FLOATS:
                values = np.array(a.floats, dtype=np.float64)
            elif a.type == AttributeProto.TENSOR:
                values = numpy_helper.to_array(a.t)
            else:
                continue
            if _nonfinite(values):
                raise BnnflowError(
                    f"{path}: attribute {a.name} of {node.op_type} node {node.name or '(unnamed)'} "
                    f"is not finite; {hint}"
                )
        if node.op_type == "BatchNormalization" and len(node.input) > 4 and node.input[4] in consts:
            var = consts[node.input[4]]
            if (var < 0).any():
                raise BnnflowError(
                    f"{path}: negative BatchNorm variance in {node.input[4]} (node {node.name}, down "
                    f"to {float(var.min()):g}); a variance is never negative: the file is damaged"
                )
        if node.op_type in ("Quant", "BipolarQuant") and len(node.input) > 1 and node.input[1] in consts:
            scale = consts[node.input[1]]
            if not (scale > 0).all():
                raise BnnflowError(
                    f"{path}: quantizer {node.name} has a scale that is not positive "
                    f"({float(scale.min()):g}); the file is damaged"
                )


def _bits(model: Any, node: Any) -> float | None:
    if node.op_type == "BipolarQuant":
        return 1.0
    bw = model.get_initializer(node.input[3]) if len(node.input) > 3 else None
    return None if bw is None else float(np.asarray(bw).reshape(-1)[0])


def check_w1a1(model: Any, path: Path) -> None:
    """Refuse graphs that are not W1A1 networks FINN can build (see the module docstring)."""
    ops: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.op_type not in SUPPORTED_OPS:
            ops.setdefault(n.op_type, []).append(n.name or "(unnamed)")
    if ops:
        listed = "; ".join(
            f"{op} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" for op, names in ops.items()
        )
        raise NotSupported(
            f"unsupported layer type(s) for the W1A1 FINN flow: {listed}. "
            f"Supported: {', '.join(sorted(SUPPORTED_OPS))}",
            str(path),
        )
    weight_layers = [n for n in model.graph.node if n.op_type in WEIGHT_OPS]
    if not weight_layers:
        raise BnnflowError(f"{path}: no Conv, Gemm or MatMul layer; nothing to build")
    for n in weight_layers:
        w = model.find_producer(n.input[1])
        if w is None or w.op_type not in ("Quant", "BipolarQuant"):
            raise BnnflowError(
                f"{path}: {n.op_type} node {n.name} has unquantized weights; bnnflow builds binary (1-bit) weights only"
            )
    seen_weight_layer: set[str] = set()
    for n in model.graph.node:  # exported graphs are topologically sorted
        if n.op_type in WEIGHT_OPS:
            seen_weight_layer.update(n.output)
        if n.op_type not in ("Quant", "BipolarQuant"):
            if any(i in seen_weight_layer for i in n.input):
                seen_weight_layer.update(n.output)
            continue
        bits = _bits(model, n)
        is_weight = model.get_initializer(n.input[0]) is not None
        what = "weight" if is_weight else "activation"
        if bits is None:
            raise BnnflowError(f"{path}: {what} quantizer {n.name} has no constant bit width")
        if bits == 1:
            continue
        input_path = not is_weight and not any(i in seen_weight_layer for i in n.input)
        if input_path and bits <= 8:
            continue
        raise NotSupported(
            f"{n.name} quantizes {what}s to {bits:g} bits; bnnflow builds W1A1 networks "
            "(1-bit weights and activations, an input quantizer of at most 8 bits)",
            str(path),
        )


def _add_uint8_front(model: Any) -> Any:
    """Put a ``/255`` node in front of the graph and make its input UINT8 (FINN's ToTensor step)."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.merge_onnx_models import MergeONNXModels
    from qonnx.util.basic import qonnx_make_model

    shape = model.get_tensor_shape(model.graph.input[0].name)
    inp = helper.make_tensor_value_info("uint8_in", TensorProto.FLOAT, shape)
    out = helper.make_tensor_value_info("uint8_scaled", TensorProto.FLOAT, shape)
    div = helper.make_node("Div", ["uint8_in", "uint8_scale"], ["uint8_scaled"], name="Uint8ToFloat")
    graph = helper.make_graph(
        [div],
        "uint8_front",
        [inp],
        [out],
        initializer=[helper.make_tensor("uint8_scale", TensorProto.FLOAT, [], [255.0])],
    )
    pre = ModelWrapper(qonnx_make_model(graph, producer_name="bnnflow"))
    merged = model.transform(MergeONNXModels(pre))
    merged.set_tensor_datatype(merged.graph.input[0].name, DataType["UINT8"])
    return merged


def _prepare_qonnx(src: Path, dest: Path) -> BuildInput:
    from qonnx.core.datatype import DataType
    from qonnx.transformation.insert_topk import InsertTopK
    from qonnx.util.cleanup import cleanup_model

    model = load_qonnx(src)
    inputs = [i.name for i in model.graph.input if model.get_initializer(i.name) is None]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise BnnflowError(
            f"{src}: the graph has {len(inputs)} inputs and {len(model.graph.output)} "
            "outputs; bnnflow builds single-input, single-output classifiers"
        )
    try:
        model = cleanup_model(model)
    except Exception as exc:
        raise BnnflowError(f"{src}: qonnx cannot clean up this graph ({str(exc)[:200]})") from None
    check_w1a1(model, src)
    check_finite(model, src)  # after the layer checks: an unsupported net is told that first
    res = BuildInput(path=dest, kind="qonnx", source=src)
    if model.get_tensor_datatype(model.graph.input[0].name) == DataType["FLOAT32"]:
        model = cleanup_model(_add_uint8_front(model))
        res.notes.append("float input: added a /255 front with UINT8 input (the network must take [0, 1] images)")
    if (
        model.find_consumer(model.graph.output[0].name) is None
        and model.find_producer(model.graph.output[0].name).op_type != "TopK"
    ):
        model = model.transform(InsertTopK(k=1))
        res.notes.append("added TopK (k=1) at the output")
    model.save(str(dest))
    return res


def prepare_input(src: Path, dest: Path, n_check: int, data_dir: Path | None) -> BuildInput:
    """Turn ``src`` (checkpoint or QONNX) into the checked QONNX file ``dest`` that FINN builds."""
    from build_flows.export import export

    if not src.is_file():
        raise BnnflowError(f"{src}: file not found (give a bnnflow checkpoint .pt or a QONNX .onnx file)")
    if not _looks_like_checkpoint(src):
        return _prepare_qonnx(src, dest)
    try:
        raw = checkpoint.read_raw(src)
    except CheckpointError:
        if src.suffix in (".pt", ".pth"):
            raise
        return _prepare_qonnx(src, dest)
    res = export(src, dest, n_check=n_check, data_dir=data_dir)
    check_w1a1(load_qonnx(dest), src)
    return BuildInput(
        path=dest,
        kind="checkpoint",
        source=src,
        dataset=raw.get("dataset"),
        arch=raw["arch"],
        widths=list(raw["widths"]),
        meta=dict(raw["meta"]),
        export={
            "images": res.images,
            "n": res.n,
            "top1_agreement": res.top1_agreement,
            "max_logit_diff": res.max_logit_diff,
        },
    )


__all__ = ["BuildInput", "SUPPORTED_OPS", "check_finite", "check_w1a1", "load_qonnx", "prepare_input"]
