"""Builds that several test modules share: made once per session, each module works on its own copy.

The shipped TFC built for Pynq-Z1 at 10000 FPS is the smallest real build
and the one most modules need (simulation, reports, RTL, fuzzing, hostile
inputs). Building it once instead of once per module saves a FINN run per
module; the copy keeps one module's writes (``sim.json``, corruptions) out
of the others' way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TFC_CKPT = REPO / "models" / "zoo" / "tfc_w1a1.pt"


@pytest.fixture(scope="session")
def shared_tfc_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped TFC, built once (Pynq-Z1, 10000 FPS, no export check). Never changed: use
    ``helpers.copy_build`` for a folder of your own."""
    from build_flows.build import build

    d = tmp_path_factory.mktemp("tfc_shared") / "build"
    build(TFC_CKPT, "Pynq-Z1", d, target_fps=10000, n_check=0)
    return d
