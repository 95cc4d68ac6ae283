"""The bnnflow checkpoint format.

A checkpoint is a plain dict saved with ``torch.save`` and read with
``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts
only, so a checkpoint handed in by someone else stays data. It holds what is
needed to rebuild the network (architecture, widths) and what a user wants to
know about it (data set, accuracy, training config, pruning):

    {"format": "bnnflow-checkpoint", "version": 1,
     "arch": "cnv", "widths": [...], "dataset": "cifar10", "precision": "binary",
     "state_dict": {...}, "meta": {"accuracy": 0.81, "n": 10000, ...}}

``precision`` "float" marks the full-precision counterpart of a network
(``bnnflow train --float``): a teacher to distil from or weights to start a
binary run from, refused wherever a W1A1 network is expected (prune, export,
build); a checkpoint without the entry is binary.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

import torch

import models
from bnnflow import validate
from bnnflow.errors import BnnflowError, CheckpointError
from bnnflow.files import atomic_path
from bnnflow.train_config import PRECISIONS
from models.nets import BinaryNet

FORMAT = "bnnflow-checkpoint"
VERSION = 1


def atomic_torch_save(obj: Any, path: Path | str) -> None:
    """Save to a temporary file beside ``path`` and rename, so no half-written file remains."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def to_dict(model: BinaryNet, meta: dict[str, Any], precision: str = "binary") -> dict[str, Any]:
    """The checkpoint dict of ``model`` with metadata ``meta``."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "arch": model.arch,
        "widths": list(model.widths),
        "dataset": model.dataset,
        "precision": precision,
        "state_dict": {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
        "meta": meta,
    }


def save(model: BinaryNet, meta: dict[str, Any], path: Path | str, precision: str = "binary") -> None:
    """Write ``model`` and ``meta`` as a bnnflow checkpoint (atomically)."""
    atomic_torch_save(to_dict(model, meta, precision), path)


def precision(obj: dict[str, Any]) -> str:
    """What a checked checkpoint dict holds: "binary" (the W1A1 network) or "float"."""
    return str(obj.get("precision", "binary"))


def _torch_load_error(path: Path, exc: BaseException) -> CheckpointError:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused, in one line.

    PyTorch's own text goes on to explain how to load the file unsafely; that is not
    advice bnnflow gives, so only the reason is kept.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    hint = "give a .pt file written by 'bnnflow train' or 'bnnflow prune'"
    if "Weights only load failed" in text:
        reason = next(
            (
                line.split("WeightsUnpickler error:", 1)[1].strip()
                for line in text.splitlines()
                if "WeightsUnpickler error:" in line
            ),
            "",
        )
        reason = reason.split(" was not an allowed global")[0].replace("GLOBAL ", "").strip()
        return CheckpointError(
            f"{path}: not a readable checkpoint: it holds Python objects"
            f"{f' ({reason[:200]})' if reason else ''}, not only tensors and plain data; bnnflow never runs "
            "code from a checkpoint "
            f"(it reads them with torch.load(weights_only=True)): {hint}"
        )
    first = text.splitlines()[0] if text else type(exc).__name__
    return CheckpointError(f"{path}: not a readable checkpoint ({first[:200]}); {hint}")


def _check_raw(obj: Any, origin: str) -> dict[str, Any]:
    """``obj`` is a checkpoint dict of ours with entries of the right types."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{origin}: not a bnnflow checkpoint (no format={FORMAT!r} entry); "
            "give a .pt file written by 'bnnflow train' or 'bnnflow prune'"
        )
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{origin}: checkpoint version {obj.get('version')!r}, this bnnflow reads {VERSION}")
    for key in ("arch", "widths", "state_dict", "meta"):
        if key not in obj:
            raise CheckpointError(f"{origin}: checkpoint lacks the {key!r} entry")
    bad = {
        "arch": not isinstance(obj["arch"], str),
        "widths": not isinstance(obj["widths"], (list, tuple))
        or not all(isinstance(w, int) and not isinstance(w, bool) for w in obj["widths"]),
        "state_dict": not isinstance(obj["state_dict"], dict)
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj["state_dict"].items()),
        "meta": not isinstance(obj["meta"], dict),
        "precision": precision(obj) not in PRECISIONS,
    }
    wrong = [k for k, v in bad.items() if v]
    if wrong:
        want = {
            "arch": "a name",
            "widths": "a list of whole numbers",
            "state_dict": "a dict of tensors",
            "meta": "a dict",
            "precision": " or ".join(map(repr, PRECISIONS)),
        }
        k = wrong[0]
        got = repr(obj[k]) if k == "precision" else type(obj[k]).__name__
        raise CheckpointError(
            f"{origin}: damaged checkpoint: its {k!r} entry is {got}, not "
            f"{want[k]}; give a .pt file written by 'bnnflow train' or 'bnnflow prune'"
        )
    return obj


