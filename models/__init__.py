"""The bnnflow model zoo: W1A1 Brevitas networks that FINN can compile.

The zoo sits below bnnflow's core (checkpoints and training build on it):
of the project it imports only itself and the leaf :mod:`bnnflow.errors`,
for the one-line errors of :func:`build`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bnnflow.errors import BnnflowError
from models.nets import CNV, LFC, NIN, SFC, TFC, VGG11, BinaryNet, ResNet18

ARCHS: dict[str, type[BinaryNet]] = {cls.arch: cls for cls in (TFC, SFC, LFC, CNV, NIN, VGG11, ResNet18)}
ZOO_DIR = Path(__file__).resolve().parent / "zoo"


def build(arch: str, widths: Sequence[int] | None = None) -> BinaryNet:
    """A fresh network of ``arch`` with the given (or default) widths."""
    if arch not in ARCHS:
        raise BnnflowError(f"unknown model {arch!r}: choose one of {', '.join(ARCHS)}")
    try:
        return ARCHS[arch](widths)
    except ValueError as exc:
        raise BnnflowError(str(exc)) from None


__all__ = ["ARCHS", "ZOO_DIR", "BinaryNet", "build"]
