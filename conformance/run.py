"""One conformance case: export a random net, build it, simulate it, compare with two references.

A case ends in one of four outcomes:

- ``exact``: the weights and thresholds in FINN's generated files equal the
  graph's, the simulator's output equals qonnx's execution of the exported
  QONNX (top-1 class, ties to the lower index as ONNX TopK) on real images,
  and every tensor the simulator and FINN's execution of the HW graph both
  have is identical;
- ``refused``: bnnflow said ``not supported: <what>`` (a
  :class:`bnnflow.errors.NotSupported`), which the README lists;
- ``too-large``: the design exceeds Pynq-Z1 at every folding bnnflow's
  ``--lower-to-fit`` tried (a :class:`bnnflow.errors.DoesNotFit`);
- ``mismatch``: a result differs (the tensor or image is named);
- ``error``: anything else, with the exception's type and first line.

Only ``exact``, ``refused`` and ``too-large`` are acceptable.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow import data
from bnnflow.errors import DoesNotFit, NotSupported
from conformance.nets import NetSpec, export, random_spec

#: Real images per case (crops of MNIST for 1 channel, CIFAR-10 for 3).
N_IMAGES = 12


@dataclass
class CaseResult:
    seed: int
    spec: str
    outcome: str  # exact | refused | too-large | mismatch | error
    detail: str = ""
    tensors_compared: int = 0
    images: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.outcome:<8} {self.spec}" + (f"  [{self.detail}]" if self.detail else "")


def case_images(spec: NetSpec, n: int = N_IMAGES, data_dir: Path | None = None) -> np.ndarray:
    """``n`` real test images (uint8 NCHW) center-cropped (or zero-padded) to the net's input size."""
    split = data.load("mnist" if spec.in_ch == 1 else "cifar10", "test", data_dir).subset(n)
    imgs = split.images
    h = imgs.shape[2]
    if spec.in_size > h:  # MNIST at 32x32: zero (black) border, as the data set's own 28x28 has
        p = spec.in_size - h
        imgs = np.pad(imgs, ((0, 0), (0, 0), (p // 2, p - p // 2), (p // 2, p - p // 2)))
        h = spec.in_size
    off = (h - spec.in_size) // 2
    return np.ascontiguousarray(imgs[:, :, off : off + spec.in_size, off : off + spec.in_size])


def qonnx_top1(onnx_path: Path, images: np.ndarray) -> np.ndarray:
    """Top-1 class of qonnx's execution of the exported QONNX on ``images`` / 255."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    model = ModelWrapper(str(onnx_path)).transform(InferShapes())
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    out = []
    for i in range(len(images)):
        x = images[i : i + 1].astype(np.float32) / np.float32(255.0)
        logits = execute_onnx(model, {iname: x})[oname].reshape(-1)
        out.append(int(np.argmax(logits)))  # numpy's argmax: ties to the lower index, as TopK
    return np.array(out, dtype=np.int64)


def compare_with_finn(build_dir: Path, x: np.ndarray) -> tuple[int, str | None]:
    """Compare every tensor the simulator and FINN both compute; (count, first differing name or None)."""
    from build_flows.build_dir import open_build
    from hw import verify
    from hw.graph import load_graph
    from hw.simulate import Simulator

    b = open_build(build_dir)
    sim = Simulator(load_graph(b.accel, b.parent))
    out, mine = sim.run(x, intermediates=True)
    ref_out, ref = verify.finn_execute(b, x, intermediates=True)
    common = sorted(set(mine) & set(ref))
    for name in common:
        if not np.array_equal(mine[name].astype(np.float64).reshape(ref[name].shape), ref[name].astype(np.float64)):
            return len(common), f"tensor {name} differs from FINN"
    if not np.array_equal(out.reshape(ref_out.shape).astype(np.float64), ref_out.astype(np.float64)):
        return len(common), "output differs from FINN"
    return len(common), None


def run_case(seed: int, workdir: Path, data_dir: Path | None = None) -> CaseResult:
    """Export, build, simulate and compare the net of ``seed`` inside ``workdir``."""
    import time

    from build_flows.build import build
    from hw import verify
    from hw.run import load

    spec = random_spec(seed)
    res = CaseResult(seed, spec.describe(), "error")
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        onnx_path = export(spec, workdir / "net.onnx")
        t1 = time.perf_counter()
        build(onnx_path, "Pynq-Z1", workdir / "build", target_fps=spec.target_fps, lower_to_fit=True, n_check=0)
        t2 = time.perf_counter()
        images = case_images(spec, data_dir=data_dir)
        res.images = len(images)
        ld = load(workdir / "build")
        if ld.mismatches:
            res.outcome, res.detail = "mismatch", f"generated files differ from the graph: {ld.mismatches[0]}"
            return res
        x = verify.images_as_input(images, ld.graph.input_dtype)
        got = verify.top1(ld.sim.predict(x)[0])
        want = qonnx_top1(onnx_path, images)
        t3 = time.perf_counter()
        res.seconds = {"export": t1 - t0, "build": t2 - t1, "sim+qonnx": t3 - t2}
        if not np.array_equal(got, want):
            bad = int(np.flatnonzero(got != want)[0])
            res.outcome, res.detail = (
                "mismatch",
                (
                    f"image {bad}: simulator class {got[bad]}, qonnx class "
                    f"{want[bad]} ({int((got != want).sum())} of {len(got)})"
                ),
            )
            return res
        res.tensors_compared, diff = compare_with_finn(workdir / "build", x[: min(4, len(x))])
        res.seconds["finn"] = time.perf_counter() - t3
        if diff is not None:
            res.outcome, res.detail = "mismatch", diff
            return res
        res.outcome = "exact"
    except NotSupported as exc:
        res.outcome, res.detail = "refused", str(exc)
    except DoesNotFit as exc:
        res.outcome, res.detail = "too-large", str(exc).split(": ", 1)[-1]
    except Exception as exc:  # the suite records every failure instead of stopping at the first
        tb = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        res.outcome, res.detail = "error", f"{type(exc).__name__} at {where}: {first}"
    return res


def summarize(results: list[CaseResult]) -> dict[str, Any]:
    """Counts per outcome and the refusal reasons (numbers in them as N) with their counts."""
    counts: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
        if r.outcome == "refused":
            # one reason per kind: the shapes and sizes in the message are replaced by N
            key = re.sub(r"\d+", "N", r.detail.split("not supported:", 1)[-1].strip().split(";")[0])
            reasons[key] = reasons.get(key, 0) + 1
    return {"cases": len(results), "outcomes": counts, "refusals": reasons}
