"""Tensors to AXI-stream words and back, in FINN's rtlsim packing.

FINN streams a node's tensor in its folded shape (``get_folded_input_shape``:
the last axis is what one word carries, PE or SIMD elements), element 0 in
the lowest bits, each word padded to the port's byte width
(``get_instream_width_padded``). ``finn.util.data_packing.finnpy_to_packed_bytearray``
with both reversals gives exactly those words as little-endian bytes (the same
integers as ``npy_to_rtlsim_input``, which tests/test_rtl.py checks), without
FINN's per-word hex strings. Bipolar tensors travel as bits (-1 is 0), as in
FINN's own rtlsim.
"""

from __future__ import annotations

import numpy as np
from qonnx.core.datatype import DataType


def stream_dtype(dt: DataType) -> DataType:
    """The datatype the wire carries: BINARY for BIPOLAR, else the tensor's own."""
    return DataType["BINARY"] if dt == DataType["BIPOLAR"] else dt


def to_words(x: np.ndarray, folded: tuple[int, ...], dt: DataType, nbytes: int) -> np.ndarray:
    """``x`` (N images, any layout FINN's normal shape reshapes to ``folded``) as (words, nbytes) uint8."""
    from finn.util.data_packing import finnpy_to_packed_bytearray

    x = np.asarray(x)
    if dt == DataType["BIPOLAR"]:
        x = (x > 0).astype(np.int8)
    x = x.reshape((len(x),) + tuple(folded[1:]))
    if dt.is_integer():
        # values outside the type would wrap in the packing: a simulator bug, not a stream to send
        if x.size and (x.min() < stream_dtype(dt).min() or x.max() > stream_dtype(dt).max()):
            raise ValueError(f"tensor values [{x.min()}, {x.max()}] outside {dt.name}")
    packed = finnpy_to_packed_bytearray(x.astype(np.float32), stream_dtype(dt), reverse_inner=True, reverse_endian=True)
    packed = np.ascontiguousarray(packed).reshape(-1, packed.shape[-1])
    if packed.shape[1] > nbytes:
        raise ValueError(f"a word of {folded[-1]} x {dt.name} needs {packed.shape[1]} bytes, the port has {nbytes}")
    if packed.shape[1] < nbytes:
        packed = np.pad(packed, ((0, 0), (0, nbytes - packed.shape[1])))
    return packed


def element_mismatches(got: np.ndarray, expected: np.ndarray, per_word: int, bits: int) -> int:
    """Elements whose bits differ between two (words, nbytes) streams; words missing from ``got``
    count all their elements. The pad bits above ``per_word * bits`` carry no element."""
    n = min(len(got), len(expected))
    used = per_word * bits
    g = np.unpackbits(got[:n], axis=1, bitorder="little")[:, :used].reshape(n, per_word, bits)
    e = np.unpackbits(expected[:n], axis=1, bitorder="little")[:, :used].reshape(n, per_word, bits)
    wrong = int(np.any(g != e, axis=2).sum())
    return wrong + (len(expected) - n) * per_word
