"""The simulator's references: FINN's own Python execution and the Brevitas model.

FINN's golden model is the HW-layer graph before specialization (specialized
``*_hls``/``*_rtl`` nodes only run in Xilinx simulators). We execute the
build's parent graph with its dataflow partition pointed at that graph, one
image at a time (FINN graphs have batch 1), so FINN sees exactly the input
the simulator sees. The Brevitas reference is the checkpoint the build was
made from, evaluated in PyTorch.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow.errors import BnnflowError, brief
from build_flows.build_dir import BuildDir
from hw.graph import read_model

SDP_PREFIX_SEP = "_"


def _golden_model(build: BuildDir) -> tuple[Any, str]:
    """The parent graph with its partition pointing at the pre-specialization HW graph."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    parent = read_model(build.parent)
    parent = ModelWrapper(copy.deepcopy(parent.model))
    sdp = parent.get_nodes_by_op_type("StreamingDataflowPartition")[0]
    inst = getCustomOp(sdp)
    inst.set_nodeattr("model", str(build.golden.resolve()))
    inst.set_nodeattr("return_full_exec_context", 1)
    return parent, sdp.name + SDP_PREFIX_SEP


def finn_execute(
    build: BuildDir,
    x: np.ndarray,
    intermediates: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """FINN's ``execute_onnx`` on each image of ``x``; outputs stacked, and every tensor if asked.

    Tensor names inside the partition lose FINN's ``<partition>_`` prefix so
    they match the simulator's names.
    """
    from finn.core.onnx_exec import execute_onnx

    model, prefix = _golden_model(build)
    in_name, out_name = model.graph.input[0].name, model.graph.output[0].name
    outs: list[np.ndarray] = []
    seen: dict[str, list[np.ndarray]] = {}
    for i in range(len(x)):
        try:
            ctx = execute_onnx(
                model, {in_name: x[i : i + 1].astype(np.float32)}, return_full_exec_context=intermediates
            )
        except Exception as exc:  # FINN's and onnxruntime's errors on a damaged graph, of many types
            raise BnnflowError(
                f"{build.parent} and {build.golden}: FINN's execute_onnx cannot run the graph "
                f"({brief(exc)}); the graph is damaged: rebuild into a new --out, or run sim with "
                "--finn-limit 0"
            ) from None
        outs.append(ctx[out_name])
        if intermediates:
            for name, v in ctx.items():
                key = name[len(prefix) :] if prefix and name.startswith(prefix) else name
                seen.setdefault(key, []).append(np.asarray(v))
    stacked = {k: np.concatenate(v) for k, v in seen.items() if len(v) == len(x)}
    return np.concatenate(outs) if outs else np.zeros((0,)), stacked


def top1(out: np.ndarray) -> np.ndarray:
    """Class index per image: the LabelSelect output itself, or the argmax of scores."""
    out = out.reshape(len(out), -1)
    return out[:, 0].astype(np.int64) if out.shape[1] == 1 else out.argmax(axis=1)


def checkpoint_of(build: BuildDir) -> Path | None:
    """The checkpoint the build was made from (the manifest's ``checkpoint``), while it is still
    there: the PyTorch reference of ``agree_with_torch``."""
    path = build.manifest.checkpoint
    return Path(path) if path is not None and Path(path).is_file() else None


def dataset_of(build: BuildDir) -> str | None:
    """The data set of the build's network (None for a QONNX input: no test set to run)."""
    return build.manifest.dataset


def torch_top1(ckpt: Path, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Top-1 classes of the Brevitas model on uint8 NCHW ``images`` (eval mode, no grad)."""
    import torch

    from bnnflow import checkpoint

    model, _ = checkpoint.load_for_inference(ckpt)
    preds = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            xb = torch.from_numpy(images[i : i + batch_size].astype(np.float32) / 255.0)
            preds.append(model(xb).argmax(dim=1).numpy())
    return np.concatenate(preds) if preds else np.zeros(0, np.int64)


def images_as_input(images: np.ndarray, input_dtype: str) -> np.ndarray:
    """Data set images (uint8 NCHW) in the build's input encoding.

    An integer input takes the pixels as they are; a float input takes them
    scaled to [0, 1] in float32, the models' own preprocessing.
    """
    from qonnx.core.datatype import DataType

    if DataType[input_dtype].is_integer():
        return images
    return images.astype(np.float32) / np.float32(255.0)
