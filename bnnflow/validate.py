"""Checks of numeric options: finite, in range, integral where a count is meant.

One rule for every command: a value that makes no sense (NaN, infinity, a
zero or negative count, a learning rate of -1) is refused before any work
starts, with one line naming the option, the value and what is accepted.
The library functions call :func:`number` and :func:`count` (they raise
:class:`BnnflowError`); the command lines use the argparse ``type=``
functions :func:`arg_float`, :func:`arg_int` and :func:`arg_list`, which
report the same text through argparse's one-line error.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError

#: The widest layer a checkpoint or ``--widths`` may ask for (BNN-PYNQ's widest is 1024).
MAX_WIDTH = 65536
#: The most parameters a network may have before it is built (ResNet-18 has 11 M).
MAX_PARAMETERS = 1 << 28


def _range_text(lo: float | None, hi: float | None, lo_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"between {lo:g} and {hi:g}" if not lo_open else f"above {lo:g} and at most {hi:g}"
    if lo is not None:
        return f"above {lo:g}" if lo_open else f">= {lo:g}"
    if hi is not None:
        return f"<= {hi:g}"
    return "a finite number"


def number(value: Any, name: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> float:
    """``value`` as a finite float within [lo, hi] (``lo_open``: strictly above ``lo``), else a BnnflowError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BnnflowError(f"{name} must be a number, got {value!r}")
    v = float(value)
    ok = math.isfinite(v) and (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or v <= hi)
    if not ok:
        rng = _range_text(lo, hi, lo_open)
        if not math.isfinite(v) and not rng.startswith("a finite"):
            rng = f"a finite number {rng}"
        raise BnnflowError(f"{name} must be {rng}, got {value!r}")
    return v


def count(value: Any, name: str, lo: int = 1, hi: int | None = None) -> int:
    """``value`` as an integer within [lo, hi], else a BnnflowError."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise BnnflowError(f"{name} must be a whole number {_range_text(lo, hi, False)}, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise BnnflowError(f"{name} must be a whole number {_range_text(lo, hi, False)}, got {value}")
    return int(value)


def optional_count(value: Any, name: str, lo: int = 1, hi: int | None = None) -> int | None:
    return None if value is None else count(value, name, lo, hi)


# ---------------------------------------------------------------- argparse types
def _argtype(parse: Callable[[str], Any], check: Callable[[Any], Any], what: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        try:
            return check(value)
        except BnnflowError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace("value must", "must", 1)) from None

    convert.__name__ = what  # argparse names the type in some messages
    return convert


def arg_float(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Callable[[str], float]:
    """argparse ``type=``: a finite float in range (``nan``, ``inf`` refused)."""
    return _argtype(float, lambda v: number(v, "value", lo, hi, lo_open), "a number")


def arg_int(lo: int = 1, hi: int | None = None) -> Callable[[str], int]:
    """argparse ``type=``: an integer in range."""
    return _argtype(int, lambda v: count(v, "value", lo, hi), "a whole number")


def arg_list(item: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    """argparse ``type=``: a comma-separated list, each entry through ``item`` (an ``arg_*`` function)."""

    def convert(text: str) -> list[Any]:
        parts = [v.strip() for v in text.split(",") if v.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"not a comma-separated list of {what}: {text!r}")
        out = []
        for p in parts:
            try:
                out.append(item(p))
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(f"{text!r}: entry {p!r}: {exc}") from None
        return out

    return convert


def add_kd_options(p: argparse.ArgumentParser, weight: float, temp: float, weight_help: str) -> None:
    """``--kd-weight`` and ``--kd-temp``, checked alike by training and pruning, which share the loss."""
    p.add_argument("--kd-weight", type=arg_float(0.0), default=weight, help=weight_help)
    p.add_argument("--kd-temp", type=arg_float(0.0, lo_open=True), default=temp, help="distillation temperature")


def add_data_dir_option(p: argparse.ArgumentParser) -> None:
    """``--data-dir``, the same for every command that reads a data set."""
    p.add_argument(
        "--data-dir", type=Path, default=None, help="data set folder (default: $BNNFLOW_DATA_DIR or ../shared/data)"
    )
