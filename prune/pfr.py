"""Pruned-filter ratio (PFR) targets and accounting.

PFR = pruned filters / filters of all prunable layers (layers that cannot be
pruned do not count). A target is global (every prunable layer gets the same
ratio **(our choice)**, so that all methods prune the same counts and differ
only in which filters they pick; ``--allocation learned`` shares the same
total out differently, see :mod:`prune.allocation`) or per layer. Every kept count is a positive
multiple of the granularity G (FINN's PE/SIMD must divide channel counts),
and the achieved PFR is at least the target (see :func:`kept_counts`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError


def parse_target(spec: str | float | Mapping[str, float]) -> float | dict[str, float]:
    """``0.4`` (global), ``fc1=0.5,fc2=0.3`` or a JSON file ``{"fc1": 0.5, ...}`` (per layer)."""
    if isinstance(spec, (int, float)):
        return _check_ratio(float(spec), "--target-pfr")
    if isinstance(spec, Mapping):
        return {str(k): _check_ratio(float(v), f"--target-pfr {k}") for k, v in spec.items()}
    text = str(spec).strip()
    try:
        return _check_ratio(float(text), "--target-pfr")
    except ValueError:
        pass
    if text.endswith(".json"):
        path = Path(text)
        try:
            obj = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BnnflowError(
                f'{path}: cannot read the per-layer PFR config ({exc}); give a JSON object like {{"fc1": 0.5}}'
            ) from None
        if not isinstance(obj, dict):
            raise BnnflowError(f'{path}: the per-layer PFR config must be a JSON object like {{"fc1": 0.5}}')
        items: list[tuple[Any, Any]] = list(obj.items())  # (layer, ratio) as the file spells them
    else:
        items = []
        for part in text.split(","):
            name, sep, value = part.partition("=")
            if not sep:
                raise BnnflowError(
                    f"--target-pfr {text!r}: give a ratio in [0, 1), "
                    "LAYER=RATIO pairs separated by commas, or a .json file"
                )
            items.append((name.strip(), value))
    out = {}
    for name, value in items:
        try:
            out[str(name)] = _check_ratio(float(value), f"--target-pfr {name}")
        except (TypeError, ValueError):
            raise BnnflowError(f"--target-pfr {name}={value!r}: not a number") from None
    return out


def _check_ratio(p: float, what: str) -> float:
    if not 0.0 <= p < 1.0:
        raise BnnflowError(f"{what} {p}: a pruned-filter ratio must be in [0, 1)")
    return p


def kept_counts(widths: Mapping[str, int], target: float | Mapping[str, float], granularity: int = 1) -> dict[str, int]:
    """Filters to keep per prunable layer for ``target`` at ``granularity``.

    Per-layer targets round each kept count down (each layer reaches its own
    ratio). A global target rounds each layer to the nearest multiple, then
    takes G more filters from the layers rounded up the most until the global
    PFR reaches the target **(our choice)**: flooring every layer would cut a
    64-filter layer at G=8 and 40% to 32 filters.
    """
    if granularity < 1:
        raise BnnflowError(f"--granularity {granularity}: must be a positive integer")
    if isinstance(target, Mapping):
        unknown = sorted(set(target) - set(widths))
        if unknown:
            raise BnnflowError(
                f"--target-pfr names {', '.join(unknown)}, which are not prunable layers "
                f"of this network (prunable: {', '.join(widths)})"
            )
    for name, n in widths.items():
        if n < granularity:
            raise BnnflowError(f"--granularity {granularity} exceeds layer {name}'s {n} filters")
    if isinstance(target, Mapping):
        return {
            name: max(int(n * (1.0 - target.get(name, 0.0)) + 1e-9) // granularity * granularity, granularity)
            for name, n in widths.items()
        }
    ideal = {name: n * (1.0 - target) for name, n in widths.items()}
    keep = {
        name: min(max(round(ideal[name] / granularity), 1), n // granularity) * granularity
        for name, n in widths.items()
    }
    while pfr(widths, keep) < target - 1e-12:
        donor = max((k for k in keep if keep[k] > granularity), key=lambda k: keep[k] - ideal[k], default=None)
        if donor is None:
            break
        keep[donor] -= granularity
    return keep


def pfr(original: Mapping[str, int], kept: Mapping[str, int]) -> float:
    """Pruned filters / filters of all prunable layers."""
    total = sum(original.values())
    return (total - sum(kept[k] for k in original)) / total if total else 0.0
