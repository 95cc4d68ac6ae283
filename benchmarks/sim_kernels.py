"""Which exact method is fastest for an XNOR-popcount conv layer? (numbers for hw/kernels.py)

CNV's second conv (the largest: 30x30x64 -> 28x28x64, 3x3, 28.9 M binary MACs
per image), three exact methods on the same random bits:

* numba kernel of hw/kernels.py (packed words, popcount, no im2col),
* numpy: im2col of packed words, ``numpy.bitwise_count`` of XOR, sum,
* float32 matmul of the +-1 im2col (exact: |dot| <= 576 < 2^24).

and, for CNV's first conv (8-bit input, +-1 weights, 32x32x3 -> 30x30x64), the
accumulator dtype of the integer kernel (every choice exact: |acc| <= 3456).

Usage: python benchmarks/sim_kernels.py [--n 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from hw import kernels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="images")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    numba.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    n, h, c, oc, k = a.n, 30, 64, 64, 3
    x_bits = rng.integers(0, 2, size=(n, h, h, c), dtype=np.uint8)
    w_bits = rng.integers(0, 2, size=(k * k * c, oc), dtype=np.uint8)
    oh = h - k + 1
    xw, wp = kernels.pack_bits(x_bits), kernels.pack_xnor_weights(w_bits, k, k)
    kernels.xnor_popcount(xw[:2], wp, k * k * c, 1, 1, 1, 1, oh, oh)  # compile

    def numba_kernel() -> np.ndarray:
        return kernels.xnor_popcount(xw, wp, k * k * c, 1, 1, 1, 1, oh, oh)

    def numpy_bitwise_count() -> np.ndarray:
        win = kernels.windows(xw, k, k, 1, 1, 1, 1).reshape(n, oh, oh, -1)  # packed im2col
        wv = np.transpose(wp, (3, 0, 1, 2)).reshape(oc, -1)
        out = np.empty((n, oh, oh, oc), np.int32)
        for o in range(oc):  # one pass per output channel keeps memory bounded
            out[..., o] = k * k * c - np.bitwise_count(win ^ wv[o]).sum(axis=-1, dtype=np.int32)
        return out

    def float_matmul() -> np.ndarray:
        win = kernels.windows(x_bits, k, k, 1, 1, 1, 1).reshape(-1, k * k * c).astype(np.float32) * 2 - 1
        dot = win @ (w_bits.astype(np.float32) * 2 - 1)
        return ((dot + k * k * c) / 2).astype(np.int32).reshape(n, oh, oh, oc)

    ref = numba_kernel()
    print(f"| method ({n} images, {a.threads} thread(s)) | ms/image | exact |")
    print("| --- | --- | --- |")
    for name, fn in [
        ("numba popcount kernel (hw/kernels.py)", numba_kernel),
        ("numpy bitwise_count on packed im2col", numpy_bitwise_count),
        ("float32 matmul of +-1 im2col", float_matmul),
    ]:
        t0 = time.perf_counter()
        got = fn()
        dt = time.perf_counter() - t0
        print(f"| {name} | {dt / n * 1e3:.3f} | {np.array_equal(got, ref)} |")

    x8 = rng.integers(-128, 128, size=(n, 32, 32, 3))
    w1 = rng.choice([-1, 1], size=(3, 3, 3, oc))
    t1 = rng.integers(-300, 300, size=oc)
    print(f"\n| first conv, accumulator dtype ({n} images, {a.threads} thread(s)) | ms/image | exact |")
    print("| --- | --- | --- |")
    outs = {}
    for dt in (np.int16, np.float32, np.int32, np.int64):
        args = (
            x8.astype(dt),
            np.ascontiguousarray(w1.astype(dt)),
            t1.astype(dt),
            1,
            1,
            1,
            1,
            30,
            30,
            -(2**15),
            2**15 - 1,
            False,
        )
        kernels.int_conv_threshold_bits(args[0][:2], *args[1:])  # compile
        t0 = time.perf_counter()
        outs[dt], _ = kernels.int_conv_threshold_bits(*args)
        dt_s = time.perf_counter() - t0
        print(f"| {dt.__name__} | {dt_s / n * 1e3:.3f} | {np.array_equal(outs[dt], outs[np.int16])} |")


if __name__ == "__main__":
    main()
