"""Progress bars for long work (training, pruning, simulation, builds)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", enabled: bool = True) -> tqdm:
    """A tqdm bar on an interactive terminal; silent when output goes to a file or pipe
    (the callers print one summary line per stage there instead)."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        leave=False,
        disable=None if enabled else True,
        mininterval=0.5,
        dynamic_ncols=True,
    )
