"""Order checks between passes: a pass that needs another to have run first calls one of these
on the graph it receives, so a wrong order in a step fails at once and names both passes,
instead of surfacing minutes later as a differing tensor or a refused build."""

from __future__ import annotations

from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper

from build_flows.transforms.errors import PassOrderError


def bipolar_matmuls(model: ModelWrapper) -> list[str]:
    """The MatMul nodes qonnx's ``ConvertBipolarMatMulToXnorPopcount`` would still convert
    (BIPOLAR input and weights)."""
    bipolar = DataType["BIPOLAR"]
    return [
        n.name or n.output[0]
        for n in model.get_nodes_by_op_type("MatMul")
        if model.get_tensor_datatype(n.input[0]) == bipolar and model.get_tensor_datatype(n.input[1]) == bipolar
    ]


def require_xnor_converted(model: ModelWrapper, pass_name: str) -> None:
    """Raise unless qonnx's XNOR conversion has run (no bipolar x bipolar MatMul is left)."""
    left = bipolar_matmuls(model)
    if left:
        raise PassOrderError(
            f"{pass_name} runs after ConvertBipolarMatMulToXnorPopcount, but the graph still "
            f"has bipolar MatMul nodes ({', '.join(left)}): run the XNOR conversion first"
        )


def require_convs_lowered(model: ModelWrapper, pass_name: str) -> None:
    """Raise while a ``Pad`` still feeds a ``Conv`` (qonnx's ``LowerConvsToMatMul`` has not run)."""
    padded = [
        n.name or n.output[0]
        for n in model.get_nodes_by_op_type("Conv")
        if (p := model.find_producer(n.input[0])) is not None and p.op_type == "Pad"
    ]
    if padded:
        raise PassOrderError(
            f"{pass_name} runs after LowerConvsToMatMul, but padded Conv nodes are left "
            f"({', '.join(padded)}): lower the convolutions first"
        )
