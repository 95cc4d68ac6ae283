"""The tensors the simulator passes between layers, in FINN's normal layout (batch first, channels last).

A tensor travels in one of three forms: a dense integer array;
:class:`Bits`, a binary tensor packed 64 channels per word (what XNOR layers
consume and produce); or :class:`Windows`, the output of a sliding-window
generator kept as a view of its input, so the consuming MVAU or max-pool
walks the windows itself instead of reading a materialized im2col.
:func:`to_dense` gives any of them as FINN lays it out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw import kernels


@dataclass
class Bits:
    """Binary tensor of shape ``words.shape[:-1] + (nbits,)``, packed on the last axis."""

    words: np.ndarray
    nbits: int
    bipolar: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.words.shape[:-1]) + (self.nbits,)

    def dense(self) -> np.ndarray:
        bits = kernels.unpack_bits(self.words, self.nbits)
        return 2 * bits.astype(np.int8) - 1 if self.bipolar else bits


@dataclass
class Windows:
    """Sliding windows of an NHWC tensor ``src``, laid out like FINN's im2col."""

    src: Bits | np.ndarray
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    out_h: int
    out_w: int

    def dense(self) -> np.ndarray:
        src = to_dense(self.src)
        v = kernels.windows(src, self.kh, self.kw, self.sh, self.sw, self.dh, self.dw)
        v = v[:, : self.out_h, : self.out_w]
        return v.reshape(v.shape[0], self.out_h, self.out_w, -1)


Tensor = np.ndarray | Bits | Windows


def to_dense(t: Tensor) -> np.ndarray:
    return t if isinstance(t, np.ndarray) else t.dense()


def to_bits(t: Tensor) -> Bits:
    if isinstance(t, Bits):
        return t
    d = to_dense(t)
    if d.size and (d.min() < 0):  # bipolar {-1, +1}
        return Bits(kernels.pack_bits(d > 0), d.shape[-1], bipolar=True)
    return Bits(kernels.pack_bits(d), d.shape[-1])


def batch_of(t: Tensor) -> int:
    if isinstance(t, Windows):
        return batch_of(t.src)
    if isinstance(t, Bits):
        return int(t.words.shape[0])
    return int(t.shape[0])
