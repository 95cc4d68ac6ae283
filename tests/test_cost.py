"""FINN's cost model (build_flows.cost) against real builds, and pruning to fit a board's budget.

The cost model probes its layer graphs with its own (balanced, random)
weights; the builds it is compared with are of other networks at the same
widths: differently seeded random weights with trained-like BatchNorm
statistics and negative scales, and the shipped trained, pruned LFC. The
comparisons are exact, node for node, against the model's two estimates (the
weights decide between them, see build_flows.cost), and the gap between the
two is asserted, so the size of the weights' effect shows. The default run
compares a CNV and the TFC the budget tests build; ``-m slow`` adds a CNV at
odd widths with FINN's two-pass relaxation, the pruned LFC and a VGG-11.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import save_random_net
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from bnnflow import checkpoint, cli
from bnnflow.errors import BnnflowError, NotSupported
from build_flows.build import build
from build_flows.cost import CostModel
from build_flows.transforms.widen_xnor_accumulators import popcount_datatype
from prune import allocation

REPO = Path(__file__).resolve().parent.parent
ZOO = REPO / "models" / "zoo"
BOARD = "Pynq-Z1"
TFC_FPS = 200_000  # high enough that the TFC's widths change FINN's LUT and BRAM estimates


def _report(d: Path, name: str) -> Any:
    return json.loads((d / "report" / f"{name}.json").read_text())


def _differences(cm: CostModel, widths: list[int], d: Path, one_sided: bool = False) -> dict[str, Any]:
    """Everything in which the cost model's estimate differs from the build in ``d``, by node."""
    est = cm.estimate(widths, one_sided)
    diff: dict[str, Any] = {}
    built_res, built_cyc = _report(d, "estimate_layer_resources"), _report(d, "estimate_layer_cycles")
    folding = _report(d, "auto_folding_config")
    for name in sorted(set(built_res) | set(est.layer_resources())):
        mine, theirs = est.layer_resources().get(name), built_res.get(name)
        if mine != theirs:
            diff[f"{name} resources"] = (mine, theirs)
    for name in sorted(set(built_cyc) | set(est.layer_cycles())):
        if est.layer_cycles().get(name) != built_cyc.get(name):
            diff[f"{name} cycles"] = (est.layer_cycles().get(name), built_cyc.get(name))
    for name, fold in est.folding().items():
        theirs = {k: folding.get(name, {}).get(k) for k in fold}
        if fold != theirs:
            diff[f"{name} folding"] = (fold, theirs)
    fps = _report(d, "estimate_network_performance")["estimated_throughput_fps"]
    if est.estimated_fps != fps:
        diff["estimated fps"] = (est.estimated_fps, fps)
    return diff


def _variants(cm: CostModel, widths: list[int], d: Path) -> dict[str, str]:
    """Which of the model's two estimates each node of the build in ``d`` equals exactly: "balanced",
    "one-sided" or "either" (they agree); nodes equal to neither are left out. Cycles, folding and
    FPS must equal both."""
    lo, hi = _differences(cm, widths, d), _differences(cm, widths, d, one_sided=True)
    assert not [k for k in (*lo, *hi) if not k.endswith(" resources")], (lo, hi)
    out = {}
    for n in cm.estimate(widths).nodes:
        is_lo, is_hi = f"{n} resources" not in lo, f"{n} resources" not in hi
        if is_lo or is_hi:
            out[n] = "either" if is_lo and is_hi else "balanced" if is_lo else "one-sided"
    return out


