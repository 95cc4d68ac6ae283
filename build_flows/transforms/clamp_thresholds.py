"""Clamp thresholds into the range of the integers they are compared with, exactly.

A HW thresholding node (an MVAU with thresholds, or a standalone
Thresholding layer) compares an integer ``x`` with each threshold ``t``
(``x >= t``). A channel that always or never fires (a BatchNorm gamma near
zero, a large mean or beta, an input quantizer step below the smallest
pixel; trained and pruned nets have such channels) gets a threshold outside
the range of ``x``, and FINN's HW layers assert non-negative thresholds
where ``x`` cannot be negative (``get_hw_compatible_threshold_tensor`` of
XNOR MVAUs and of Thresholding on unsigned input), so its bit-width steps
stop. For an integer ``x`` in [lo, hi], ``x >= t`` equals
``x >= clip(ceil(t), lo, hi + 1)``: lo fires for every value, hi + 1 for
none, so the rewrite changes no output.

The range is the popcount range [0, MW] for an XNOR MVAU and the input
datatype's range for a Thresholding node. Other MVAUs are left to FINN's
``RoundAndClipThresholds``, which clips to their accumulator range.
"""

from __future__ import annotations

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation


def comparison_range(model: ModelWrapper, node) -> tuple[int, int] | None:
    """The integer range of the values ``node`` compares with its thresholds, or None to leave it."""
    if node.op_type.startswith("MVAU") and len(node.input) >= 3:
        inst = getCustomOp(node)
        if inst.get_nodeattr("binaryXnorMode"):
            return 0, int(inst.get_nodeattr("MW"))
        return None
    if node.op_type.startswith("Thresholding") and len(node.input) >= 2:
        dt = model.get_tensor_datatype(node.input[0])
        if dt.is_integer():
            return int(dt.min()), int(dt.max())
    return None


class ClampThresholdsToInputRange(Transformation):
    """Clip thresholds to integers in [lo, hi + 1] of the compared values (see the module docstring)."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            rng = comparison_range(model, node)
            if rng is None:
                continue
            tname = node.input[2] if node.op_type.startswith("MVAU") else node.input[1]
            thr = model.get_initializer(tname)
            if thr is None:
                continue
            new = np.clip(np.ceil(thr), rng[0], rng[1] + 1).astype(thr.dtype)
            if not np.array_equal(new, thr):
                model.set_initializer(tname, new)
        return model, False
