"""One runner per HW node type: a function from the layer's input tensors to its output tensors.

Semantics follow FINN's Python execution of the HW nodes (``execute_node``):
thresholding counts thresholds ``<=`` the value and adds ``ActVal``, XNOR
MVAUs accumulate the popcount of XNOR, ``LabelSelect`` is ONNX TopK (ties go
to the lower index). :func:`make_runner` picks the runner of a layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from qonnx.core.datatype import DataType

from bnnflow.errors import BnnflowError, NotSupported
from hw import kernels
from hw.graph import Layer
from hw.tensors import Bits, Tensor, Windows, batch_of, to_bits, to_dense

BINARY_TYPES = ("BINARY", "BIPOLAR")


def dtype(name: str) -> Any:
    return DataType[name]


def _abs_max(dt_name: str) -> int:
    dt = dtype(dt_name)
    return int(max(abs(dt.min()), abs(dt.max())))


Runner = Callable[[list[Tensor]], list[Tensor]]


# ---------------------------------------------------------------- layer runners
class Overflow:
    """Per-image count of accumulator values outside the layer's hardware accumulator type, last batch."""

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None


def accumulator_datatype(layer: Layer) -> str:
    """The datatype the generated MVAU accumulates in, which is where the hardware would wrap.

    finn-hlslib declares the accumulator as ``decltype(activation.init(0, 0))``:
    the threshold type for ``ThresholdsActivation`` (FINN writes the threshold
    tensor's datatype there, at least as wide as ``accDataType``) and the
    output type for ``PassThroughActivation`` (no activation). Other variants
    (RTL, generic nodes) accumulate in ``accDataType``.
    """
    a = layer.attrs
    if layer.impl == "hls":
        if a.get("noActivation", 0):
            return layer.out_dtypes[0]
        if "thresholds" in layer.param_dtypes:
            return layer.param_dtypes["thresholds"]
    return str(a.get("accDataType", "INT32"))


