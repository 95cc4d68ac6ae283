"""SIMD of HLS MVAUs raised to what finn-hlslib can build.

FINN's auto-folding (``SetFolding``, finn-plus 1.6.1) can leave an HLS MVAU
with SIMD < MW / 1024, which finn-hlslib cannot build: code generation then
stops with an assertion (a CNV at 300 FPS, MW = 2304 at SIMD 2).
:class:`RaiseHlsMvauSimd` raises such SIMD values after FINN's folding;
more SIMD only shortens the layer's cycles, so a folding that met its target
still meets it. Folding files are checked against the same rule
(:func:`hls_simd_fits`) before FINN runs.
"""

from __future__ import annotations

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation

#: finn-hlslib's HLS MVAU needs SIMD >= MW / HLS_MVAU_MAX_SF (FINN asserts it at code generation).
HLS_MVAU_MAX_SF = 1024


def hls_simd_fits(mw: int, simd: int) -> bool:
    """Whether finn-hlslib can build an HLS MVAU of width ``mw`` at ``simd``."""
    return simd * HLS_MVAU_MAX_SF >= mw


def min_hls_simd(mw: int) -> int:
    """The smallest SIMD that divides ``mw`` and that finn-hlslib can build."""
    return next(d for d in range(1, mw + 1) if mw % d == 0 and hls_simd_fits(mw, d))


class RaiseHlsMvauSimd(Transformation):
    """Raise the SIMD of every HLS MVAU below finn-hlslib's minimum to :func:`min_hls_simd`.

    ``raised`` lists (node, old SIMD, new SIMD), for the folding report.
    """

    def __init__(self) -> None:
        super().__init__()
        self.raised: list[tuple[str, int, int]] = []

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            if node.op_type != "MVAU_hls":
                continue
            inst = getCustomOp(node)
            mw, simd = int(inst.get_nodeattr("MW")), int(inst.get_nodeattr("SIMD"))
            if not hls_simd_fits(mw, simd):
                new = min_hls_simd(mw)
                inst.set_nodeattr("SIMD", new)
                self.raised.append((node.name, simd, new))
        return model, False