def read_raw(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint dict safely and check that it is one of ours."""
    return read_raw_hashed(path)[0]


def read_raw_hashed(path: Path | str) -> tuple[dict[str, Any], str]:
    """:func:`read_raw` and the SHA-256 of the very bytes it loaded (one read: a file replaced
    between hashing and loading cannot be recorded under another file's hash)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or corrupt files
        raise _torch_load_error(path, exc) from None
    return _check_raw(obj, str(path)), hashlib.sha256(data).hexdigest()


def check_architecture(arch: str, widths: Any, origin: str) -> dict[str, torch.Size]:
    """Check that ``arch`` with ``widths`` is a network of bounded size without allocating it.

    Every width must be at most :data:`~bnnflow.validate.MAX_WIDTH` and the
    parameter count at most :data:`~bnnflow.validate.MAX_PARAMETERS`; the
    network is built on PyTorch's ``meta`` device (shapes only). Returns the
    shapes of its state dict.
    """
    if widths is not None:
        if not isinstance(widths, (list, tuple)) or not all(
            isinstance(w, int) and not isinstance(w, bool) for w in widths
        ):
            raise BnnflowError(f"{origin}: widths must be a list of whole numbers, got {widths!r}")
        big = [w for w in widths if w > validate.MAX_WIDTH]
        if big:
            raise BnnflowError(
                f"{origin}: width {big[0]:,} is above bnnflow's limit of {validate.MAX_WIDTH:,} (widths {list(widths)})"
            )
    with torch.device("meta"):
        shape = models.build(arch, widths)
    n = sum(p.numel() for p in shape.parameters())
    if n > validate.MAX_PARAMETERS:
        raise BnnflowError(
            f"{origin}: {arch} with widths {list(shape.widths)} has {n:,} parameters, above "
            f"bnnflow's limit of {validate.MAX_PARAMETERS:,}; give smaller widths"
        )
    return {k: v.shape for k, v in shape.state_dict().items()}


def from_dict(
    obj: dict[str, Any], origin: str = "checkpoint", allow_float: bool = False
) -> tuple[BinaryNet, dict[str, Any]]:
    """Rebuild the network of a checkpoint dict; returns (model in eval mode, meta).

    The dict is checked first: entries of the right types, widths bounded, the
    weights' names and shapes those of the network (compared before the
    network is allocated) and every value finite. A full-precision one is
    refused unless ``allow_float`` (training reads teachers and initial weights).
    """
    _check_raw(obj, origin)
    if precision(obj) == "float" and not allow_float:
        raise CheckpointError(
            f"{origin}: a full-precision network (bnnflow train --float), not a W1A1 one: use it as "
            "bnnflow train's --teacher or --init-from; prune, export and build take a binary checkpoint"
        )
    try:
        shapes = check_architecture(obj["arch"], obj["widths"], origin)
    except CheckpointError:
        raise
    except BnnflowError as exc:
        raise CheckpointError(str(exc) if str(exc).startswith(origin) else f"{origin}: {exc}") from None
    sd = obj["state_dict"]
    # shapes first, before the network is allocated (missing or extra names: load_state_dict says)
    wrong = [k for k in shapes if k in sd and tuple(sd[k].shape) != tuple(shapes[k])]
    if wrong:
        raise CheckpointError(
            f"{origin}: weights do not fit {obj['arch']} {list(obj['widths'])}: {wrong[0]} is "
            f"{list(sd[wrong[0]].shape)}, the network needs {list(shapes[wrong[0]])}"
        )
    for k, v in sd.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(
                f"{origin}: weights are not finite (NaN or infinite values in {k}), e.g. a training run "
                "that diverged; retrain (a lower --lr) or give another checkpoint"
            )
        if k.endswith("running_var") and bool((v < 0).any()):
            # finite, but sqrt(var + eps) is NaN: the network (and FINN's thresholds) would compute NaN
            raise CheckpointError(
                f"{origin}: negative BatchNorm variance in {k} (down to {float(v.min()):g}); a variance is "
                "never negative, so the file is damaged: give another checkpoint"
            )
    model = models.build(obj["arch"], obj["widths"])
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        raise CheckpointError(f"{origin}: weights do not fit {obj['arch']} {obj['widths']}: {exc}") from None
    model.eval()
    return model, dict(obj["meta"])


def pruning_record(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The pruning a checkpoint's network carries: its own, or, for a network trained further with
    ``bnnflow train --init-from`` (any number of times), the one its starting point carried."""
    pruning = meta.get("pruning")
    if isinstance(pruning, dict):
        return pruning
    init = meta.get("init_from")
    return pruning_record(init) if isinstance(init, dict) else None


def load(path: Path | str, allow_float: bool = False) -> tuple[BinaryNet, dict[str, Any]]:
    """Load a checkpoint file; returns (model in eval mode, meta)."""
    return from_dict(read_raw(path), str(path), allow_float)


def load_for_inference(path: Path | str) -> tuple[BinaryNet, dict[str, Any]]:
    """:func:`load` with the sign thresholds snapped between accumulator values
    (:func:`models.thresholds.snap_thresholds`): the network that export builds and that
    evaluation and the simulator's reference run, so that PyTorch's float32 agrees with the
    accelerator's integer thresholds on every input."""
    from models.thresholds import snap_thresholds

    model, meta = load(path)
    snap_thresholds(model)
    return model, meta


def read_train_state(path: Path | str, state_format: str, map_location: Any = "cpu") -> dict[str, Any]:
    """The ``state.pt`` of ``bnnflow train``, checked before ``--resume`` trusts its entries: the
    types of its entries, its checkpoint (as :func:`from_dict` checks one) and its optimizer state."""
    path = Path(path)
    hint = "remove it to start afresh or drop --resume"
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or corrupt files
        raise BnnflowError(f"{path}: not a readable training state ({type(exc).__name__}); {hint}") from None
    if not isinstance(state, dict) or state.get("format") != state_format:
        raise BnnflowError(f"{path}: not a bnnflow training state; {hint}")
    want: dict[str, type | tuple[type, ...]] = {
        "config": dict,
        "epoch": int,
        "history": list,
        "wall_time_s": (int, float),
        "optimizer": dict,
        "checkpoint": dict,
    }
    for key, typ in want.items():
        if not isinstance(state.get(key), typ):
            got = "missing" if key not in state else f"a {type(state[key]).__name__}"
            raise BnnflowError(f"{path}: damaged training state: its {key!r} entry is {got}; {hint}")
    cfg = state["config"]
    if not isinstance(cfg.get("arch"), str) or not isinstance(cfg.get("epochs"), int):
        raise BnnflowError(f"{path}: damaged training state: its config lacks arch or epochs; {hint}")
    if not isinstance(state.get("init_from"), (dict, type(None))):
        raise BnnflowError(
            f"{path}: damaged training state: its 'init_from' entry is {type(state['init_from']).__name__}; {hint}"
        )
    if not isinstance(state.get("best"), (dict, type(None))):
        raise BnnflowError(
            f"{path}: damaged training state: its 'best' entry is {type(state['best']).__name__}; {hint}"
        )
    try:
        from_dict(state["checkpoint"], f"{path} (its checkpoint entry)", allow_float=True)
    except CheckpointError as exc:
        raise BnnflowError(f"{exc}; {hint}") from None
    opt = state["optimizer"]
    if not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list):
        raise BnnflowError(f"{path}: damaged training state: its optimizer entry is not an optimizer's; {hint}")
    return state
