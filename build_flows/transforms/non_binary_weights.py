"""Keep the weights of non-XNOR MVAUs out of the BINARY datatype, which finn-hlslib cannot build.

FINN's ``MinimizeWeightBitWidth`` gives an MVAU the smallest datatype that
holds its weights. When every weight of a non-XNOR layer is +1 (a 1-output
layer on 8-bit input with few weights; it happens in small random and in
pruned nets), that is ``BINARY``, and the HLS MVAU then stops at code
generation with "True binary (non-bipolar) inputs not yet supported":
finn-hlslib has no {0, 1} weight type outside XNOR mode. The values are
+-1 weights, so ``BIPOLAR`` (the type the layer had before) describes them
exactly and builds; weights that are really 0/1 get ``INT2``. Only the
datatype annotation changes, never a value.
"""

from __future__ import annotations

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation


class NonBinaryMvauWeights(Transformation):
    """Re-type BINARY weights of non-XNOR MVAUs as BIPOLAR (values +-1) or INT2 (see the docstring)."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            if not node.op_type.startswith("MVAU"):
                continue
            inst = getCustomOp(node)
            if inst.get_nodeattr("binaryXnorMode") or inst.get_nodeattr("weightDataType") != "BINARY":
                continue
            w = model.get_initializer(node.input[1])
            new = "BIPOLAR" if w is not None and np.isin(w, (-1, 1)).all() else "INT2"
            inst.set_nodeattr("weightDataType", new)
            model.set_tensor_datatype(node.input[1], DataType[new])
        return model, False
