"""Decode the weight and threshold files that FINN's code generation wrote.

This is the second source of truth: the simulator can run from what would be
synthesized, not from the graph. The decoders read the files byte by byte and
undo FINN's layout themselves (they do not call FINN's packing code), so a
packing bug or a corrupted file shows up as a difference from the graph.

Layouts (finn-plus 1.6.1, read from its ``make_weight_file`` /
``generate_params``; every hex word packs its first element into the most
significant bits):

* ``MVAU_hls``, ``mem_mode=internal_decoupled``: ``memblock.dat``, one line per
  weight-memory address ``w = nf * SF + sf`` (neuron fold ``nf`` < MH/PE,
  synapse fold ``sf`` < MW/SIMD); element ``p * SIMD + s`` counted from the
  least significant end is ``W[sf * SIMD + s, nf * PE + p]``. Bipolar weights
  are stored as bits (1 = +1), signed ones in two's complement.
* ``MVAU_hls``, ``internal_embedded``: ``params.h`` with ``PE x WMEM`` hex
  words of SIMD elements (element ``s`` from the least significant end).
* MVAU and ``Thresholding_hls`` thresholds in ``thresh.h``: decimal
  ``[PE][TMEM][steps]``, channel ``tm * PE + p``.
* ``Thresholding_hls``, ``internal_decoupled``: ``memblock.dat``, one line per
  ``tm``, element ``p * steps + (steps - 1 - t)`` from the least significant end.
* ``Thresholding_rtl``: ``<node>_threshs_<pe>_<stage>.dat``, the binary search
  tree of the RTL core: stage ``s`` holds, for channel fold ``cf`` and
  ``i < 2**s``, threshold ``(i << (B - s)) + 2**(B - s - 1) - 1`` of channel
  ``cf * PE + pe`` at line ``(cf << s) + i`` (``B`` = output bits; thresholds
  are padded with zeros to ``2**B - 1``).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qonnx.core.datatype import DataType

from bnnflow.errors import BnnflowError
from hw.graph import HWGraph, Layer


@dataclass(frozen=True)
class Mismatch:
    """One constant whose generated file disagrees with the graph."""

    layer: str
    role: str
    file: str
    n_diff: int
    n_total: int

    def __str__(self) -> str:
        return (
            f"{self.layer}: {self.role} in {self.file} differ from the graph in {self.n_diff} of {self.n_total} values"
        )


# ---------------------------------------------------------------- low-level decoding
def hex_fields(lines: list[str], n_fields: int, bits: int, signed: bool, source: str) -> np.ndarray:
    """Split hex words into ``n_fields`` fields of ``bits`` bits, field 0 least significant.

    Returns int64 (len(lines), n_fields), two's complement decoded if ``signed``.
    """
    width = n_fields * bits
    digits = (width + 3) // 4
    clean = [ln.strip() for ln in lines if ln.strip()]
    if not clean:
        raise BnnflowError(f"{source}: empty weight file; re-run code generation (`bnnflow build`)")
    for i, ln in enumerate(clean):
        if len(ln) > digits or not re.fullmatch(r"[0-9a-fA-F]+", ln):
            raise BnnflowError(
                f"{source}: line {i + 1} is not a {width}-bit hex word ({ln[:40]!r}); the file is corrupt"
            )
    nbytes = (digits + 1) // 2
    raw = bytes.fromhex("".join(ln.zfill(2 * nbytes) for ln in clean))
    arr = np.frombuffer(raw, dtype=np.uint8).reshape(len(clean), nbytes)
    bits_lsb_first = np.unpackbits(arr, axis=1)[:, ::-1]  # column k = bit k from the LSB
    if bits_lsb_first[:, width:].any():
        raise BnnflowError(f"{source}: words wider than {width} bits; the file is corrupt")
    f = bits_lsb_first[:, :width].reshape(len(clean), n_fields, bits).astype(np.int64)
    values = (f << np.arange(bits, dtype=np.int64)).sum(axis=-1)
    if signed:
        values = np.where(values >= (1 << (bits - 1)), values - (1 << bits), values)
    return values


def _read_text(path: Path) -> str:
    if path.exists() and not path.is_file():  # a FIFO would block the read, a folder fail it
        raise BnnflowError(f"{path}: not a regular file, so not FINN's generated file; re-run `bnnflow build`")
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BnnflowError(f"{path}: cannot read generated file ({exc}); re-run `bnnflow build`") from None


def _read_lines(path: Path) -> list[str]:
    return _read_text(path).split()


def _after_equals(path: Path) -> str:
    text = _read_text(path) if path.is_file() else ""
    if "=" not in text:
        raise BnnflowError(f"{path}: missing or not a FINN parameter header; re-run `bnnflow build`")
    return text.split("=", 1)[1]


def _storage_type(dt_name: str) -> tuple[int, bool, bool]:
    """(bits, signed, bipolar) of how a datatype is written to weight files."""
    dt = DataType[dt_name]
    if dt == DataType["BIPOLAR"]:
        return 1, False, True
    return dt.bitwidth(), dt.signed(), False


#: Layers whose constants are decoded from FINN's generated files (others keep the graph's; the
#: sim report names them).
DECODED_OPS = ("MVAU", "Thresholding")


# ---------------------------------------------------------------- per-layer decoders
def _mvau_weights(layer: Layer, code_dir: Path) -> tuple[np.ndarray, Path]:
    a = layer.attrs
    mw, mh, pe, simd = int(a["MW"]), int(a["MH"]), int(a["PE"]), int(a["SIMD"])
    if int(a.get("TH", 1)) != 1 or int(a.get("pumpedMemory", 0)):
        raise BnnflowError(f"{layer.name}: tiled (TH>1) or pumped weight memories are not decoded")
    sf, nf = mw // simd, mh // pe
    bits, signed, bipolar = _storage_type(a["weightDataType"])
    mode = a.get("mem_mode", "internal_decoupled")
    if mode == "internal_decoupled":
        path = code_dir / "memblock.dat"
        f = hex_fields(_read_lines(path), pe * simd, bits, signed, str(path))
        if f.shape[0] != nf * sf:
            raise BnnflowError(f"{path}: {f.shape[0]} lines, expected MW/SIMD * MH/PE = {nf * sf}")
        arr = f.reshape(nf, sf, pe, simd)
    elif mode == "internal_embedded":
        path = code_dir / "params.h"
        words = re.findall(r'"([0-9a-fA-F]+)"', _after_equals(path))
        f = hex_fields(words, simd, bits, signed, str(path))
        if f.shape[0] != pe * nf * sf:
            raise BnnflowError(f"{path}: {f.shape[0]} words, expected PE * WMEM = {pe * nf * sf}")
        arr = np.transpose(f.reshape(pe, nf, sf, simd), (1, 2, 0, 3))
    else:
        raise BnnflowError(f"{layer.name}: mem_mode {mode} keeps weights outside generated files")
    wt = np.transpose(arr, (0, 2, 1, 3)).reshape(mh, mw)  # (nf, pe, sf, simd) -> W^T
    w = wt.T
    return (2 * w - 1 if bipolar else w), path


def _thresh_header(layer: Layer, code_dir: Path, channels: int, pe: int) -> tuple[np.ndarray, Path]:
    path = code_dir / "thresh.h"
    nums = re.findall(r"-?\d+", _after_equals(path))
    tmem = channels // pe
    if len(nums) % (pe * tmem) != 0 or not nums:
        raise BnnflowError(f"{path}: {len(nums)} thresholds do not fill PE x TMEM = {pe} x {tmem}")
    arr = np.array([int(v) for v in nums], dtype=np.int64).reshape(pe, tmem, -1)
    return np.transpose(arr, (1, 0, 2)).reshape(channels, -1), path


def _thresholding_rtl(layer: Layer, code_dir: Path) -> tuple[np.ndarray, Path]:
    a = layer.attrs
    pe, steps = int(a["PE"]), int(a["numSteps"])
    channels = int(a["NumChannels"]) if layer.params["thresholds"].shape[0] != 1 else pe
    obits = DataType[a["outputDataType"]].bitwidth()
    bits, signed, _ = _storage_type(a["weightDataType"])
    cf = channels // pe
    thr = np.zeros((channels, 2**obits - 1), dtype=np.int64)
    first = code_dir / f"{layer.name}_threshs_0_0.dat"
    for stage in range(obits):
        for p in range(pe):
            path = code_dir / f"{layer.name}_threshs_{p}_{stage}.dat"
            v = hex_fields(_read_lines(path), 1, bits, signed, str(path))[:, 0]
            if v.shape[0] != cf << stage:
                raise BnnflowError(f"{path}: {v.shape[0]} lines, expected {cf << stage}")
            i = np.arange(1 << stage)
            for ch in range(cf):
                thr[ch * pe + p, (i << (obits - stage)) + (1 << (obits - stage - 1)) - 1] = v[(ch << stage) + i]
    return thr[:, :steps], first


def _thresholding_hls(layer: Layer, code_dir: Path) -> tuple[np.ndarray, Path]:
    a = layer.attrs
    pe, steps, channels = int(a["PE"]), int(a["numSteps"]), int(a["NumChannels"])
    if a.get("mem_mode", "internal_decoupled") == "internal_embedded":
        return _thresh_header(layer, code_dir, channels, pe)
    path = code_dir / "memblock.dat"
    bits, signed, _ = _storage_type(a["weightDataType"])
    f = hex_fields(_read_lines(path), pe * steps, bits, signed, str(path))
    arr = f.reshape(-1, pe, steps)[:, :, ::-1]
    return arr.reshape(channels, steps), path


def decode_layer(layer: Layer, code_dir: Path) -> dict[str, tuple[np.ndarray, Path]]:
    """The constants of ``layer`` as decoded from its generated files: role -> (values, file)."""
    out: dict[str, tuple[np.ndarray, Path]] = {}
    if layer.op == "MVAU":
        if layer.impl != "hls":
            raise BnnflowError(f"{layer.name}: decoding {layer.op}_{layer.impl} files is not supported")
        out["weights"] = _mvau_weights(layer, code_dir)
        if "thresholds" in layer.params:
            out["thresholds"] = _thresh_header(layer, code_dir, int(layer.attrs["MH"]), int(layer.attrs["PE"]))
    elif layer.op == "Thresholding":
        if layer.impl == "rtl":
            out["thresholds"] = _thresholding_rtl(layer, code_dir)
        elif layer.impl == "hls":
            out["thresholds"] = _thresholding_hls(layer, code_dir)
        else:
            raise BnnflowError(f"{layer.name}: not specialized, so no generated files")
    return out


def _code_dir(layer: Layer, search_root: Path | None) -> Path:
    """The layer's generated-code folder, inside ``search_root`` (the build folder) when given.

    FINN records absolute paths; a copied or moved build folder must be checked
    against its own files, never silently against the original's, so inside a
    build folder the folder of that name is looked up there.
    """
    d = Path(layer.code_dir) if layer.code_dir else None
    if d is not None and search_root is not None:
        root = search_root.resolve()
        if d.is_dir() and d.resolve().is_relative_to(root):
            return d
        hits = [p for p in root.rglob(d.name) if p.is_dir()]
        if len(hits) == 1:
            return hits[0]
        raise BnnflowError(
            f"{layer.name}: generated code {d.name} not found inside {search_root} (the graph names {d}); "
            "copy the whole build folder, or rebuild with `bnnflow build`"
        )
    if d is not None and d.is_dir():
        return d
    raise BnnflowError(
        f"{layer.name}: generated code not found ({layer.code_dir or 'code generation did not run'}); "
        "build with code generation (`bnnflow build`) and keep its output folder"
    )


def _expand(graph_value: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """Graph thresholds shared by all channels ((1, T)) broadcast to the decoded shape."""
    if graph_value.shape != decoded.shape and graph_value.shape[0] == 1:
        return np.broadcast_to(graph_value, decoded.shape)
    return graph_value


def load_artifacts(graph: HWGraph, search_root: Path | None = None) -> tuple[HWGraph, list[Mismatch]]:
    """A copy of ``graph`` whose constants come from the generated files, and how they differ.

    Graph thresholds are compared after integer rounding up (what the
    hardware compares against), weights exactly.
    """
    new = copy.deepcopy(graph)
    mismatches: list[Mismatch] = []
    for layer in new.hw_layers():
        if layer.op not in DECODED_OPS:
            continue
        decoded = decode_layer(layer, _code_dir(layer, search_root))
        for role, (values, path) in decoded.items():
            ref = layer.params[role]
            if role == "thresholds":
                ref = np.ceil(ref.astype(np.float64))
            ref = _expand(ref, values)
            if ref.shape != values.shape:
                mismatches.append(Mismatch(layer.name, role, str(path), int(max(ref.size, values.size)), int(ref.size)))
            else:
                n_diff = int(np.count_nonzero(ref != values))
                if n_diff:
                    mismatches.append(Mismatch(layer.name, role, str(path), n_diff, int(ref.size)))
            if role == "weights":
                layer.params[role] = values.astype(np.float32)
            else:  # shared thresholds are written once per PE: keep one row for the simulator
                channels = layer.out_shapes[0][-1]
                layer.params[role] = values if values.shape[0] == channels else values[:1]
    return new, mismatches
