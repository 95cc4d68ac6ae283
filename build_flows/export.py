"""The ``export`` stage: a bnnflow checkpoint -> QONNX file that FINN's builder takes.

The graph takes what the accelerator receives, UINT8 NCHW pixels: Brevitas
exports the network behind a ``x / 255`` front (the zoo networks then compute
``2x - 1`` and quantize inside, 1 bit for the MNIST nets, 8-bit Q1.7 for the
conv nets), the input is annotated UINT8 and qonnx's ``InsertTopK`` ends the
graph with the top-1 class, as FINN's end-to-end flows do. The written file is
then executed with qonnx's ``execute_onnx`` on real test images and held
against the Brevitas model: top-1 must be identical, the largest logit
difference is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from bnnflow import checkpoint, data
from bnnflow.errors import BnnflowError, DataError
from bnnflow.files import atomic_path, check_output_file
from build_flows.inputs import check_finite
from models.nets import BinaryNet


@dataclass(frozen=True)
class ExportResult:
    """What ``export`` wrote and how well the QONNX file agrees with the Brevitas model."""

    path: Path
    n: int  # images compared
    images: str  # where they came from ("mnist test", or "random" when no data)
    top1_agreement: float  # fraction of images with identical top-1 (1.0 is required)
    max_logit_diff: float  # largest |QONNX logit - Brevitas logit|


class _Uint8Input(torch.nn.Module):
    """The network behind a ``x / 255`` front, so the exported graph takes UINT8 pixels."""

    def __init__(self, net: BinaryNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / 255.0)


def _write_qonnx(model: BinaryNet, path: Path) -> None:
    """Brevitas QONNX export, UINT8 input annotation, cleanup, TopK."""
    from brevitas.export import export_qonnx
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.insert_topk import InsertTopK
    from qonnx.util.cleanup import cleanup_model

    with torch.no_grad():
        export_qonnx(_Uint8Input(model.eval()), input_t=torch.zeros((1, *model.input_shape)), export_path=str(path))
    m = ModelWrapper(str(path))  # loads the weights the exporter may have put in PATH.data
    path.with_name(path.name + ".data").unlink(missing_ok=True)
    m.set_tensor_datatype(m.graph.input[0].name, DataType["UINT8"])
    m = cleanup_model(m).transform(InsertTopK(k=1))
    m.save(str(path))


def qonnx_logits_top1(path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run the QONNX file with qonnx's ``execute_onnx`` on uint8 NCHW ``images`` (one batch).

    Returns (logits entering TopK, TopK's class indices).
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes

    m = ModelWrapper(str(path))
    topk = m.get_nodes_by_op_type("TopK")
    if len(topk) != 1:
        raise BnnflowError(f"{path}: expected one TopK node at the end of the graph, found {len(topk)}")
    m = m.transform(ChangeBatchSize(len(images))).transform(InferShapes())
    inp = m.graph.input[0].name
    ctx = execute_onnx(m, {inp: images.astype(np.float32)}, return_full_exec_context=True)
    logits = np.asarray(ctx[topk[0].input[0]]).reshape(len(images), -1)
    top1 = np.asarray(ctx[topk[0].output[1] if len(topk[0].output) > 1 else topk[0].output[0]])
    return logits, top1.reshape(len(images), -1)[:, 0].astype(np.int64)


def _check_images(model: BinaryNet, n: int, data_dir: Path | None) -> tuple[np.ndarray, str]:
    """The first ``n`` real test images, or seeded random pixels where the data set is absent."""
    try:
        return data.load(model.dataset, "test", data_dir).subset(n).images, f"{model.dataset} test"
    except DataError:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, size=(n, *model.input_shape), dtype=np.uint8), "random"


def check_agreement(model: BinaryNet, path: Path, n: int, data_dir: Path | None = None) -> ExportResult:
    """Compare the QONNX file at ``path`` with the Brevitas ``model`` on ``n`` images."""
    images, source = _check_images(model, n, data_dir)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(images).float() / 255.0).numpy()
    logits, top1 = qonnx_logits_top1(path, images)
    agree = float(np.mean(top1 == ref.argmax(axis=1)))
    diff = float(np.abs(logits - ref).max())
    return ExportResult(path=path, n=len(images), images=source, top1_agreement=agree, max_logit_diff=diff)


def export(ckpt: Path, out: Path, n_check: int = 200, data_dir: Path | None = None) -> ExportResult:
    """Write the QONNX file of checkpoint ``ckpt`` to ``out`` after checking it agrees with Brevitas.

    The file is written beside ``out`` (:func:`bnnflow.files.atomic_path`) and
    renamed only once its constants are finite (:func:`build_flows.inputs.check_finite`,
    the check a QONNX input of ``bnnflow build`` gets) and QONNX execution gives
    the Brevitas model's top-1 on every checked image, so a failed export
    leaves nothing behind.
    """
    if isinstance(n_check, bool) or not isinstance(n_check, int) or n_check < 0:
        raise BnnflowError(f"--check must be a whole number >= 0 (0: no check), got {n_check!r}")
    model, _ = checkpoint.load_for_inference(ckpt)
    out = Path(out)
    check_output_file(out, "--out")
    with atomic_path(out) as tmp:
        try:
            _write_qonnx(model, tmp)
            check_finite(onnx.load(str(tmp)), Path(ckpt))
            res = (
                check_agreement(model, tmp, n_check, data_dir)
                if n_check > 0
                else ExportResult(
                    path=tmp, n=0, images="none", top1_agreement=float("nan"), max_logit_diff=float("nan")
                )
            )
        finally:
            tmp.with_name(tmp.name + ".data").unlink(missing_ok=True)
        if res.n and not math.isfinite(res.max_logit_diff):
            raise BnnflowError(
                f"{ckpt}: the network's logits are not finite on {res.images} images (max logit difference "
                f"{res.max_logit_diff}); nothing written. Check the checkpoint's weights"
            )
        if res.n and res.top1_agreement < 1.0:
            raise BnnflowError(
                f"{ckpt}: the exported QONNX graph disagrees with the Brevitas model on "
                f"{round((1 - res.top1_agreement) * res.n)} of {res.n} {res.images} images "
                f"(max logit difference {res.max_logit_diff:.3g}); nothing written. Report this as a bug."
            )
    return ExportResult(
        path=out, n=res.n, images=res.images, top1_agreement=res.top1_agreement, max_logit_diff=res.max_logit_diff
    )