def _mvau(layer: Layer, wrap: bool, overflow: Overflow) -> Runner:
    a = layer.attrs
    xnor = bool(a.get("binaryXnorMode", 0))
    w = layer.params["weights"]
    mw, mh = int(a["MW"]), int(a["MH"])
    if w.shape != (mw, mh):
        raise BnnflowError(f"{layer.name}: weights have shape {w.shape}, expected (MW, MH) = {(mw, mh)}")
    no_act = bool(a.get("noActivation", 0))
    out_dt = layer.out_dtypes[0]
    act_val = int(a.get("ActVal", 0))
    thr = None if no_act else kernels.int_thresholds(layer.params["thresholds"])
    adt = dtype(accumulator_datatype(layer))
    acc_lo, acc_hi = int(adt.min()), int(adt.max())
    fused = thr is not None and thr.shape[1] == 1 and out_dt in BINARY_TYPES and (act_val == 0 or out_dt == "BIPOLAR")
    packed_w: dict[tuple[int, int], np.ndarray] = {}
    out_shape = layer.out_shapes[0][1:]
    if xnor and not np.isin(w, (0, 1)).all():
        raise BnnflowError(f"{layer.name}: XNOR-mode weights must be 0/1")
    if not xnor:
        bound = mw * _abs_max(layer.in_dtypes[0]) * int(np.abs(w).max(initial=0))
        if bound >= kernels.INT64_EXACT:
            raise BnnflowError(f"{layer.name}: accumulator bound {bound} exceeds int64; not simulated exactly")
        adtype = kernels.acc_dtype(bound)
        w_int = w.astype(adtype)

    def finish(acc: np.ndarray) -> Tensor:
        acc, overflow.counts = kernels.check_accumulator(acc, acc_lo, acc_hi, wrap)
        if thr is None:
            return acc
        t = np.broadcast_to(thr, (mh, thr.shape[1]))
        y = kernels.count_thresholds(acc, t)
        if out_dt == "BIPOLAR":
            return to_bits(2 * y - 1)
        y = y + act_val
        return to_bits(y) if out_dt == "BINARY" else y

    def run(ins: list[Tensor]) -> list[Tensor]:
        x = ins[0]
        n = batch_of(x)
        if xnor:
            if isinstance(x, Windows):
                src = to_bits(x.src)
                geo = (x.kh, x.kw, x.sh, x.sw, x.dh, x.dw, x.out_h, x.out_w)
                xw = src.words
            else:
                src = to_bits(x)
                if src.nbits != mw:
                    # An FC layer fed by a feature map: FINN's MVAU reads its input as
                    # (N, ..., MW) in memory order (NHWC flattened), one vector per image.
                    src = to_bits(to_dense(x).reshape(n, -1, mw))
                geo = (1, 1, 1, 1, 1, 1, int(np.prod(src.shape[1:-1], dtype=np.int64)), 1)
                xw = src.words.reshape(n, geo[6], 1, -1)
            key = geo[:2]
            if key not in packed_w:
                packed_w[key] = kernels.pack_xnor_weights(w, geo[0], geo[1])
            wp = packed_w[key]
            if fused and thr is not None:  # fused implies thr
                t1 = np.broadcast_to(thr[:, 0], (mh,)).astype(np.int64)
                words, overflow.counts = kernels.xnor_threshold_bits(xw, wp, t1, mw, *geo[2:], acc_lo, acc_hi, wrap)
                return [
                    Bits(words.reshape((n,) + out_shape[:-1] + (words.shape[-1],)), mh, bipolar=out_dt == "BIPOLAR")
                ]
            acc = kernels.xnor_popcount(xw, wp, mw, *geo[2:])
            return [finish(acc.reshape((n,) + out_shape).astype(np.int64))]
        if isinstance(x, Windows):
            xi = to_dense(x.src).astype(adtype)
            geo = (x.kh, x.kw, x.sh, x.sw, x.dh, x.dw, x.out_h, x.out_w)
        else:
            xi = to_dense(x).reshape(n, -1, 1, mw).astype(adtype)
            geo = (1, 1, 1, 1, 1, 1, xi.shape[1], 1)
        key = geo[:2]
        if key not in packed_w:
            packed_w[key] = np.ascontiguousarray(w_int.reshape(geo[0], geo[1], -1, mh))
        if fused and thr is not None:  # fused implies thr
            t1 = np.clip(np.broadcast_to(thr[:, 0], (mh,)), -bound - 1, bound + 1).astype(adtype)
            words, overflow.counts = kernels.int_conv_threshold_bits(
                xi, packed_w[key], t1, *geo[2:], acc_lo, acc_hi, wrap
            )
            return [Bits(words.reshape((n,) + out_shape[:-1] + (words.shape[-1],)), mh, bipolar=out_dt == "BIPOLAR")]
        acc = kernels.int_conv(xi, packed_w[key], *geo[2:]).astype(np.int64)
        return [finish(acc.reshape((n,) + out_shape))]

    return run


def _vvau(layer: Layer, wrap: bool, overflow: Overflow) -> Runner:
    """FINN's VVAU (a depthwise conv; FINN also makes one of a conv with one input and one output
    channel): per channel, the dot product of its own window with its own weights, then thresholds."""
    a = layer.attrs
    if a.get("binaryXnorMode", 0) or layer.in_dtypes[0] in BINARY_TYPES:
        raise NotSupported(
            f"{layer.name}: a binary-input depthwise VVAU (FINN's Python execution of it "
            "does not compute an XNOR popcount, so it has no reference to match)"
        )
    ch = int(a["Channels"])
    kh, kw = (int(v) for v in a["Kernel"])
    w = layer.params["weights"].reshape(ch, kh * kw)
    bound = kh * kw * _abs_max(layer.in_dtypes[0]) * int(np.abs(w).max(initial=0))
    adtype = kernels.acc_dtype(bound)
    w_int = w.T.astype(adtype)  # (K, C)
    no_act = bool(a.get("noActivation", 0))
    out_dt = layer.out_dtypes[0]
    act_val = int(a.get("ActVal", 0))
    thr = None if no_act else kernels.int_thresholds(layer.params["thresholds"])
    adt = dtype(str(a.get("accDataType", "INT32")))
    acc_lo, acc_hi = int(adt.min()), int(adt.max())

    def run(ins: list[Tensor]) -> list[Tensor]:
        d = to_dense(ins[0]).astype(adtype)
        n, oh, ow = d.shape[:3]
        acc = np.einsum("nhwkc,kc->nhwc", d.reshape(n, oh, ow, kh * kw, ch), w_int).astype(np.int64)
        acc, overflow.counts = kernels.check_accumulator(acc, acc_lo, acc_hi, wrap)
        if thr is None:
            return [acc]
        y = kernels.count_thresholds(acc, np.broadcast_to(thr, (ch, thr.shape[1])))
        if out_dt == "BIPOLAR":
            return [to_bits(2 * y - 1)]
        y = y + act_val
        return [to_bits(y) if out_dt == "BINARY" else y]

    return run


