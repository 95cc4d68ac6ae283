"""XNOR accumulators wide enough for the popcount the hardware computes.

In XNOR mode, FINN's ``MVAU.minimize_accumulator_width`` (finn-plus 1.6.1)
sizes the accumulator for the +-1 x {0,1} products of the bipolar weights
(range about [-MW/2, MW/2] per column), but the hardware (finn-hlslib's
``XnorMul``) accumulates a popcount in [0, MW]. For MW = 576 it picks INT10
(up to 511) where the popcount reaches 576; ``RoundAndClipThresholds`` then
clips the thresholds to that narrow range, and the HLS accumulator
(finn-hlslib accumulates in the threshold type, which is at least as wide as
``accDataType``) can wrap. :class:`WidenXnorAccumulators` widens every XNOR
accumulator to cover [0, MW]; it belongs between FINN's
``MinimizeAccumulatorWidth`` (which would narrow it again) and
``RoundAndClipThresholds`` (which clips to it), as bnnflow's bit-width steps
run it.
"""

from __future__ import annotations

from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.util.basic import roundup_to_integer_multiple


def popcount_datatype(mw: int) -> DataType:
    """The narrowest datatype holding every popcount [0, ``mw``] of an ``mw``-wide XNOR dot product
    (qonnx's smallest type for ``mw``: unsigned, so it holds 0 too)."""
    return DataType.get_smallest_possible(mw)


class WidenXnorAccumulators(Transformation):
    """Widen the ``accDataType`` of XNOR-mode MVAUs to cover the popcount range [0, MW].

    Exact: clipping thresholds to [0, 2^b] with 2^b > MW changes no
    comparison with a popcount in [0, MW]. A node without activation also
    gets the new type as its output type, rounded up to whole bytes when it is
    the last node, as FINN does.
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
