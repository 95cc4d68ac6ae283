"""Filter pruning: exact physical removal, PFR accounting, resumable runs, CLI and errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import models
from bnnflow import checkpoint, cli, data
from bnnflow.errors import BnnflowError
from bnnflow.evaluate import accuracy
from models.nets import BinaryNet
from prune import pfr
from prune.config import PruneConfig
from prune.gates import GateSet
from prune.pipeline import prune_checkpoint
from prune.removal import physically_prune
from prune.schedule import Pruner
from prune.topology import prunable_layers

G = 4
SMALL = {
    "tfc": [24, 20, 16],
    "cnv": [8, 12, 16, 16, 16, 16, 32, 32],
    "resnet18": [8, 8, 8, 8, 8, 12, 8, 8, 8, 8, 8, 8],
    "nin": [12, 8, 8, 12, 8, 8, 8, 8],
    "vgg11": [8, 8, 12, 8, 8, 8, 8, 8],
}


def _random_net(arch: str, seed: int = 0) -> BinaryNet:
    """A small net with BatchNorm statistics spread so removed channels take both constants."""
    torch.manual_seed(seed)
    net = models.build(arch, SMALL[arch])
    with torch.no_grad():
        for unit in net.binary_units():
            fan_in = unit.weight_layer.weight[0].numel()
            unit.bn.running_mean.uniform_(-0.5 * fan_in**0.5, 0.5 * fan_in**0.5)
            unit.bn.running_var.uniform_(0.5 * fan_in, 2.0 * fan_in)
            unit.bn.weight.uniform_(-1, 1)
            unit.bn.bias.uniform_(-1, 1)
    return net.eval()


def _gate_randomly(net: BinaryNet, seed: int = 0) -> GateSet:
    """Fixed gates: first layer keeps exactly G filters, second a multiple of G, others random."""
    gen = torch.Generator().manual_seed(seed)
    gates = GateSet(net)
    for i, (_, gate) in enumerate(gates):
        n = gate.m.numel()
        if i == 0:
            keep = torch.zeros(n, dtype=torch.bool)
            keep[torch.randperm(n, generator=gen)[:G]] = True
        elif i == 1:
            keep = torch.zeros(n, dtype=torch.bool)
            keep[torch.randperm(n, generator=gen)[: (n // 2) // G * G]] = True
        else:
            keep = torch.rand(n, generator=gen) < 0.6
            keep[0] = True
        gate.fix(keep)
    return gates


def _real_inputs(net: BinaryNet, n: int = 200) -> torch.Tensor:
    split = data.load(net.dataset, "test")  # every 50th: CIFAR-10's test split is ordered by class
    return data.to_float(split.images[::50][:n])


@pytest.mark.parametrize("arch", list(SMALL))
def test_gated_equals_physically_pruned(arch: str) -> None:
    net = _random_net(arch)
    gates = _gate_randomly(net)
    pruned = physically_prune(net, gates)
    assert type(pruned) is type(net)
    for layer, gate in gates:
        assert pruned.widths[layer.width_index] == int(gate.keep.sum())
    assert pruned.widths[prunable_layers(net)[0].width_index] == G
    consts = torch.cat([g.const[~g.keep] for _, g in gates])
    if arch in ("tfc", "cnv"):  # unpadded consumers: both constants occur and must fold correctly
        assert (consts > 0).any() and (consts < 0).any()
    torch.manual_seed(1)
    for x in (torch.rand(64, *net.input_shape), _real_inputs(net)):
        with torch.no_grad():
            a, b = net(x), pruned(x)
        assert torch.equal(a.argmax(1), b.argmax(1))
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_removal_without_the_right_constant_differs() -> None:
    """The equality test can fail: flipping the folded constants changes the outputs."""
    net = _random_net("cnv")
    gates = _gate_randomly(net)
    x = torch.rand(64, *net.input_shape)
    with torch.no_grad():
        a = net(x)
        for _, gate in gates:
            gate.const.neg_()
        b = physically_prune(net, gates)(x)
    assert not torch.allclose(a, b)


def test_gates_are_exact_in_training_mode_and_learnable() -> None:
    """A gated-off channel is its constant in train mode too; gate gradients flow through the STE."""
    net = _random_net("tfc").train()
    gates = GateSet(net)
    layer, gate = next(iter(gates))
    gate.learn()
    with torch.no_grad():
        gate.m[:5] = -0.5
    acts = {}
    net.units[0].register_forward_hook(lambda m, i, o: acts.setdefault("y", o))
    net.dropout.p = 0.0
    out = net(torch.rand(16, 1, 28, 28))
    assert torch.equal(acts["y"][:, :5], gate.const[:5].expand(16, 5))
    out.square().sum().backward()
    assert gate.m.grad is not None and gate.m.grad.abs().sum() > 0
    assert gates.kept()[layer.name] == gate.m.numel() - 5


def test_budgeted_gates_keep_exactly_the_target_open() -> None:
    net = _random_net("tfc")
    gates = GateSet(net)
    _, gate = next(iter(gates))
    gate.learn(budget=8)
    torch.manual_seed(0)
    with torch.no_grad():
        gate.m.copy_(torch.randn(gate.m.numel()) * 1e-3)
    g = gate.values()
    assert int(g.detach().sum()) == 8
    assert torch.equal(g.detach() > 0.5, gate.m.detach() >= gate.m.detach().topk(8).values[-1])
    (g * torch.arange(g.numel())).sum().backward()
    assert torch.equal(gate.m.grad, 0.5 * torch.arange(g.numel()).float())  # clipped STE, |m - tau| < 1
    gate.learn(budget=8)
    with torch.no_grad():
        gate.m.fill_(1e-3)  # all tied: the first 8 by index
    assert gate.values().detach().tolist() == [1.0] * 8 + [0.0] * (gate.m.numel() - 8)


def test_gate_noise_makes_the_first_open_set_random_and_seeded() -> None:
    """From a common start the budgeted gates open the first K filters by index; with the noise
    (``--gate-noise``) the first open set is a seeded random one and every gate stays on the side
    of its init (all open when not budgeted)."""
    cfg = PruneConfig(method="subsidiary", target_pfr=0.5, gate_noise=1e-4)
    _, gate = next(iter(GateSet(_random_net("tfc"))))
    n = gate.m.numel()

    def first_open(seed: int) -> torch.Tensor:
        gate.reset(cfg.gate_init, cfg.gate_noise, torch.Generator().manual_seed(seed))
        assert bool((gate.m > 0).all())
        gate.learn(budget=n // 2)
        return gate.values().detach().bool()

    a, b, c = first_open(0), first_open(0), first_open(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, torch.arange(n) < n // 2)
    assert 0.3 < float(a[: n // 2].float().mean()) < 0.7  # not the first half by index
    gate.reset(cfg.gate_init, cfg.gate_noise, torch.Generator().manual_seed(0))
    gate.learn()
    assert int(gate.values().detach().sum()) == n


@pytest.mark.parametrize(("init", "noise"), [(1e-3, 1e-3), (1e-3, -1e-5), (0.0, 0.0)])
def test_bad_gate_noise_is_one_clear_error(init: float, noise: float) -> None:
    with pytest.raises(BnnflowError, match="gate noise"):
        PruneConfig(method="subsidiary", target_pfr=0.5, gate_init=init, gate_noise=noise).validate()


def test_topology_excludes_layer_feeding_the_classifier() -> None:
    assert [layer.name for layer in prunable_layers(models.build("lfc"))] == ["fc1", "fc2"]
    cnv = prunable_layers(models.build("cnv"))
    assert [layer.name for layer in cnv] == ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "fc1"]
    assert cnv[5].consumers[0].spatial == 1 and cnv[5].consumers[0].unit == "fc_units.0"
    res = prunable_layers(models.build("resnet18"))
    assert [layer.width_index for layer in res] == list(range(4, 12))
    assert all(c.padded for layer in res for c in layer.consumers)


def test_per_layer_target_from_json(tmp_path: Path) -> None:
    cfg = tmp_path / "pfr.json"
    cfg.write_text('{"fc1": 0.5}')
    assert pfr.parse_target(str(cfg)) == {"fc1": 0.5}
    assert pfr.kept_counts({"fc1": 24, "fc2": 20}, pfr.parse_target(str(cfg)), 4) == {"fc1": 12, "fc2": 20}
    cfg.write_text("[0.5]")
    with pytest.raises(BnnflowError, match="must be a JSON object"):
        pfr.parse_target(str(cfg))


def test_pfr_accounting_and_granularity() -> None:
    widths = {"a": 64, "b": 64, "c": 128}
    kept = pfr.kept_counts(widths, 0.4, granularity=8)
    assert kept == {"a": 40, "b": 40, "c": 72} and all(v % 8 == 0 for v in kept.values())
    assert pfr.pfr(widths, kept) == pytest.approx(1 - 152 / 256) and pfr.pfr(widths, kept) >= 0.4
    assert pfr.kept_counts(widths, 0.0, granularity=8) == widths
    assert pfr.kept_counts(widths, 0.99, granularity=8) == {"a": 8, "b": 8, "c": 8}  # never below G
    assert pfr.kept_counts(widths, {"c": 0.5}) == {"a": 64, "b": 64, "c": 64}
    assert pfr.parse_target("a=0.5,c=0.25") == {"a": 0.5, "c": 0.25}
    with pytest.raises(BnnflowError, match="not prunable layers"):
        pfr.kept_counts(widths, {"zz": 0.5})
    with pytest.raises(BnnflowError, match="exceeds layer a"):
        pfr.kept_counts(widths, 0.5, granularity=128)
    for bad in ("1.0", "-0.1", "1.5", "a=1"):
        with pytest.raises(BnnflowError, match=r"must be in \[0, 1\)"):
            pfr.parse_target(bad)


def _source(tmp_path: Path, arch: str = "tfc") -> Path:
    net = _random_net(arch)
    path = tmp_path / f"{arch}.pt"
    checkpoint.save(net, {"accuracy": None, "n": 0}, path)
    return path


def _cfg(method: str = "subsidiary", **kw) -> PruneConfig:
    base = dict(method=method, target_pfr=0.5, granularity=G, stage_samples=300, batch_size=50, eval_limit=200, seed=1)
    base.update(kw)
    return PruneConfig(**base)


@pytest.mark.parametrize("method", ["subsidiary", "msf-layerwise", "msf-cascade", "random"])
def test_pruning_run_honours_target_and_granularity(tmp_path: Path, method: str) -> None:
    src = _source(tmp_path)
    summary = prune_checkpoint(src, _cfg(method), tmp_path / "out.pt", log=lambda _: None)
    net, meta = checkpoint.load(tmp_path / "out.pt")
    info = meta["pruning"]
    assert info["method"] == method and info["kept"] == {"fc1": 12, "fc2": 8}
    assert list(net.widths) == [12, 8, 16] and all(v % G == 0 for v in info["kept"].values())
    assert info["pfr"] == pytest.approx(1 - 20 / 44) and info["pfr"] >= 0.5
    assert meta["n"] == 10000 and summary["accuracy"] == meta["accuracy"]
    assert info["max_logit_diff_gated_vs_pruned"] < 1e-4
    labels = [row["label"] for row in info["history"]]
    expected = (
        ["unpruned", "select all", "retrain fc1", "retrain fc1"]
        if method == "msf-cascade"
        else ["unpruned", "select fc1", "retrain fc1", "select fc2", "retrain fc2"]
    )
    assert labels == expected
    work = tmp_path / "out.prune"
    assert json.loads((work / "report.json").read_text())["pruning"]["kept"] == info["kept"]
    md = (work / "report.md").read_text()
    assert f"PFR achieved **{info['pfr']:.4f}**" in md and md.count("\n| ") == len(labels) + 1  # header + rows
    assert (work / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_learned_pruning_on_cnv_with_granularity(tmp_path: Path) -> None:
    src = _source(tmp_path, "cnv")
    prune_checkpoint(
        src, _cfg(target_pfr=0.3, stage_samples=100, eval_limit=100), tmp_path / "cnv_p.pt", log=lambda _: None
    )
    net, meta = checkpoint.load(tmp_path / "cnv_p.pt")
    assert all(v % G == 0 for v in meta["pruning"]["kept"].values())
    assert net.widths[-1] == SMALL["cnv"][-1]  # the layer feeding the classifier is kept whole
    assert meta["pruning"]["pfr"] >= 0.3


def test_resume_after_interrupted_stage_gives_the_same_network(tmp_path: Path) -> None:
    src = _source(tmp_path)
    cfg = _cfg()
    prune_checkpoint(src, cfg, tmp_path / "straight.pt", log=lambda _: None)
    assert prune_checkpoint(src, _cfg(), tmp_path / "r.pt", max_stages=1, log=lambda _: None) is None
    # An interrupt in the middle of stage 2 leaves the state of stage 1.
    pruner = Pruner(checkpoint.read_raw(src), _cfg(), tmp_path / "r.prune", log=lambda _: None)
    assert pruner.resume() and pruner.done == 1
    original = pruner._train

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    pruner._train = interrupted
    with pytest.raises(KeyboardInterrupt):
        pruner.run()
    pruner._train = original
    assert torch.load(tmp_path / "r.prune" / "state.pt", weights_only=True)["done"] == 1
    prune_checkpoint(src, _cfg(), tmp_path / "r.pt", resume=True, log=lambda _: None)
    a, b = checkpoint.read_raw(tmp_path / "straight.pt"), checkpoint.read_raw(tmp_path / "r.pt")
    assert a["widths"] == b["widths"]
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert [r["label"] for r in b["meta"]["pruning"]["history"]] == [
        r["label"] for r in a["meta"]["pruning"]["history"]
    ]


def test_finetune_is_resumable_and_recorded(tmp_path: Path) -> None:
    """The fine-tune after removal: interrupted after its first epoch and resumed, it ends with the
    network of an uninterrupted run; its epochs appear in the history after the last stage."""
    src = _source(tmp_path)
    cfg = lambda: _cfg("random", finetune_epochs=2)  # noqa: E731 - a fresh config per run
    straight = prune_checkpoint(src, cfg(), tmp_path / "straight.pt", log=lambda _: None)
    n_stages = len(Pruner(checkpoint.read_raw(src), cfg(), tmp_path / "x", log=lambda _: None).stages)
    assert prune_checkpoint(src, cfg(), tmp_path / "r.pt", max_stages=n_stages + 1, log=lambda _: None) is None
    assert torch.load(tmp_path / "r.prune" / "finetune.pt", weights_only=True)["epoch"] == 1
    assert not (tmp_path / "r.pt").exists()
    resumed = prune_checkpoint(src, cfg(), tmp_path / "r.pt", resume=True, log=lambda _: None)
    a, b = checkpoint.read_raw(tmp_path / "straight.pt"), checkpoint.read_raw(tmp_path / "r.pt")
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    labels = [r["label"] for r in resumed["pruning"]["history"]]
    assert labels[-2:] == ["fine-tune 1/2", "fine-tune 2/2"] and labels == [
        r["label"] for r in straight["pruning"]["history"]
    ]
    assert [r["stage"] for r in resumed["pruning"]["history"]] == list(range(len(labels)))
    # The fine-tune changed the network: it is not the plain removal of the gated filters.
    plain = prune_checkpoint(src, _cfg("random"), tmp_path / "plain.pt", log=lambda _: None)
    assert plain["widths"] == resumed["widths"]
    c = checkpoint.read_raw(tmp_path / "plain.pt")
    assert any(not torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])


def test_holdout_is_never_trained_on_and_picks_the_finetune_epoch(tmp_path: Path) -> None:
    """``--holdout N``: the last N training images leave the training split, every fine-tune epoch is
    scored on them, and the output is the best epoch's network (the first of equals), also when the
    fine-tune was interrupted and resumed between epochs."""
    src, n = _source(tmp_path), 500
    # At this learning rate the second epoch scores best, so keeping the last one would fail the test.
    cfg = lambda: _cfg("random", finetune_epochs=3, finetune_lr=1e-2, holdout=n)  # noqa: E731
    pruner = Pruner(checkpoint.read_raw(src), cfg(), tmp_path / "x", log=lambda _: None)
    full = data.load("mnist", "train")
    assert len(pruner.train_split) == len(full) - n
    assert pruner.holdout is not None and (pruner.holdout.images == full.images[-n:]).all()
    straight = prune_checkpoint(src, cfg(), tmp_path / "straight.pt", log=lambda _: None)
    rows = [r for r in straight["pruning"]["history"] if r["label"].startswith("fine-tune")]
    scores = [r["holdout_accuracy"] for r in rows]
    assert [r["chosen"] for r in rows] == [k == scores.index(max(scores)) for k in range(3)]
    assert not rows[-1]["chosen"]
    net, _ = checkpoint.load(tmp_path / "straight.pt")
    assert accuracy(net, pruner.holdout) == max(scores)
    best = torch.load(tmp_path / "straight.prune" / "finetune.pt", weights_only=True)["best"]
    assert best["epoch"] == scores.index(max(scores)) + 1
    for k, v in net.state_dict().items():
        assert torch.equal(v, best["net"]["state_dict"][k]), k
    assert f"the best on the {n} held-out training images" in (tmp_path / "straight.prune" / "report.md").read_text()

    assert (
        prune_checkpoint(src, cfg(), tmp_path / "r.pt", max_stages=len(pruner.stages) + 2, log=lambda _: None) is None
    )
    prune_checkpoint(src, cfg(), tmp_path / "r.pt", resume=True, log=lambda _: None)
    a, b = checkpoint.read_raw(tmp_path / "straight.pt"), checkpoint.read_raw(tmp_path / "r.pt")
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k


def test_state_written_before_an_option_existed_still_resumes(tmp_path: Path) -> None:
    """A state.pt from a bnnflow without ``holdout`` in its config resumes while the option stays at
    its default; setting the option is still refused as another run."""
    src = _source(tmp_path)
    prune_checkpoint(src, _cfg(), tmp_path / "r.pt", max_stages=1, log=lambda _: None)
    path = tmp_path / "r.prune" / "state.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["holdout"]
    torch.save(state, path)
    with pytest.raises(BnnflowError, match=r"other options \(finetune_epochs, holdout\)"):
        prune_checkpoint(src, _cfg(finetune_epochs=1, holdout=100), tmp_path / "r.pt", resume=True, log=lambda _: None)
    assert prune_checkpoint(src, _cfg(), tmp_path / "r.pt", resume=True, log=lambda _: None) is not None


def test_resume_with_other_options_is_refused(tmp_path: Path) -> None:
    src = _source(tmp_path)
    prune_checkpoint(src, _cfg(), tmp_path / "r.pt", max_stages=1, log=lambda _: None)
    with pytest.raises(BnnflowError, match="other options"):
        prune_checkpoint(src, _cfg(target_pfr=0.3), tmp_path / "r.pt", resume=True, log=lambda _: None)


def test_cli_prune_then_info_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _source(tmp_path)
    out = tmp_path / "p.pt"
    assert (
        cli.main(
            [
                "prune",
                str(src),
                "--method",
                "msf-layerwise",
                "--target-pfr",
                "0.5",
                "--granularity",
                "4",
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
    capsys.readouterr()
    assert cli.main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["method"] == "msf-layerwise" and info["kept"] == {"fc1": 12, "fc2": 8}
    assert info["pfr"] == pytest.approx(1 - 20 / 44) and info["widths"] == [12, 8, 16]
    assert cli.main(["eval", str(out), "--limit", "100", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 100


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target-pfr", "1.0"], r"must be in \[0, 1\)"),
        (["--target-pfr", "-0.2"], r"must be in \[0, 1\)"),
        (["--target-pfr", "0.5", "--method", "l2"], "unknown pruning method 'l2'"),
        (["--target-pfr", "0.5", "--granularity", "0"], "--granularity: must be a whole number >= 1, got 0"),
        (["--target-pfr", "0.5", "--finetune-epochs", "-1"], "--finetune-epochs: must be a whole number >= 0"),
        (["--target-pfr", "fc9=0.5"], "not prunable layers"),
        (["--target-pfr", "0.5", "--holdout", "1000"], "--holdout 1000: .* together with --finetune-epochs"),
        (["--target-pfr", "0.5", "--finetune-epochs", "1", "--holdout", "60000"], "has only 60000 images"),
        (["--target-pfr", "0.5", "--allocation", "greedy"], "unknown --allocation 'greedy'"),
        (["--target-pfr", "fc1=0.5", "--allocation", "learned"], "per-layer targets already fix the counts"),
    ],
)
def test_cli_bad_options_give_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    src = _source(tmp_path)
    try:
        rc = cli.main(["prune", str(src), "--out", str(tmp_path / "x.pt"), *args])
    except SystemExit as exc:  # option values are checked by argparse (bnnflow.validate)
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.match(r"bnnflow( prune)?: error:", err), err
    assert re.search(message, err), err
    assert not (tmp_path / "x.pt").exists()


def test_cli_foreign_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    assert cli.main(["prune", str(foreign), "--target-pfr", "0.5", "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "foreign.pt: not a bnnflow checkpoint" in err


def test_allocation_is_the_best_split_of_the_kept_total() -> None:
    """The dynamic programme against brute force on made-up sensitivity curves: it keeps exactly
    the total, multiples of G, at least G per layer, and the smallest summed loss increase."""
    import itertools

    from prune.allocation import allocate, probe_counts

    gen = torch.Generator().manual_seed(0)
    widths = {"a": 16, "b": 24, "c": 40}
    curves = {}
    for name, n in widths.items():
        counts = probe_counts(n, G)
        drops = torch.rand(len(counts), generator=gen).sort(descending=True).values * 3
        curves[name] = {k: float(d) for k, d in zip(counts, drops, strict=True)}
        curves[name][n] = 0.0
    for total in (12, 40, 48, 80):
        got = allocate(curves, widths, total, G)
        assert sum(got.values()) == total and all(v % G == 0 and G <= v <= widths[k] for k, v in got.items())
        options = [range(G, n + 1, G) for n in widths.values()]

        def cost(ks: tuple[int, ...]) -> float:
            from prune.allocation import _dense_curve

            return sum(_dense_curve(curves[name], n, G)[k] for (name, n), k in zip(widths.items(), ks, strict=True))

        best = min((ks for ks in itertools.product(*options) if sum(ks) == total), key=cost)
        assert cost(tuple(got.values())) == pytest.approx(cost(best))
    # a layer whose filters cost nothing loses the most
    flat = {**curves, "c": {k: 0.0 for k in curves["c"]}}
    assert allocate(flat, widths, 40, G)["c"] == G
    assert probe_counts(512, 8)[-1] == 512 and len(probe_counts(512, 8)) <= 13 and probe_counts(512, 8)[0] == 8


@pytest.mark.parametrize("mode", ["learned", "learned-mac"])
def test_learned_allocation_keeps_the_uniform_total_and_resumes(tmp_path: Path, mode: str) -> None:
    """--allocation learned(-mac) on the shipped SFC and real images: an allocate stage first, the
    same PFR as the uniform split, per-layer counts from the probe that differ from it, recorded
    in the history (learned-mac: within the uniform split's MACs); interrupted after it, the run
    resumes with those counts, not the uniform ones."""
    from prune.allocation import probe_counts

    src = Path(__file__).resolve().parents[1] / "models" / "zoo" / "sfc_w1a1.pt"
    widths = {"fc1": 256, "fc2": 256}
    cfg = lambda: _cfg(allocation=mode, target_pfr=0.3)  # noqa: E731 - a fresh config per run
    assert prune_checkpoint(src, cfg(), tmp_path / "r.pt", max_stages=1, log=lambda _: None) is None
    state = torch.load(tmp_path / "r.prune" / "state.pt", weights_only=True)
    allocated = state["history"][-1]["targets"]
    uniform = pfr.kept_counts(widths, 0.3, G)
    assert sum(allocated.values()) == sum(uniform.values()) and allocated != uniform
    summary = prune_checkpoint(src, cfg(), tmp_path / "r.pt", resume=True, log=lambda _: None)
    info = summary["pruning"]
    assert info["kept"] == allocated and info["allocation"] == mode
    assert info["pfr"] == pytest.approx(pfr.pfr(widths, uniform))
    first = info["history"][1]
    assert first["label"] == "allocate all" and first["targets"] == allocated
    assert set(first["curves"]) == {"fc1", "fc2"}
    assert sorted(map(int, first["curves"]["fc1"])) == probe_counts(256, G)
    assert mode == "learned" or first["macs"] <= first["uniform_macs"]
    assert f"- allocation `{mode}`: kept per layer fc1=" in (tmp_path / "r.prune" / "report.md").read_text()
    assert info["max_logit_diff_gated_vs_pruned"] < 1e-4


def _direct_macs(net: BinaryNet) -> float:
    """MACs per frame of every binary unit's conv/linear layer, counted with forward hooks."""
    total = []
    hooks = [
        u.weight_layer.register_forward_hook(
            lambda m, i, out: total.append(m.weight.numel() * (out[0, 0].numel() if out.dim() > 2 else 1))
        )
        for u in net.binary_units()
    ]
    with torch.no_grad():
        net.eval()(torch.zeros((1, *net.input_shape)))
    for h in hooks:
        h.remove()
    return float(sum(total))


@pytest.mark.parametrize("arch", ["cnv", "tfc", "resnet18"])
def test_mac_model_matches_the_pruned_networks(arch: str) -> None:
    """The allocation's MAC model, evaluated at kept counts, equals the MACs of the network built
    with those widths (up to the units no prunable layer touches, which stay constant)."""
    from prune.allocation import total_macs, unit_costs

    net = _random_net(arch)
    layers = prunable_layers(net)
    costs = unit_costs(net, layers)
    full = {layer.name: net.widths[layer.width_index] for layer in layers}
    constant = _direct_macs(net) - total_macs(costs, full)
    for kept in (pfr.kept_counts(full, 0.5, G), {name: G for name in full}):
        widths = list(net.widths)
        for layer in layers:
            widths[layer.width_index] = kept[layer.name]
        smaller = models.build(arch, widths)
        assert _direct_macs(smaller) == pytest.approx(total_macs(costs, kept) + constant)


def test_mac_limited_allocation_meets_the_limit() -> None:
    """On CNV's shape with made-up curves that favour the costly early layers, the MAC-limited
    allocation keeps the filter total and stays within the uniform split's MACs, while the
    unlimited one exceeds them."""
    from prune.allocation import allocate, allocate_within, probe_counts, total_macs, unit_costs

    net = _random_net("cnv")
    layers = prunable_layers(net)
    costs = unit_costs(net, layers)
    full = {layer.name: net.widths[layer.width_index] for layer in layers}
    uniform = pfr.kept_counts(full, 0.4, G)
    total, limit = sum(uniform.values()), total_macs(costs, uniform)
    curves = {
        name: {k: (10.0 if i < 2 else 1.0) * (1 - k / n) for k in probe_counts(n, G)}
        for i, (name, n) in enumerate(full.items())
    }
    free = allocate(curves, full, total, G)
    assert total_macs(costs, free) > limit
    limited = allocate_within(curves, full, total, G, costs, limit)
    assert limited is not None and sum(limited.values()) == total and total_macs(costs, limited) <= limit