def _thresholding(layer: Layer) -> Runner:
    a = layer.attrs
    thr = layer.params["thresholds"]
    act_val = int(a.get("ActVal", 0))
    in_dt, out_dt = dtype(layer.in_dtypes[0]), layer.out_dtypes[0]
    lut = None
    if in_dt.is_integer() and in_dt.bitwidth() <= 16:
        # the table holds the final values (counts + ActVal) in the output's container type
        lo, hi = int(in_dt.min()), int(in_dt.max())
        lut = kernels.threshold_lut(thr, lo, hi) + act_val
        if out_dt not in BINARY_TYPES:
            lut = lut.astype(container(out_dt))

    def run(ins: list[Tensor]) -> list[Tensor]:
        x = to_dense(ins[0])
        if lut is not None:
            y = kernels.apply_lut(x, lut, lo)  # ActVal is in the table
            if out_dt not in BINARY_TYPES:
                return [y]
        elif in_dt.is_integer():
            t = kernels.int_thresholds(thr)
            y = kernels.count_thresholds(x, np.broadcast_to(t, (x.shape[-1], t.shape[1]))) + act_val
        else:  # float input: compare in float32 as FINN does
            xf = x.astype(np.float32)[..., None]
            y = np.count_nonzero(xf >= thr.astype(np.float32), axis=-1).astype(np.int64) + act_val
        if out_dt == "BIPOLAR":
            return [to_bits(2 * y - 1)]
        return [to_bits(y) if out_dt == "BINARY" else y.astype(container(out_dt))]

    return run


def container(dt_name: str) -> Any:
    """Smallest numpy integer type that holds ``dt_name`` (int64 for wide ones)."""
    dt = dtype(dt_name)
    if not dt.is_integer():
        return np.float32
    for cand in (np.int8, np.uint8, np.int16, np.int32):
        info = np.iinfo(cand)
        if info.min <= dt.min() and dt.max() <= info.max:
            return cand
    return np.int64


def _swg(layer: Layer) -> Runner:
    a = layer.attrs
    kh, kw = a["ConvKernelDim"]
    sh, sw = a["Stride"]
    dh, dw = a.get("Dilation", [1, 1])
    oh, ow = a["OFMDim"]

    def run(ins: list[Tensor]) -> list[Tensor]:
        x = ins[0]
        if isinstance(x, Windows):
            x = to_dense(x)
        return [Windows(x, kh, kw, sh, sw, dh, dw, oh, ow)]

    return run


def _pool(layer: Layer) -> Runner:
    a = layer.attrs
    fn = a["Function"]
    ch = int(a["Channels"])
    if fn not in ("MaxPool", "AccPool"):
        raise BnnflowError(f"{layer.name}: Pool function {fn} is not supported (MaxPool, AccPool)")

    def run(ins: list[Tensor]) -> list[Tensor]:
        x = ins[0]
        if fn == "MaxPool" and isinstance(x, Windows) and isinstance(x.src, Bits) and not x.src.bipolar:
            words = kernels.or_pool_words(x.src.words, x.kh, x.kw, x.sh, x.sw, x.dh, x.dw, x.out_h, x.out_w)
            return [Bits(words, x.src.nbits)]
        d = to_dense(x)
        d = d.reshape(d.shape[:-1] + (-1, ch))
        return [d.max(axis=-2) if fn == "MaxPool" else d.astype(np.int64).sum(axis=-2)]

    return run


def _fmpadding(layer: Layer) -> Runner:
    top, left, bottom, right = layer.attrs["Padding"]

    def run(ins: list[Tensor]) -> list[Tensor]:
        x = ins[0]
        if isinstance(x, Bits) and not x.bipolar:
            return [Bits(np.pad(x.words, ((0, 0), (top, bottom), (left, right), (0, 0))), x.nbits)]
        return [np.pad(to_dense(x), ((0, 0), (top, bottom), (left, right), (0, 0)))]

    return run