def _upper(cm: CostModel, widths: list[int]) -> dict[str, float]:
    """The search's figures for ``widths``: per layer group the larger of the two estimates, summed."""
    chain = cm.chain(widths)
    ups = [cm.upper(g, chain[g], chain[g + 1]) for g in range(len(chain) - 1)]
    return {r: sum(u[r] for u in ups) for r in ("LUT", "BRAM_18K")}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cost-model cache for the module, as a user would share it between runs."""
    return tmp_path_factory.mktemp("finn_cost")


SLOW = pytest.mark.slow  # 15-30 s each here (a build and a probe): run with -m slow


@pytest.mark.parametrize(
    "arch, widths, fps, source, one_sided",
    [
        # wide layers (MW 144, 288, ...): the balanced estimate, node for node
        ("cnv", [16, 16, 32, 32, 32, 32, 64, 64], 3000, "random", None),
        # widths with few divisors, a target the first layer cannot reach (FINN's two-pass relaxation
        # folds every layer again for the slowest one), and one fc2 filter all +1 (layer 7)
        pytest.param("cnv", [8, 24, 40, 40, 56, 56, 48, 64], 50000, "random", 7, marks=SLOW),
        # trained weights, wide layers: the balanced estimate
        pytest.param("lfc", [512, 512, 1024], 10000, "lfc_w1a1_pruned.pt", None, marks=SLOW),
        # random weights in a 27-wide first layer (unsigned input): which estimate is the weights' doing
        pytest.param("vgg11", [8, 8, 16, 16, 16, 16, 16, 16], 3000, "random", "either", marks=SLOW),
    ],
)
def test_cost_model_equals_the_build_reports(
    tmp_path: Path, cache: Path, arch: str, widths: list[int], fps: int, source: str, one_sided: int | str | None
) -> None:
    """Every node of the build equals, exactly, the model's estimate for balanced weights or the one
    for a one-sided column (FINN's widest accumulator, see build_flows.cost); ``one_sided``: None,
    all balanced; a layer index, that layer made one-sided and so estimated; "either": not known
    beforehand. The gap between the two: about one LUT per PE of a layer, no BRAM18."""
    if source == "random":
        ckpt = save_random_net(arch, widths, tmp_path / "net.pt", seed=7, negative_gamma=0.3)
    else:
        ckpt = ZOO / source
        assert checkpoint.read_raw(ckpt)["widths"] == widths
    if isinstance(one_sided, int):
        net, meta = checkpoint.load(ckpt)
        with torch.no_grad():
            net.binary_units()[one_sided].weight_layer.weight[0] = 1.0
        checkpoint.save(net, meta, ckpt)
    build(ckpt, BOARD, tmp_path / "build", target_fps=fps, n_check=0)
    cm = CostModel(arch, BOARD, fps, cache_dir=cache)
    build_dir = tmp_path / "build"
    matched = _variants(cm, widths, build_dir)
    est, wide = cm.estimate(widths), cm.estimate(widths, one_sided=True)
    assert set(matched) == set(est.nodes), "nodes equal to neither estimate"
    gaps = {
        n: (
            wide.nodes[n].resources["LUT"] - est.nodes[n].resources["LUT"],
            wide.nodes[n].resources["BRAM_18K"] - est.nodes[n].resources["BRAM_18K"],
        )
        for n in est.nodes
    }
    # the size of the weights' effect: about one LUT per PE (threshold comparators), no BRAM18
    assert all(0 <= lut <= est.nodes[n].folding.get("PE", 1) + 2 and bram == 0 for n, (lut, bram) in gaps.items()), gaps
    if one_sided is None:
        assert _differences(cm, widths, build_dir) == {}  # no one-sided column: the balanced estimate
    elif isinstance(one_sided, int):
        node = f"MVAU_hls_{one_sided}"
        assert matched[node] == "one-sided" and gaps[node][0] > 0
        final = ModelWrapper(str(build_dir / "intermediate_models" / "step_generate_estimate_reports.onnx"))
        mvau = getCustomOp(final.get_node_from_name(node))
        acc = DataType[mvau.get_nodeattr("accDataType")]  # FINN's signed type, one bit over the popcount's
        assert acc.signed() and acc.bitwidth() == popcount_datatype(mvau.get_nodeattr("MW")).bitwidth() + 1
        built = _report(build_dir, "estimate_layer_resources")["total"]
        assert est.totals["LUT"] < built["LUT"] <= _upper(cm, widths)["LUT"]
    relaxed = est.folded_for > est.target_cycles
    assert relaxed == (fps == 50000) and cm.probes == 1
    assert set(est.groups) == {*cm.cls.width_names(), "classifier"}
    assert sum(est.layer_totals("LUT").values()) == pytest.approx(est.totals["LUT"])


# ---------------------------------------------------------------- the exact search
def _brute(
    cands: list[list[int]], losses: list[dict[int, float]], cost: Any, limits: tuple[float, float]
) -> allocation.ChainChoice | None:
    best = None
    for chain in itertools.product(*cands):
        parts = [cost(g, chain[g], chain[g + 1]) for g in range(len(chain) - 1)]
        if any(p is None for p in parts):
            continue
        loss = 0.0
        for j, w in enumerate(chain):
            loss += losses[j].get(w, 0.0)
        lut = bram = 0.0
        for p in parts:
            lut, bram = lut + p[0], bram + p[1]
        if lut <= limits[0] and bram <= limits[1]:
            c = allocation.ChainChoice(tuple(chain[1:-1]), loss, lut, bram)
            best = c if best is None or c.key() < best.key() else best
    return best


def test_chain_search_equals_brute_force_on_made_up_costs() -> None:
    """The Pareto dynamic programme against enumeration: 4 inner layers of 2-4 widths, pair costs
    with ties and infeasible pairs, at budgets from none fitting to all fitting."""
    rng = random.Random(0)
    cands = [[3], [8, 16, 24, 32], [8, 16, 24], [16, 32, 48, 64], [8, 16], [10]]
    losses = [{w: rng.choice([0.0, 0.1, 0.25, rng.random()]) for w in c} for c in cands]
    table = {
        (g, a, b): None if rng.random() < 0.1 else (float(rng.randrange(0, 500, 25)), float(rng.randrange(4)))
        for g in range(len(cands) - 1)
        for a in cands[g]
        for b in cands[g + 1]
    }
    cost = lambda g, a, b: table[(g, a, b)]  # noqa: E731
    for limits in [(100.0, 2.0), (900.0, 5.0), (1300.0, 8.0), (1600.0, 20.0), (math.inf, math.inf)]:
        best = _brute(cands, losses, cost, limits)
        front = allocation.chain_front(cands, losses, cost, limits)
        got = min(front, key=allocation.ChainChoice.key) if front else None
        assert got == best, limits
        assert all(p.lut <= limits[0] and p.bram <= limits[1] for p in front)


@pytest.mark.parametrize("sizes", [[1, 3, 3, 1], [1, 13, 13, 1], [1, 4, 13, 13, 6, 1], [1, 12, 12, 13, 13, 1]])
def test_probes_cover_every_layer_shape_with_the_fewest_builds(sizes: list[int]) -> None:
    """The probe chains contain every (input, output) width pair of every layer, in as many chains
    as the layer with the most pairs has pairs (one probe build gives one pair per layer)."""
    from build_flows.cost import _covering_chains

    cands = [[10 * g + w for w in range(n)] for g, n in enumerate(sizes)]
    missing = [{(a, b) for a in cands[g] for b in cands[g + 1]} for g in range(len(cands) - 1)]
    chains = _covering_chains(cands, missing)
    assert all(c[j] in cands[j] for c in chains for j in range(len(cands)))
    for g, pairs in enumerate(missing):
        assert pairs <= {(c[g], c[g + 1]) for c in chains}
    assert len(chains) == max(map(len, missing))


@pytest.fixture(scope="module")
def tfc_model(cache: Path) -> CostModel:
    """The TFC's cost model with fc1, fc2 in {32, 64} (granularity 32) probed: 4 probe builds."""
    cm = CostModel("tfc", BOARD, TFC_FPS, cache_dir=cache)
    assert cm.prepare([[32, 64], [32, 64], [64]]) == 4
    return cm


def test_cost_model_cache_and_speed(tfc_model: CostModel, cache: Path) -> None:
    """Layer shapes probed once serve every target FPS and every width vector made of them; a new
    instance reads them from the cache folder; a cached estimate takes well under a millisecond."""
    import time

    cm = CostModel("tfc", BOARD, TFC_FPS // 4, cache_dir=cache)
    for v in ([32, 64, 64], [64, 32, 64]):
        assert cm.estimate(v).widths == tuple(v)
    assert cm.probes == 0 and cm.estimate([64, 64, 64]).totals != tfc_model.estimate([64, 64, 64]).totals
    t0 = time.perf_counter()
    for _ in range(2000):
        cm.estimate([32, 64, 64])
    per_s = 2000 / (time.perf_counter() - t0)
    assert per_s > 1000, per_s
    with pytest.raises(BnnflowError, match="no cached FINN graph for tfc layer fc2 with 32 -> 48"):
        cm.group(1, 32, 48)
    with pytest.raises(NotSupported, match="not supported: the FINN cost model for resnet18"):
        CostModel("resnet18", BOARD, 3000)
    with pytest.raises(BnnflowError, match="tfc takes 3 positive widths"):
        cm.estimate([16, 16])


def test_fit_search_equals_brute_force_on_finn_costs(tfc_model: CostModel) -> None:
    """On the TFC's FINN estimates: the search's optimum is the best of all width vectors whose
    whole-network estimate meets the target and the budget, at budgets that force each choice."""
    cm = tfc_model
    index = {"fc1": 0, "fc2": 1}
    curves = {"fc1": {32: 0.9, 64: 0.2}, "fc2": {32: 0.5, 64: 0.2}}  # fc1 matters more
    vectors = [[a, b, 64] for a in (32, 64) for b in (32, 64)]
    assert all(cm.estimate(v).meets_target for v in vectors)
    upper = {tuple(v): _upper(cm, v) for v in vectors}
    for v in vectors:  # the search's figures bound both of FINN's
        for est in (cm.estimate(v), cm.estimate(v, one_sided=True)):
            assert all(est.totals[r] <= upper[tuple(v)][r] for r in ("LUT", "BRAM_18K"))
    luts = sorted({u["LUT"] for u in upper.values()})
    assert len(luts) == 4  # every width vector costs differently: the budget decides
    loss = lambda v: (curves["fc1"][v[0]] - 0.2) + (curves["fc2"][v[1]] - 0.2)  # noqa: E731
    for lut_limit in luts:
        limits = {"LUT": lut_limit, "BRAM_18K": 280.0}
        fit = allocation.fit_allocation(curves, [64, 64, 64], index, 32, cm, limits)
        ok = [v for v in vectors if upper[tuple(v)]["LUT"] <= lut_limit]
        best = min(ok, key=lambda v: (loss(v), upper[tuple(v)]["LUT"], upper[tuple(v)]["BRAM_18K"]))
        assert fit.widths == best and fit.loss == pytest.approx(loss(best))
        assert fit.upper == upper[tuple(best)] and fit.predicted.totals == cm.estimate(best).totals


def test_unreachable_budgets_are_one_clear_error(tfc_model: CostModel, cache: Path) -> None:
    cm = tfc_model
    smallest = min(_upper(cm, [a, b, 64])["LUT"] for a in (32, 64) for b in (32, 64))
    args = ("tfc", [64, 64, 64], ["fc1", "fc2"], {"fc1": 0, "fc2": 1}, 32, BOARD, TFC_FPS, 10.0)
    full = _upper(cm, [64, 64, 64])
    with pytest.raises(BnnflowError) as err:
        allocation.fit_cost_model(*args, "lut=0.001", full, cache, lambda _: None)
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and f"the smallest reachable are LUT {smallest:,.0f}" in msg
    assert msg.startswith("no width vector meets the budget LUT <= 53") and "raise --budget" in msg
    with pytest.raises(BnnflowError, match=r"no width vector reaches 1e\+08 FPS: FINN cannot fold .*fc1"):
        allocation.fit_cost_model(*args[:6], 1e8, 10.0, None, full, cache, lambda _: None)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("lut=2", r"a fraction of the board must be in \(0, 1\]"),
        ("lut=0", r"must be in \(0, 1\]"),
        ("dsp=0.5", "give lut=X,bram=Y"),
        ("lut=0.5,lut=0.4", "lut given twice"),
        ("bram=lots", "not a number"),
    ],
)
def test_bad_budget_specs(spec: str, message: str) -> None:
    with pytest.raises(BnnflowError, match=message):
        allocation.parse_budget(spec)


