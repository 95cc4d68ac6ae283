"""Run whole batches through the layer list of :mod:`hw.graph`, exactly.

Each layer runs as the node it is (:mod:`hw.runners`, one runner per node
type) on the tensors of :mod:`hw.tensors`; asking for intermediates
materializes each tensor exactly as FINN lays it out, which is what the tests
compare with FINN's execution.
"""

from __future__ import annotations

import numpy as np

from bnnflow.errors import BnnflowError
from hw.graph import HWGraph
from hw.runners import Overflow, container, dtype, make_runner
from hw.tensors import Tensor, to_dense


# ---------------------------------------------------------------- the simulator
class Simulator:
    """A compiled plan of one HW graph; call :meth:`run` on batches."""

    def __init__(self, graph: HWGraph, wrap_accumulators: bool = False) -> None:
        """``wrap_accumulators``: model the hardware's fixed-width accumulators (two's
        complement wrap to :func:`hw.runners.accumulator_datatype`) instead of FINN's Python semantics
        (unbounded integers). The two differ only where an accumulator
        overflows, which :attr:`overflows` counts either way."""
        self.graph = graph
        self.wrap_accumulators = wrap_accumulators
        self._overflow: dict[str, Overflow] = {}
        self._plan = []
        for layer in graph.layers:
            if layer.op in ("MVAU", "VVAU"):
                self._overflow[layer.name] = Overflow()
            self._plan.append((layer, make_runner(layer, wrap_accumulators, self._overflow.get(layer.name))))
        #: per MVAU, per image of the last batch: accumulator values outside the hardware's type
        self.overflows: dict[str, np.ndarray] = {}

    def check_input(self, x: np.ndarray) -> None:
        """Reject inputs of the wrong shape or outside the input datatype, naming both."""
        g = self.graph
        if tuple(x.shape[1:]) != g.input_shape:
            raise BnnflowError(
                f"input has shape {tuple(x.shape)}, the build expects (N, {', '.join(map(str, g.input_shape))}) "
                f"({g.input_name}, datatype {g.input_dtype})"
            )
        dt = dtype(g.input_dtype)
        if dt.is_integer():
            if not np.issubdtype(x.dtype, np.integer) and not np.array_equal(x, np.round(x)):
                raise BnnflowError(f"input must hold integers ({g.input_dtype}), got {x.dtype} values")
            if x.size and (x.min() < dt.min() or x.max() > dt.max()):
                raise BnnflowError(
                    f"input values span [{x.min()}, {x.max()}], outside {g.input_dtype} [{dt.min()}, {dt.max()}]"
                )

    def run(self, x: np.ndarray, intermediates: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Simulate the batch ``x`` (N, *input_shape); returns the output and, if asked, every tensor.

        Intermediates are dense arrays in FINN's layout keyed by tensor name.
        """
        self.check_input(x)
        dt = dtype(self.graph.input_dtype)
        x = x.astype(container(self.graph.input_dtype)) if dt.is_integer() else x.astype(np.float32)
        env: dict[str, Tensor] = {self.graph.input_name: x}
        seen: dict[str, np.ndarray] = {}
        if intermediates:
            seen[self.graph.input_name] = x
        for layer, run in self._plan:
            ins = [env[t] for t in layer.inputs]  # all written: graph.load_graph checks the dataflow
            outs = run(ins)
            overflow = self._overflow.get(layer.name)
            if overflow is not None and overflow.counts is not None:  # an MVAU's runner sets counts
                self.overflows[layer.name] = overflow.counts
            for name, t in zip(layer.outputs, outs, strict=True):
                env[name] = t
                if intermediates:
                    seen[name] = to_dense(t)
        out = to_dense(env[self.graph.output_name])
        return out, seen

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Outputs for ``x`` in batches of ``batch_size`` (bounds memory, not speed), and
        per MVAU the per-image count of accumulator overflows."""
        outs: list[np.ndarray] = []
        ovf: dict[str, list[np.ndarray]] = {name: [] for name in self._overflow}
        for i in range(0, len(x), batch_size):
            outs.append(self.run(x[i : i + batch_size])[0])
            for name in ovf:
                ovf[name].append(self.overflows[name])
        if not outs:
            return np.zeros((0,) + self.graph.output_shape), {}
        return np.concatenate(outs), {k: np.concatenate(v) for k, v in ovf.items()}