def _labelselect(layer: Layer) -> Runner:
    k = int(layer.attrs["K"])

    def run(ins: list[Tensor]) -> list[Tensor]:
        x = to_dense(ins[0]).astype(np.int64)
        if k == 1:
            return [np.argmax(x, axis=-1)[..., None]]
        return [np.argsort(-x, axis=-1, kind="stable")[..., :k]]

    return run


def _passthrough(layer: Layer) -> Runner:
    n_out = len(layer.outputs)
    return lambda ins: [ins[0]] * n_out


def _reshape(layer: Layer) -> Runner:
    target = layer.out_shapes[0][1:]

    def run(ins: list[Tensor]) -> list[Tensor]:
        x = ins[0]
        n = batch_of(x)
        if isinstance(x, Bits) and target and target[-1] == x.nbits:
            return [Bits(x.words.reshape((n,) + target[:-1] + (x.words.shape[-1],)), x.nbits, x.bipolar)]
        return [to_dense(x).reshape((n,) + target)]

    return run


def _transpose(layer: Layer) -> Runner:
    perm = list(layer.attrs["perm"])
    if perm[0] != 0:
        raise BnnflowError(f"{layer.name}: Transpose moves the batch axis ({perm}); not supported")

    def run(ins: list[Tensor]) -> list[Tensor]:
        x = ins[0]
        if isinstance(x, Bits) and perm[-1] == len(perm) - 1:
            return [Bits(np.ascontiguousarray(np.transpose(x.words, perm)), x.nbits, x.bipolar)]
        return [np.ascontiguousarray(np.transpose(to_dense(x), perm))]

    return run


_NP_OPS = {"ElementwiseAdd": np.add, "ElementwiseSub": np.subtract, "ElementwiseMul": np.multiply, "AddStreams": np.add}


def _elementwise(layer: Layer) -> Runner:
    op = _NP_OPS[layer.op]
    a = layer.attrs
    const = layer.params.get("in1")
    lhs_dt = dtype(a.get("lhs_dtype", layer.in_dtypes[0]))
    rhs_name = a.get("rhs_dtype", layer.in_dtypes[1] if len(layer.in_dtypes) > 1 else layer.in_dtypes[0])
    rhs_dt = dtype(rhs_name)
    out_dt = dtype(layer.out_dtypes[0])

    def cast(v: np.ndarray, dt: Any) -> np.ndarray:
        return v.astype(np.int64) if dt.is_integer() else v.astype(np.float32)

    def run(ins: list[Tensor]) -> list[Tensor]:
        lhs = cast(to_dense(ins[0]), lhs_dt)
        rhs = cast(const if const is not None else to_dense(ins[1]), rhs_dt)
        out = op(lhs, rhs)
        return [out.astype(np.int64) if out_dt.is_integer() else out.astype(np.float32)]

    return run


def _globalaccpool(layer: Layer) -> Runner:
    def run(ins: list[Tensor]) -> list[Tensor]:
        x = to_dense(ins[0]).astype(np.int64)
        return [x.sum(axis=(1, 2), keepdims=True)]

    return run


_RUNNERS: dict[str, Callable[[Layer], Runner]] = {
    "Thresholding": _thresholding,
    "ConvolutionInputGenerator": _swg,
    "Pool": _pool,
    "FMPadding": _fmpadding,
    "LabelSelect": _labelselect,
    "StreamingDataWidthConverter": _passthrough,
    "StreamingFIFO": _passthrough,
    "Identity": _passthrough,
    "DuplicateStreams": _passthrough,
    "Reshape": _reshape,
    "Flatten": _reshape,
    "Transpose": _transpose,
    "AddStreams": _elementwise,
    "ElementwiseAdd": _elementwise,
    "ElementwiseSub": _elementwise,
    "ElementwiseMul": _elementwise,
    "GlobalAccPool": _globalaccpool,
}


def make_runner(layer: Layer, wrap_accumulators: bool, overflow: Overflow | None) -> Runner:
    """The runner of ``layer``; MVAU and VVAU runners record accumulator overflows in ``overflow``."""
    if layer.op in ("MVAU", "VVAU"):
        if overflow is None:
            raise ValueError(f"{layer.name}: an {layer.op} runner needs an Overflow record")
        return (_mvau if layer.op == "MVAU" else _vvau)(layer, wrap_accumulators, overflow)
    return _RUNNERS[layer.op](layer)