def test_budget_limits() -> None:
    unpruned = {"LUT": 40000.0, "BRAM_18K": 100.0}
    assert allocation.budget_limits(None, BOARD, unpruned) == {"LUT": 0.7 * 53200, "BRAM_18K": 0.8 * 280}
    assert allocation.budget_limits("lut=0.5x,bram=0.25", BOARD, unpruned) == {"LUT": 20000.0, "BRAM_18K": 70.0}
    assert allocation.budget_limits("lut=2x", BOARD, unpruned)["LUT"] == 53200  # never over the board


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fit", "Pynq-Z1"], "needs a positive --target-fps"),
        (["--fit", "ZCU104", "--target-fps", "1000"], "--fit 'ZCU104': choose one of Pynq-Z1, Pynq-Z2"),
        (["--fit", "Pynq-Z1", "--target-fps", "1000", "--target-pfr", "0.5"], "drop --target-pfr"),
        (["--fit", "Pynq-Z1", "--target-fps", "1000", "--allocation", "learned"], "drop --allocation learned"),
        (["--fit", "Pynq-Z1", "--target-fps", "1000", "--budget", "lut=3"], "fraction of the board"),
        (["--target-pfr", "0.5", "--target-fps", "1000"], "go with --fit BOARD"),
        ([], "give --target-pfr P"),
    ],
)
def test_cli_fit_options(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    src = ZOO / "tfc_w1a1.pt"
    assert cli.main(["prune", str(src), "--out", str(tmp_path / "x.pt"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bnnflow: error:") and re.search(message, err), err
    assert not (tmp_path / "x.pt").exists()


def test_prune_to_fit_is_honoured_by_the_built_design(
    tmp_path: Path, tfc_model: CostModel, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bnnflow prune --fit`` on the shipped TFC with a LUT budget the unpruned network misses: the
    pruned network's real build meets the budget, within the predicted range, node for node one of
    the model's two estimates; fit.md says so."""
    cm = tfc_model
    full, smallest = cm.estimate([64, 64, 64]).totals["LUT"], _upper(cm, [32, 32, 64])["LUT"]
    share = round((full + smallest) / 2 / 53200, 5)
    out = tmp_path / "fit.pt"
    assert (
        cli.main(
            [
                "prune",
                str(ZOO / "tfc_w1a1.pt"),
                "--fit",
                BOARD,
                "--target-fps",
                str(TFC_FPS),
                "--budget",
                f"lut={share}",
                "--granularity",
                "32",
                "--stage-samples",
                "100",
                "--eval-limit",
                "50",
                "--cost-cache",
                str(cache),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "within the budget" in capsys.readouterr().out
    net, meta = checkpoint.load(out)
    fit = meta["pruning"]["fit"]
    assert list(net.widths) == fit["widths"] and list(net.widths) != [64, 64, 64]
    assert fit["cost_probes"] == 0 and fit["limits"]["LUT"] == pytest.approx(share * 53200)
    assert fit["unpruned"]["LUT"] > fit["limits"]["LUT"]  # the source network's own FINN estimate misses it
    r = build(out, BOARD, tmp_path / "build", target_fps=TFC_FPS, n_check=0)
    assert r.totals["LUT"] <= fit["limits"]["LUT"] and r.totals["BRAM_18K"] <= fit["limits"]["BRAM_18K"]
    assert r.totals == fit["built"] and fit["within_budget"] and fit["within_prediction"]
    assert all(fit["predicted"][k] <= r.totals[k] <= fit["predicted_upper"][k] for k in ("LUT", "BRAM_18K"))
    assert set(_variants(cm, list(net.widths), tmp_path / "build")) == set(cm.estimate(list(net.widths)).nodes)
    md = (tmp_path / "fit.prune" / "fit.md").read_text()
    assert "is within the budget and within the predicted range" in md and "| LUT |" in md
