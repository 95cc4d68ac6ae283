"""The report of ``bnnflow frontier``: accuracy against LUT and BRAM18, per point and per budget.

Drawn and tabulated from the point records only (``prune/frontier.py``), with
the report pieces ``bnnflow report`` and ``bnnflow sweep`` use
(:mod:`reports.render`, :mod:`reports.tables`, :mod:`reports.plots`), so the
Markdown, the HTML page and the PNG show the same numbers. Accuracy is the
simulator's on the test set (the accelerator's own); the held-out column is
what any choice among points is to be made on, and nothing here chooses by
the test set.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from bnnflow.files import atomic_write  # noqa: E402
from reports import plots, render  # noqa: E402
from reports.tables import Table, delta  # noqa: E402

#: plot and table order; the control last
ORDER = ("learned", "uniform", "msf-cascade", "random", "unpruned")
AXES = (("lut", "LUT"), ("bram18", "BRAM18"))


def _mean(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def _groups(records: list[dict[str, Any]]) -> dict[tuple[str | None, str], list[dict[str, Any]]]:
    """Records by (budget, method), seeds together, in plan order."""
    out: dict[tuple[str | None, str], list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault((r["budget"], r["method"]), []).append(r)
    return out


def front_chart(records: list[dict[str, Any]], path: Path) -> Path:
    """Test accuracy against LUT (left) and BRAM18 (right): every point, and per method the line
    through its per-budget means over the seeds; the equally trained unpruned network dashed."""
    fig, axes = plt.subplots(1, len(AXES), figsize=(11, 4.2))
    groups = _groups(records)
    for ax, (key, name) in zip(axes, AXES, strict=True):
        for i, method in enumerate(ORDER):
            mine = [r for r in records if r["method"] == method]
            if not mine:
                continue
            color = f"C{i}"
            ax.scatter([r[key] for r in mine], [r["test_accuracy"] for r in mine], color=color, alpha=0.45, s=18)
            means = sorted(
                (_mean([r[key] for r in g]), _mean([r["test_accuracy"] for r in g]))
                for (_, m), g in groups.items()
                if m == method
            )
            ax.plot(
                [x for x, _ in means],
                [y for _, y in means],
                color=color,
                marker="o",
                ls="--" if method == "unpruned" else "-",
                label=method,
            )
        ax.set_xlabel(f"{name} (FINN estimate, as built)")
        ax.set_ylabel("test accuracy (bit-exact simulator)")
        ax.set_title(f"Accuracy against {name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return plots._save(fig, path)


def points_table(records: list[dict[str, Any]]) -> Table:
    rows = [
        [
            r["budget"] or "–",
            r["method"],
            r["seed"],
            ", ".join(map(str, r["widths"])),
            r["pfr"],
            r["lut"],
            r["bram18"],
            r["estimated_fps"],
            r["within_budget"],
            r["heldout_accuracy"],
            r["test_accuracy"],
            r["agree_with_finn"],
            r["wall_time_s"],
        ]
        for r in records
    ]
    return Table(
        "Every point",
        [
            "Budget",
            "Method",
            "Seed",
            "Widths",
            "PFR",
            "LUT",
            "BRAM18",
            "Est. FPS",
            "Within budget",
            "Held-out acc.",
            "Test acc.",
            "Agrees with FINN",
            "Wall s",
        ],
        rows,
        "LUT, BRAM18, FPS: FINN's estimates of the built design; test accuracy through the "
        "bit-exact simulator; 'Agrees with FINN': share of the first images on which the "
        "simulator equals FINN's execution.",
        numeric_from=4,
    )


def budgets_table(records: list[dict[str, Any]], limits: dict[str, dict[str, float]]) -> Table:
    """Per budget and method, means over the seeds; the learned method's margin over each other."""
    groups = _groups(records)
    rows = []
    for (budget, method), g in groups.items():
        learned = groups.get((budget, "learned"), [])
        lim = limits.get(budget or "", {})
        acc = _mean([r["test_accuracy"] for r in g])
        margin = delta(acc, _mean([r["test_accuracy"] for r in learned])) if method != "learned" and learned else None
        rows.append(
            [
                budget or "–",
                method,
                len(g),
                lim.get("LUT"),
                lim.get("BRAM_18K"),
                _mean([r["lut"] for r in g]),
                _mean([r["bram18"] for r in g]),
                _mean([r["heldout_accuracy"] for r in g]),
                acc,
                margin,
            ]
        )
    return Table(
        "Per budget: means over the seeds",
        [
            "Budget",
            "Method",
            "Seeds",
            "LUT limit",
            "BRAM18 limit",
            "LUT",
            "BRAM18",
            "Held-out acc.",
            "Test acc.",
            "Δ learned",
        ],
        rows,
        "Δ learned = learned test accuracy - this method's (same budget, mean of the seeds). "
        "The baselines are at the learned point's PFR (uniform) or widths (msf-cascade, random) "
        "and are not held to the budget.",
        numeric_from=2,
    )


def write_front(
    records: list[dict[str, Any]], front: Any, limits: dict[str, dict[str, float]], out_dir: Path, source: str
) -> list[Path]:
    """``frontier.md``, ``frontier.html``, ``frontier.png`` and ``frontier.json`` in ``out_dir``."""
    png = front_chart(records, out_dir / "frontier.png")
    intro = (
        f"{source} on {front.board} at {front.target_fps:g} FPS (clock {front.clock_ns:g} ns): "
        f"{len(records)} points; budgets {', '.join(front.budgets)}; seeds "
        f"{', '.join(map(str, front.seeds))}; the same training for every point (stages of "
        f"{front.stage_samples or 'all'} images, {front.finetune_epochs} fine-tune epochs"
        + (f" on the first {front.train_limit} training images" if front.train_limit else "")
        + f", held-out {front.holdout}). Points in points/ (one JSON each)."
    )
    doc = render.Document(
        f"Accuracy against hardware: pruning to fit {front.board}",
        intro,
        [
            render.Section(
                "Front",
                "Read vertically for the accuracy a method keeps at a hardware figure.",
                [budgets_table(records, limits), points_table(records)],
                [(png, "Test accuracy against LUT and BRAM18 (FINN estimates of the built designs)")],
            )
        ],
    )
    md, page = render.write(doc, out_dir, "frontier")
    js = out_dir / "frontier.json"
    atomic_write(js, json.dumps({"limits": limits, "points": records}, indent=2, sort_keys=True))
    return [md, page, png, js]
