"""``bnnflow frontier`` on a real Dask cluster of 2 worker processes (distributed.LocalCluster), not a mock.

The front is the shipped TFC on MNIST at 200,000 FPS (where its widths change
FINN's LUT estimate, see tests/test_cost.py), kept counts in multiples of 32,
trained on 2,000 images with a 1-epoch fine-tune and 500 held-out images:
two LUT budgets the unpruned TFC misses, the learned method and random
selection at its widths, and the equally trained unpruned control. Every
point is really pruned, fine-tuned, built (FINN, no Vivado) and simulated.
``-m slow`` adds the VGG-11 fit demo (random weights, Pynq-Z1 at 1000 FPS).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from distributed import LocalCluster
from helpers import save_random_net

from bnnflow import checkpoint, cli
from prune.frontier import CONTROL, POINTS_DIR, FrontConfig, run_front

REPO = Path(__file__).resolve().parent.parent
TFC = REPO / "models" / "zoo" / "tfc_w1a1.pt"
# 0.85x: only fc1 can go (32, 64); 0.79x: both (32, 32); the unpruned TFC needs 1.0x
FRONT = FrontConfig(
    board="Pynq-Z1",
    target_fps=200_000,
    budgets=("lut=0.85x", "lut=0.79x"),
    seeds=(0,),
    methods=("learned", "random"),
    granularity=32,
    stage_samples=300,
    finetune_epochs=1,
    holdout=500,
    train_limit=2000,
    eval_limit=200,
    sim_limit=1000,
    finn_limit=2,
)
SMALL = replace(FRONT, budgets=FRONT.budgets[:1], methods=("learned",))
#: what differs between two computations of the same point: when, where, how long
VOLATILE = {"finished_at", "wall_time_s", "host", "pid", "checkpoint", "build_dir", "log", "source"}


def _points(out: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted((out / POINTS_DIR).glob("*.json"))}


def _stable(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in VOLATILE}


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """The front, computed on an existing 2-worker cluster reached by its address (``--scheduler``)."""
    out = tmp_path_factory.mktemp("front") / "front"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        records = run_front(TFC, FRONT, out, scheduler=cluster.scheduler_address, threads=1)
    return out, records


@pytest.fixture(scope="module")
def small_front(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], list[str]]:
    """The default run's front: one budget, the learned point and the unpruned control, on an existing
    2-worker cluster reached by its address; then the same front again on that cluster."""
    out = tmp_path_factory.mktemp("small") / "front"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        records = run_front(TFC, SMALL, out, scheduler=cluster.scheduler_address, threads=1)
        before = _points(out)
        lines: list[str] = []
        again = run_front(TFC, SMALL, out, scheduler=cluster.scheduler_address, threads=1, log=lines.append)
    assert _points(out) == before and again == records  # the rerun recomputed nothing
    return out, records, lines


def test_small_front_on_a_2_worker_cluster_is_reused_on_rerun(
    small_front: tuple[Path, list[dict[str, Any]], list[str]],
) -> None:
    out, records, lines = small_front
    by = {(r["budget"], r["method"]): r for r in records}
    assert set(by) == {(None, CONTROL), ("lut=0.85x", "learned")}
    learned, control = by[("lut=0.85x", "learned")], by[(None, CONTROL)]
    assert learned["widths"] == [32, 64, 64] and control["widths"] == [64, 64, 64]
    assert learned["lut"] <= learned["limits"]["LUT"] < control["lut"] and learned["within_budget"]
    assert all(r["agree_with_finn"] == 1.0 and r["agree_with_torch"] == 1.0 for r in records)
    assert len(_points(out)) == 2 and any("2 points, 2 reused, 0 to compute" in line for line in lines)


@pytest.mark.slow
def test_front_completes_and_points_honour_their_budgets(front: tuple[Path, list[dict[str, Any]]]) -> None:
    out, records = front
    by = {(r["budget"], r["method"]): r for r in records}
    assert set(by) == {(None, CONTROL)} | {(b, m) for b in FRONT.budgets for m in FRONT.methods}
    assert by[(None, CONTROL)]["widths"] == [64, 64, 64] and by[(None, CONTROL)]["pfr"] == 0.0
    for b in FRONT.budgets:
        learned, rand = by[(b, "learned")], by[(b, "random")]
        lim = learned["limits"]
        # as built (FINN's estimate reports of the real build): within the budget the unpruned TFC misses
        assert learned["lut"] <= lim["LUT"] < by[(None, CONTROL)]["lut"] and learned["bram18"] <= lim["BRAM_18K"]
        assert learned["within_budget"] and learned["fit"]["built"]["LUT"] == learned["lut"]
        assert rand["widths"] == learned["widths"] != [64, 64, 64] and rand["learned_key"] == learned["key"]
    assert by[("lut=0.79x", "learned")]["widths"] == [32, 32, 64]
    assert by[("lut=0.85x", "learned")]["widths"] == [32, 64, 64]
    for r in records:
        assert r["agree_with_finn"] == 1.0 and r["agree_with_torch"] == 1.0 and r["test_n"] == 1000
        assert 0.5 < r["test_accuracy"] <= 1.0 and 0.5 < r["heldout_accuracy"] <= 1.0 and r["heldout_n"] == 500
        assert Path(r["build_dir"], "manifest.json").is_file()
        stored = checkpoint.read_raw(r["checkpoint"])["meta"]["pruning"]["config"]
        assert stored["extra"] == {"train_limit": 2000} and stored["finetune_epochs"] == 1  # same training for all
    md = (out / "frontier.md").read_text()
    assert "frontier.png" in md and "| lut=0.79x | random | 0 |" in md and "Δ learned" in md
    assert (out / "frontier.png").stat().st_size > 10_000
    assert "data:image/png;base64," in (out / "frontier.html").read_text()
    assert len(json.loads((out / "frontier.json").read_text())["points"]) == 5


@pytest.mark.slow
def test_rerun_reuses_every_point(front: tuple[Path, list[dict[str, Any]]]) -> None:
    """Same command again: no point is recomputed (the per-point JSONs keep their bytes and mtimes)."""
    out, records = front
    before = _points(out)
    lines: list[str] = []
    again = run_front(TFC, FRONT, out, workers=2, threads=1, log=lines.append)
    assert _points(out) == before and len(before) == 5
    assert again == records and any("5 points, 5 reused, 0 to compute" in line for line in lines)


@pytest.mark.slow
def test_interrupted_front_resumes_with_the_same_points(
    tmp_path: Path, front: tuple[Path, list[dict[str, Any]]]
) -> None:
    """A front stopped (Ctrl-C: the local cluster goes down with it) after its first point resumes on
    rerun, the point that was cut short from its pruning state, and ends with the points of the
    uninterrupted front (same keys: the same options)."""
    out, records = front
    part = replace(FRONT, budgets=FRONT.budgets[:1], methods=("learned",))
    mine = tmp_path / "front"
    seen: list[dict[str, Any]] = []

    def stop(rec: dict[str, Any]) -> None:
        seen.append(rec)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_front(TFC, part, mine, workers=2, threads=1, cost_cache=out / "finn_cost", on_point=stop)
    assert len(seen) == 1 and len(_points(mine)) == 1
    lines: list[str] = []
    resumed = run_front(TFC, part, mine, workers=2, threads=1, cost_cache=out / "finn_cost", log=lines.append)
    assert any("2 points, 1 reused, 1 to compute" in line for line in lines)
    full = {r["key"]: r for r in records}
    assert [_stable(r) for r in resumed] == [_stable(full[r["key"]]) for r in resumed]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--budgets", "lut=abc"], r"--budget lut='abc': not a number"),
        (["--budgets", "lut=0.8x", "lut=0.8x"], r"--budgets lists a budget twice"),
        (["--budgets", "lut=0.8x", "--methods", "random"], r"'learned' must be among them"),
        (["--budgets", "lut=0.8x", "--methods", "learned,lasso"], r"--methods learned,lasso: give distinct names"),
        (["--budgets", "lut=0.8x", "--seeds", "1,1"], r"--seeds 1,1: give distinct"),
        (["--budgets", "lut=0.8x", "--holdout", "100"], r"--holdout 100: .* together with --finetune-epochs"),
        (["--budgets", "lut=0.8x", "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], r"--workers sizes the local"),
        (["--budgets", "lut=0.8x", "--board", "ZCU104"], r"--board 'ZCU104': choose one of"),
    ],
)
def test_bad_options_are_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    base = ["frontier", str(TFC), "--board", "Pynq-Z1", "--target-fps", "200000", "--out", str(tmp_path / "f")]
    assert cli.main(base + args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bnnflow: error:") and re.search(message, err), err
    assert not (tmp_path / "f").exists()


def test_frontier_options_default_to_the_front_config() -> None:
    """The CLI's defaults are FrontConfig's, not literals beside them that could drift apart."""
    from prune.cli import front_config

    args = ["frontier", str(TFC), "--board", "Pynq-Z1", "--target-fps", "3000", "--budgets", "lut=0.5x", "--out", "f"]
    assert front_config(cli.parser().parse_args(args)) == FrontConfig("Pynq-Z1", 3000.0, ("lut=0.5x",))


def test_unreachable_budget_is_one_error_before_any_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], small_front: tuple[Path, list[dict[str, Any]], list[str]]
) -> None:
    out, _, _ = small_front
    assert (
        cli.main(
            [
                "frontier",
                str(TFC),
                "--board",
                "Pynq-Z1",
                "--target-fps",
                "200000",
                "--granularity",
                "32",
                "--budgets",
                "lut=0.85x",
                "lut=0.5x",
                "--cost-cache",
                str(out / "finn_cost"),
                "--out",
                str(tmp_path / "f"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(
        r"--budgets lut=0.5x: no width vector meets the budget .*"
        r"the smallest reachable are LUT 1,8\d\d",
        err,
    ), err
    assert not (tmp_path / "f" / POINTS_DIR).exists()


@pytest.mark.slow
def test_vgg11_fit_demo(tmp_path: Path) -> None:
    """README's fit demo: VGG-11 (random weights; 507 BRAM18 of Pynq-Z1's 280 at 1000 FPS) pruned with
    ``--fit Pynq-Z1 --target-fps 1000`` builds within FINN's limits and simulates bit-exactly."""
    import models
    from build_flows.build import build
    from hw.run import sim_report

    src = save_random_net(
        "vgg11", list(models.ARCHS["vgg11"].default_widths), tmp_path / "vgg11.pt", seed=2, negative_gamma=0.3
    )
    out = tmp_path / "vgg11_fit.pt"
    assert (
        cli.main(
            [
                "prune",
                str(src),
                "--fit",
                "Pynq-Z1",
                "--target-fps",
                "1000",
                "--granularity",
                "32",
                "--stage-samples",
                "200",
                "--eval-limit",
                "100",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    fit = checkpoint.read_raw(out)["meta"]["pruning"]["fit"]
    assert fit["unpruned"]["BRAM_18K"] > 280 and fit["within_budget"]
    r = build(out, "Pynq-Z1", tmp_path / "build", target_fps=1000)
    assert r.totals["LUT"] <= fit["limits"]["LUT"] and r.totals["BRAM_18K"] <= fit["limits"]["BRAM_18K"]
    assert r.estimated_fps >= 1000
    sim = sim_report(tmp_path / "build", limit=200, finn_limit=2)
    assert sim["agree_with_finn"] == 1.0 and sim["agree_with_torch"] == 1.0
