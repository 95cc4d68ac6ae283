"""Batch kernels: bit-packed XNOR-popcount, exact integer products, thresholds, pooling.

Why these are exact
-------------------
* Binary tensors travel bit-packed along the channel axis, 64 channels per
  ``uint64`` word (bit ``i`` of word ``j`` is channel ``64*j + i``); bits past
  the channel count are 0 in activations and weights alike. An XNOR-popcount
  layer's accumulator is ``P = K - popcount(x XOR w)`` summed over the words
  of a window: the padding bits XOR to 0, so only the ``K`` real products
  count. Everything is integer arithmetic (LLVM's ``ctpop`` on ``uint64``,
  ``int64`` sums), so the result is exact for any ``K``.
* Integer (non-XNOR) layers, e.g. the first conv on 8-bit pixels, multiply
  and accumulate in a compiled loop without im2col, in float32 when the
  datatypes bound every partial sum by ``MW * max|x| * max|w| < 2^24``
  (float32 holds every such integer, so no rounding can occur), else in
  int64 (exact below 2^63). For CNV's first layer the bound is
  27 * 128 * 1 = 3456. float32 measured ~1.9x faster than int64 there.
* Threshold comparisons on integer accumulators use ``ceil(T)``:
  ``acc >= T  <=>  acc >= ceil(T)`` for integer ``acc``.

Why numba for XNOR layers: ``benchmarks/sim_kernels.py`` measures the
alternatives (numpy ``bitwise_count`` on an im2col of packed words, float32
matmul of +-1 values, this kernel). The kernel keeps one output pixel's
accumulators in registers, loops over output channels innermost (weights laid
out ``(kh, kw, word, OC)``) so LLVM vectorizes XOR+popcount over channels
(``vpopcntq`` where the CPU has it), never materializes the im2col, and
runs the batch in parallel with ``prange``.
"""

from __future__ import annotations

import os

import numba.core.config
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from bnnflow.files import cache_dir

# Numba caches compiled kernels beside this file by default: a read-only install (a container run
# as another user) could not, and a shared one would mix users. The cache goes to bnnflow's cache
# folder instead, unless NUMBA_CACHE_DIR says where; set before the decorators below read it.
if not os.environ.get("NUMBA_CACHE_DIR"):
    # numba fills its config module at run time, so its types lack the setting
    numba.core.config.CACHE_DIR = str(cache_dir() / "numba")  # type: ignore[attr-defined]

INT16_EXACT = 2**15 - 1
FLOAT32_EXACT = 2**24
INT64_EXACT = 2**63


def acc_dtype(bound: int) -> type[np.number]:
    """Accumulator dtype that is exact for partial sums up to ``bound`` in magnitude.

    The narrowest that also holds ``bound + 1`` (thresholds are clipped to one
    past the bound): int16 below 2^15 - 1 vectorizes widest (CNV's 8-bit first
    conv, bound 27 * 128, one thread: 0.117 ms/img in int16, 0.167 in
    float32, 0.185 in int32, 0.403 in int64; ``benchmarks/sim_kernels.py``);
    float32 represents every integer up to 2^24, so its products and sums of
    such integers are exact; beyond that int64.
    """
    if bound < INT16_EXACT:
        return np.int16
    if bound < FLOAT32_EXACT:
        return np.float32
    if bound < INT64_EXACT:
        return np.int64
    raise ValueError(f"accumulator bound {bound} exceeds int64")


@intrinsic
def _popcount64(typingctx, x):
    """LLVM ``ctpop`` on a uint64 (one POPCNT/VPOPCNTQ instruction)."""
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return sig, codegen


# ---------------------------------------------------------------- packing
def n_words(nbits: int) -> int:
    return (nbits + 63) // 64


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """{0,1} array (..., C) -> uint64 words (..., ceil(C/64)), channel i at bit i % 64."""
    c = bits.shape[-1]
    nbytes = n_words(c) * 8
    packed = np.packbits(np.asarray(bits, dtype=np.uint8), axis=-1, bitorder="little")
    if packed.shape[-1] != nbytes:
        pad = [(0, 0)] * (packed.ndim - 1) + [(0, nbytes - packed.shape[-1])]
        packed = np.pad(packed, pad)
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False)


def unpack_bits(words: np.ndarray, nbits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: uint64 (..., W) -> uint8 {0,1} (..., nbits)."""
    as_bytes = np.ascontiguousarray(words).astype("<u8", copy=False).view(np.uint8)
    return np.unpackbits(as_bytes, axis=-1, count=nbits, bitorder="little")


def pack_xnor_weights(w: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """Binary weights (MW, MH) with MW ordered (ky, kx, c) -> uint64 (kh, kw, words, MH)."""
    mw, mh = w.shape
    c = mw // (kh * kw)
    per_pixel = np.transpose(w.reshape(kh, kw, c, mh), (3, 0, 1, 2))  # (MH, kh, kw, C)
    packed = pack_bits(per_pixel)  # (MH, kh, kw, words)
    return np.ascontiguousarray(np.transpose(packed, (1, 2, 3, 0)))


# ---------------------------------------------------------------- XNOR layers
@njit(cache=True, nogil=True, inline="always")
def _window_mismatches(x, w, n, oy, ox, stride_h, stride_w, dil_h, dil_w, mism):  # pragma: no cover
    """Per output channel, the number of bit mismatches (XOR popcount) between the
    input window at (n, oy, ox) and the filter, written into ``mism``."""
    kh, kw, nw, oc_n = w.shape
    mism[:] = 0
    for ky in range(kh):
        iy = oy * stride_h + ky * dil_h
        for kx in range(kw):
            ix = ox * stride_w + kx * dil_w
            for j in range(nw):
                xv = x[n, iy, ix, j]
                for oc in range(oc_n):
                    mism[oc] += _popcount64(xv ^ w[ky, kx, j, oc])


@njit(cache=True, inline="always")
def _acc_wrap(acc, lo, hi, wrap):  # pragma: no cover - jitted
    """``acc`` as a two's-complement accumulator of range [lo, hi] holds it (wrapped if asked)."""
    if wrap and (acc < lo or acc > hi):
        return (acc - lo) % (hi - lo + 1) + lo
    return acc


@njit(cache=True, inline="always")
def _emit_bits(acc, thr, acc_lo, acc_hi, wrap, out_px):  # pragma: no cover - jitted
    """Threshold one pixel's accumulators into packed bits ``out_px``; returns the overflow count.

    Branch-free so that LLVM vectorizes it: bit ``oc`` = ``acc[oc] >= thr[oc]``.
    """
    oc_n = acc.shape[0]
    cnt = 0
    for oc in range(oc_n):
        cnt += (acc[oc] < acc_lo) | (acc[oc] > acc_hi)
    if wrap and cnt:
        for oc in range(oc_n):
            acc[oc] = _acc_wrap(acc[oc], acc_lo, acc_hi, True)
    for j in range(out_px.shape[0]):
        word = np.uint64(0)
        hi = min(64, oc_n - 64 * j)
        for b in range(hi):
            word |= np.uint64(acc[64 * j + b] >= thr[64 * j + b]) << np.uint64(b)
        out_px[j] = word
    return cnt


@njit(parallel=True, cache=True, nogil=True)
def xnor_popcount(x, w, k_len, stride_h, stride_w, dil_h, dil_w, out_h, out_w):  # pragma: no cover - jitted
    """Popcount-of-XNOR accumulators of a (possibly 1x1) binary convolution.

    x: (N, H, W, words) uint64; w: (kh, kw, words, OC) uint64.
    Returns int32 (N, out_h, out_w, OC) with values in [0, k_len].
    """
    n_img = x.shape[0]
    oc_n = w.shape[3]
    out = np.empty((n_img, out_h, out_w, oc_n), np.int32)
    for n in prange(n_img):
        mism = np.empty(oc_n, np.int64)
        for oy in range(out_h):
            for ox in range(out_w):
                _window_mismatches(x, w, n, oy, ox, stride_h, stride_w, dil_h, dil_w, mism)
                for oc in range(oc_n):
                    out[n, oy, ox, oc] = k_len - mism[oc]
    return out


@njit(parallel=True, cache=True, nogil=True)
def xnor_threshold_bits(
    x, w, thr, k_len, stride_h, stride_w, dil_h, dil_w, out_h, out_w, acc_lo, acc_hi, wrap
):  # pragma: no cover
    """XNOR-popcount with one threshold per channel, output bit-packed.

    Output bit ``oc`` of pixel (n, oy, ox) is 1 iff the accumulator
    ``k_len - mismatches`` is ``>= thr[oc]``. The accumulator's hardware range
    is [acc_lo, acc_hi]; values outside it are counted per image (and wrapped
    as two's complement before the comparison if ``wrap``).
    Returns uint64 (N, out_h, out_w, ceil(OC/64)) and int64 overflow counts (N,).
    """
    n_img = x.shape[0]
    oc_n = w.shape[3]
    ow_n = (oc_n + 63) // 64
    out = np.zeros((n_img, out_h, out_w, ow_n), np.uint64)
    ovf = np.zeros(n_img, np.int64)
    for n in prange(n_img):
        mism = np.empty(oc_n, np.int64)
        acc = np.empty(oc_n, np.int64)
        for oy in range(out_h):
            for ox in range(out_w):
                _window_mismatches(x, w, n, oy, ox, stride_h, stride_w, dil_h, dil_w, mism)
                for oc in range(oc_n):
                    acc[oc] = k_len - mism[oc]
                ovf[n] += _emit_bits(acc, thr, acc_lo, acc_hi, wrap, out[n, oy, ox])
    return out, ovf


def check_accumulator(acc: np.ndarray, lo: int, hi: int, wrap: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-image count of accumulator values outside [lo, hi], and ``acc`` wrapped there if ``wrap``.

    The generated HLS keeps each MVAU's accumulator in an ``ap_int`` of fixed
    width (:func:`hw.runners.accumulator_datatype`), which wraps on overflow.
    """
    outside = (acc < lo) | (acc > hi)
    counts = outside.reshape(len(acc), -1).sum(axis=1)
    if wrap and counts.any():
        acc = (acc - lo) % (hi - lo + 1) + lo
    return acc, counts


# ---------------------------------------------------------------- integer layers
@njit(cache=True, inline="always")
def _int_pixel(x, w, n, oy, ox, stride_h, stride_w, dil_h, dil_w, acc):  # pragma: no cover - jitted
    """Accumulate one output pixel of an integer convolution into ``acc`` (dtype of ``w``)."""
    kh, kw, ch, oc_n = w.shape
    acc[:] = 0
    for ky in range(kh):
        iy = oy * stride_h + ky * dil_h
        for kx in range(kw):
            ix = ox * stride_w + kx * dil_w
            for c in range(ch):
                xv = x[n, iy, ix, c]
                for oc in range(oc_n):
                    acc[oc] += xv * w[ky, kx, c, oc]


@njit(parallel=True, cache=True, nogil=True)
def int_conv(x, w, stride_h, stride_w, dil_h, dil_w, out_h, out_w):  # pragma: no cover - jitted
    """Integer-valued convolution (or 1x1 matmul) accumulated in the dtype of ``w``.

    x: (N, H, W, C) and w: (kh, kw, C, OC) of the same dtype, chosen by
    :func:`acc_dtype` so that every partial sum is exact.
    Returns (N, out_h, out_w, OC) in that dtype.
    """
    n_img = x.shape[0]
    oc_n = w.shape[3]
    out = np.empty((n_img, out_h, out_w, oc_n), w.dtype)
    for n in prange(n_img):
        acc = np.empty(oc_n, w.dtype)
        for oy in range(out_h):
            for ox in range(out_w):
                _int_pixel(x, w, n, oy, ox, stride_h, stride_w, dil_h, dil_w, acc)
                out[n, oy, ox, :] = acc
    return out


@njit(parallel=True, cache=True, nogil=True)
def int_conv_threshold_bits(
    x, w, thr, stride_h, stride_w, dil_h, dil_w, out_h, out_w, acc_lo, acc_hi, wrap
):  # pragma: no cover - jitted
    """:func:`int_conv` with one threshold per channel, output bit-packed (as
    :func:`xnor_threshold_bits`), plus per-image accumulator overflow counts.
    ``thr`` has the dtype of ``w`` (thresholds beyond the accumulator bound
    clipped to it, which keeps every comparison)."""
    n_img = x.shape[0]
    oc_n = w.shape[3]
    out = np.zeros((n_img, out_h, out_w, (oc_n + 63) // 64), np.uint64)
    ovf = np.zeros(n_img, np.int64)
    for n in prange(n_img):
        acc = np.empty(oc_n, w.dtype)
        for oy in range(out_h):
            for ox in range(out_w):
                _int_pixel(x, w, n, oy, ox, stride_h, stride_w, dil_h, dil_w, acc)
                ovf[n] += _emit_bits(acc, thr, acc_lo, acc_hi, wrap, out[n, oy, ox])
    return out, ovf


@njit(parallel=True, cache=True, nogil=True)
def _count_sorted(acc, thr):  # pragma: no cover - jitted
    """Number of thresholds <= acc per element; acc (R, C), thr (C, T) sorted per row."""
    rows, ch = acc.shape
    nt = thr.shape[1]
    out = np.empty((rows, ch), np.int64)
    for r in prange(rows):
        for c in range(ch):
            v = acc[r, c]
            lo, hi = 0, nt
            while lo < hi:
                mid = (lo + hi) >> 1
                if thr[c, mid] <= v:
                    lo = mid + 1
                else:
                    hi = mid
            out[r, c] = lo
    return out


def count_thresholds(acc: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """Multi-threshold on the last axis: number of ``thr[c, :] <= acc[..., c]`` (int64).

    ``thr`` is (C, T) or (1, T) (shared by all channels), integer, any order
    (sorting does not change the count).
    """
    ch = acc.shape[-1]
    thr = np.sort(np.broadcast_to(thr, (ch, thr.shape[1])), axis=1).astype(np.int64)
    flat = np.ascontiguousarray(acc.reshape(-1, ch), dtype=np.int64)
    if thr.shape[1] == 1:
        return (flat >= thr[:, 0]).astype(np.int64).reshape(acc.shape)
    return _count_sorted(flat, thr).reshape(acc.shape)


def threshold_lut(thr: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Table ``lut[c, v - lo]`` = number of thresholds of channel c <= v, for v in [lo, hi]."""
    values = np.arange(lo, hi + 1, dtype=np.int64)
    thr = np.sort(thr.astype(np.float64), axis=1)
    return np.stack([np.searchsorted(t, values, side="right") for t in thr]).astype(np.int64)


@njit(parallel=True, cache=True, nogil=True)
def _lut_rows(x, lut, lo, out):  # pragma: no cover - jitted
    """out[r, c] = lut[c or 0, x[r, c] - lo] for the rows of 2-D ``x``, in parallel over rows."""
    rows, ch = x.shape
    shared = lut.shape[0] == 1
    for r in prange(rows):
        for c in range(ch):
            out[r, c] = lut[0 if shared else c, x[r, c] - lo]


def apply_lut(x: np.ndarray, lut: np.ndarray, lo: int) -> np.ndarray:
    """Per-channel table lookup on the last axis of integer ``x`` (channel count = lut rows, or 1).

    The result has ``lut``'s dtype. One compiled pass: numpy's two-array fancy
    indexing made the CNV input thresholding as slow as its first conv.
    """
    x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    out = np.empty(x2.shape, dtype=lut.dtype)
    _lut_rows(x2, lut, lo, out)
    return out.reshape(x.shape)


def int_thresholds(thr: np.ndarray) -> np.ndarray:
    """Thresholds for integer inputs as int64: ``x >= T  <=>  x >= ceil(T)`` for integer x."""
    t = np.ceil(np.asarray(thr, dtype=np.float64))
    t = np.clip(t, -(2.0**62), 2.0**62)
    return t.astype(np.int64)


# ---------------------------------------------------------------- windows / pooling
def windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int) -> np.ndarray:
    """Sliding windows of NHWC ``x``: view (N, OH, OW, kh, kw, C), FINN's im2col order (ky, kx, c)."""
    eff_h, eff_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    v = np.lib.stride_tricks.sliding_window_view(x, (eff_h, eff_w), axis=(1, 2))  # N,OH',OW',C,eh,ew
    v = v[:, ::sh, ::sw, :, ::dh, ::dw]
    return np.moveaxis(v, 3, 5)


def or_pool_words(
    x: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, out_h: int, out_w: int
) -> np.ndarray:
    """Max-pool of bit-packed binary maps: the max of bits is their OR, word by word."""
    out = None
    for ky in range(kh):
        for kx in range(kw):
            part = x[:, ky * dh : ky * dh + sh * (out_h - 1) + 1 : sh, kx * dw : kx * dw + sw * (out_w - 1) + 1 : sw, :]
            out = part.copy() if out is None else np.bitwise_or(out, part, out=out)
    assert out is not None
    return out
