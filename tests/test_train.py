"""Training, checkpoints and the train/eval/info CLI on real MNIST subsets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bnnflow import checkpoint, cli
from bnnflow.errors import BnnflowError, CheckpointError
from bnnflow.train import TrainConfig, train


def _cfg(epochs: int, **kw) -> TrainConfig:
    base = dict(
        arch="tfc", epochs=epochs, batch_size=50, lr=0.01, train_limit=1500, eval_limit=500, seed=3, holdout=500
    )
    return TrainConfig(**{**base, **kw})


def test_short_training_lowers_the_loss_and_learns(tmp_path: Path) -> None:
    path = train(_cfg(3), tmp_path / "run", log=lambda _: None)
    _, meta = checkpoint.load(path)
    losses = [h["loss"] for h in meta["history"]]
    assert losses[-1] < losses[0]
    assert meta["n"] == 10000 and meta["accuracy"] > 0.5  # far above chance after 4500 samples
    from bnnflow.train import machine

    assert meta["hardware"] == [machine(torch.device("cpu"))] and "threads" in meta["hardware"][0]


def test_resume_continues_exactly(tmp_path: Path) -> None:
    straight = train(_cfg(2), tmp_path / "straight", log=lambda _: None)
    train(_cfg(2), tmp_path / "resumed", log=lambda _: None, stop_after=1)
    resumed = train(_cfg(2), tmp_path / "resumed", resume=True, log=lambda _: None)
    a, b = checkpoint.read_raw(straight), checkpoint.read_raw(resumed)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert [h["epoch"] for h in b["meta"]["history"]] == [1, 2]


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    import models

    net = models.build("cnv", [8, 8, 16, 16, 16, 16, 32, 32]).eval()
    checkpoint.save(net, {"accuracy": 0.5, "n": 3, "note": "x"}, tmp_path / "c.pt")
    back, meta = checkpoint.load(tmp_path / "c.pt")
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(net(x), back(x)) and meta["note"] == "x" and list(back.widths) == list(net.widths)
    assert not list(tmp_path.glob(".*tmp"))  # atomic save leaves no temporary file


def test_foreign_and_corrupt_checkpoints_are_clear(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a bnnflow checkpoint"):
        checkpoint.load(foreign)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x04 this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pt: not a readable checkpoint"):
        checkpoint.load(corrupt)
    with pytest.raises(CheckpointError, match="missing.pt: file not found"):
        checkpoint.load(tmp_path / "missing.pt")


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # would run code if unpickled
            return (exec, ("raise SystemExit('pwned')",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "bnnflow-checkpoint", "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pt: not a readable checkpoint"):
        checkpoint.load(path)


def test_cli_info_and_eval_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = train(_cfg(1), tmp_path / "run", log=lambda _: None)
    assert cli.main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "tfc" and info["dataset"] == "mnist" and info["widths"] == [64, 64, 64]
    assert info["n"] == 10000 and 0 < info["accuracy"] <= 1
    assert cli.main(["eval", str(path), "--json", "--limit", "300"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n"] == 300 and {"model", "dataset", "widths", "accuracy"} <= set(ev)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", "--model", "nope", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bnnflow: error: unknown model 'nope'") and "\n" not in err
    (tmp_path / "bad.pt").write_bytes(b"junk")
    assert cli.main(["eval", str(tmp_path / "bad.pt")]) == 2
    assert "bad.pt: not a readable checkpoint" in capsys.readouterr().err


# ---------------------------------------------------------------- the fast training path
SMALL_WIDTHS = {
    "tfc": [16, 16, 16],
    "cnv": [8, 8, 16, 16, 16, 16, 32, 32],
    "nin": [8, 8, 8, 8, 8, 8, 8, 8],
    "vgg11": [8, 8, 16, 16, 16, 16, 16, 16],
    "resnet18": [8, 16, 16, 16, 8, 8, 8, 8, 8, 8, 8, 8],
}


@pytest.mark.parametrize("arch", sorted(SMALL_WIDTHS))
def test_twin_computes_the_brevitas_values_and_gradients(arch: str) -> None:
    """The plain-torch twin: same logits, same gradients and same BatchNorm statistics, bit for bit."""
    import copy

    import models
    from models import fastpath

    torch.manual_seed(0)
    net = models.build(arch, SMALL_WIDTHS[arch]).train()
    ref = copy.deepcopy(net)
    twin = fastpath.twin(net).train()
    x = torch.randint(0, 256, (6, *net.input_shape)).float() / 255
    torch.manual_seed(1)
    y_ref = ref(x)
    torch.manual_seed(1)
    y = twin(x)
    assert torch.equal(y, y_ref)
    (y * torch.arange(y.shape[1])).sum().backward()
    (y_ref * torch.arange(y.shape[1])).sum().backward()
    for (name, p), q in zip(net.named_parameters(), ref.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None) and (p.grad is None or torch.equal(p.grad, q.grad)), name
    for (name, b), c in zip(net.named_buffers(), ref.buffers(), strict=True):
        assert torch.equal(b, c), name  # the twin updated the Brevitas net's own statistics
    twin.eval()
    ref.eval()
    assert torch.equal(twin(x), ref(x))


def test_twin_refuses_layers_it_does_not_reproduce() -> None:
    from brevitas.nn import QuantLinear

    import models
    from models import fastpath

    net = models.build("tfc", [8, 8, 8])
    net.units[0].weight_layer = QuantLinear(784, 8, bias=True)
    with pytest.raises(ValueError, match="units.0.weight_layer has a bias"):
        fastpath.twin(net)


def test_fast_path_trains_the_same_network_and_exports_the_same_qonnx(tmp_path: Path) -> None:
    """TFC trained through the twin equals TFC trained through Brevitas (same seed), weight for weight,
    so the exported QONNX graphs are identical."""
    import onnx

    from build_flows.export import export

    fast = train(_cfg(1), tmp_path / "fast", log=lambda _: None)
    slow = train(_cfg(1, fast=False), tmp_path / "slow", log=lambda _: None)
    a, b = checkpoint.read_raw(fast), checkpoint.read_raw(slow)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    export(fast, tmp_path / "fast.onnx", n_check=0)
    export(slow, tmp_path / "slow.onnx", n_check=0)
    ga, gb = onnx.load(str(tmp_path / "fast.onnx")).graph, onnx.load(str(tmp_path / "slow.onnx")).graph
    assert [n.op_type for n in ga.node] == [n.op_type for n in gb.node]
    from onnx import numpy_helper

    for ta, tb in zip(ga.initializer, gb.initializer, strict=True):  # names are random per export
        assert np.array_equal(numpy_helper.to_array(ta), numpy_helper.to_array(tb)), ta.name


def test_conv_net_resume_is_exact_on_the_fast_path(tmp_path: Path) -> None:
    """A narrow CNV (channels_last twin, CIFAR-10 crops and flips) resumed after one epoch equals the
    uninterrupted run; the kept epoch is the one best on the held-out images."""
    cfg = dict(
        arch="cnv",
        epochs=2,
        batch_size=50,
        lr=0.01,
        train_limit=300,
        eval_limit=100,
        seed=5,
        holdout=200,
        widths=SMALL_WIDTHS["cnv"],
    )
    straight = train(TrainConfig(**cfg), tmp_path / "straight", log=lambda _: None)
    train(TrainConfig(**cfg), tmp_path / "resumed", log=lambda _: None, stop_after=1)
    resumed = train(TrainConfig(**cfg), tmp_path / "resumed", resume=True, log=lambda _: None)
    a, b = checkpoint.read_raw(straight), checkpoint.read_raw(resumed)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    hist = a["meta"]["history"]
    best = max(hist, key=lambda h: h["holdout_acc"])
    assert a["meta"]["selected_epoch"]["epoch"] == best["epoch"] and a["meta"]["n"] == 10000
    sa = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)
    sb = torch.load(tmp_path / "resumed" / "state.pt", weights_only=True)
    for k in sa["checkpoint"]["state_dict"]:
        assert torch.equal(sa["checkpoint"]["state_dict"][k], sb["checkpoint"]["state_dict"][k]), k


def test_holdout_images_are_never_trained_on(tmp_path: Path) -> None:
    from bnnflow import data

    full = data.load("mnist", "train")
    fit, held = data.split_holdout(full, 500)
    assert len(fit) + len(held) == len(full) and np.array_equal(held.images, full.images[-500:])
    with pytest.raises(BnnflowError, match="--holdout 60000"):
        data.split_holdout(full, 60000)
    with pytest.raises(BnnflowError, match="--holdout -1"):
        train(_cfg(1, holdout=-1), tmp_path / "x", log=lambda _: None)


def test_resume_refuses_other_options(tmp_path: Path) -> None:
    train(_cfg(2), tmp_path / "run", log=lambda _: None, stop_after=1)
    with pytest.raises(BnnflowError, match="started with seed=3"):
        train(_cfg(2, seed=4), tmp_path / "run", resume=True, log=lambda _: None)
    with pytest.raises(BnnflowError, match="schedule has 2 epochs"):
        train(_cfg(3), tmp_path / "run", resume=True, log=lambda _: None)


def test_sigterm_stops_a_run_with_one_line_and_frees_its_folder(tmp_path: Path) -> None:
    """A run killed with SIGTERM (a job scheduler's stop, `kill`) says how it stopped and how to go on in
    one line, releases the folder's lock, and resumes from the last finished epoch."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    opts = [
        "--model",
        "tfc",
        "--epochs",
        "40",
        "--batch-size",
        "50",
        "--lr",
        "0.01",
        "--train-limit",
        "1500",
        "--eval-limit",
        "500",
        "--seed",
        "3",
        "--holdout",
        "500",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "bnnflow.cli", "train", *opts, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the first finished epoch, then the signal in the middle of the second
            if line.startswith("epoch 1/40"):
                break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err and err.strip().count("\n") == 0, err[-2000:]
    assert "interrupted by SIGTERM" in err and "--resume" in err
    assert not list(tmp_path.glob(".run.lock*")) and not list(out.glob("*.tmp*"))
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["epoch"] >= 1
    resumed = train(_cfg(40), out, resume=True, log=lambda _: None, stop_after=1)  # the lock is free again
    assert torch.load(out / "state.pt", weights_only=True)["epoch"] == state["epoch"] + 1 and resumed.is_file()


# ---------------------------------------------------------------- full-precision teachers and distillation
@pytest.fixture(scope="module")
def float_tfc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full-precision TFC (``bnnflow train --float``) on the runs' 1,500 images."""
    return train(_cfg(2, precision="float"), tmp_path_factory.mktemp("fp") / "run", log=lambda _: None)


def test_float_twin_is_the_same_net_without_quantizers() -> None:
    """The float twin is the Brevitas TFC with real weights and hardtanh for each sign, on the same
    parameters: the layers computed by hand from them give the same logits, and its gradients
    reach the Brevitas net's parameters."""
    import torch.nn.functional as F

    import models
    from models import fastpath

    torch.manual_seed(0)
    net = models.build("tfc", [16, 12, 10]).eval()
    for unit in net.units:  # BatchNorm statistics away from the defaults
        unit.bn.running_mean.uniform_(-3, 3)
        unit.bn.running_var.uniform_(0.5, 4)
    x = torch.rand(5, 1, 28, 28)
    h = net.input_quant(net.preprocess(x.flatten(1)))  # the 8-bit input quantizer stays
    h = getattr(h, "value", h)
    for unit in net.units:
        h = F.hardtanh(unit.bn(F.linear(h, unit.weight_layer.weight)))
    by_hand = F.linear(h, net.classifier.weight_layer.weight) * net.classifier.log_scale.exp()
    fp = fastpath.twin(net, "float").eval()
    assert torch.allclose(fp(x), by_hand, atol=1e-5)
    assert not torch.allclose(fp(x), fastpath.twin(net).eval()(x), atol=1e-2)  # not the binary network
    fp(x).sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.parameters() if p.ndim == 2)
    with pytest.raises(ValueError, match="precision 'half'"):
        fastpath.twin(net, "half")
    from bnnflow.train_config import PRECISIONS

    assert fastpath.PRECISIONS == PRECISIONS  # the torch-free config lists what the twin builds


def test_float_run_is_a_teacher_never_a_w1a1_network(
    float_tfc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = checkpoint.read_raw(float_tfc)
    assert checkpoint.precision(raw) == "float" and raw["meta"]["n"] == 10000
    binary = train(_cfg(2), tmp_path / "bin", log=lambda _: None)
    # the same 2 epochs on the same images: the real-valued net is the stronger one (a teacher)
    assert raw["meta"]["accuracy"] > checkpoint.read_raw(binary)["meta"]["accuracy"]
    assert cli.main(["info", str(float_tfc)]) == 0
    assert "full precision" in capsys.readouterr().out
    for argv in (
        ["eval", str(float_tfc), "--limit", "10"],
        ["export", str(float_tfc), "--out", str(tmp_path / "b.onnx")],
        ["prune", str(float_tfc), "--target-pfr", "0.5", "--out", str(tmp_path / "p.pt")],
        ["build", str(float_tfc), "--board", "Pynq-Z1", "--target-fps", "1000", "--out", str(tmp_path / "b")],
    ):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "a full-precision network (bnnflow train --float)" in err, (argv, err)
        assert not [p.name for p in tmp_path.iterdir() if p.name != "bin"]


def test_distillation_from_a_float_teacher(float_tfc: Path, tmp_path: Path) -> None:
    """--teacher changes the steps by exactly its loss term: at weight 0 the run equals one without a
    teacher bit for bit, at weight 1 it differs; a distilled run resumes exactly and refuses another teacher."""

    def weights(path: Path) -> dict[str, torch.Tensor]:
        return checkpoint.read_raw(path)["state_dict"]

    plain = weights(train(_cfg(2), tmp_path / "plain", log=lambda _: None))
    zero = weights(train(_cfg(2, teacher=str(float_tfc), kd_weight=0.0), tmp_path / "zero", log=lambda _: None))
    assert all(torch.equal(plain[k], zero[k]) for k in plain)
    kd = _cfg(2, teacher=str(float_tfc))
    straight = train(kd, tmp_path / "kd", log=lambda _: None)
    assert not all(torch.equal(plain[k], weights(straight)[k]) for k in plain)
    assert checkpoint.read_raw(straight)["meta"]["teacher_sha256"]
    train(kd, tmp_path / "kd2", log=lambda _: None, stop_after=1)
    resumed = train(kd, tmp_path / "kd2", resume=True, log=lambda _: None)
    assert all(torch.equal(weights(straight)[k], weights(resumed)[k]) for k in plain)
    train(kd, tmp_path / "kd3", log=lambda _: None, stop_after=1)
    other = tmp_path / "plain" / "model.pt"  # a binary TFC: a teacher too, but not this run's
    with pytest.raises(BnnflowError, match="started with another --teacher"):
        train(_cfg(2, teacher=str(other)), tmp_path / "kd3", resume=True, log=lambda _: None)
    import models

    cifar = tmp_path / "cnv.pt"
    checkpoint.save(models.build("cnv", SMALL_WIDTHS["cnv"]), {}, cifar)
    with pytest.raises(BnnflowError, match="--teacher .*: a cnv on cifar10, this run trains on mnist"):
        train(_cfg(1, teacher=str(cifar)), tmp_path / "kd4", log=lambda _: None)


def test_fine_tuning_a_pruned_network_keeps_its_pruning_record(tmp_path: Path) -> None:
    """`bnnflow train --init-from PRUNED` trains the pruned widths and records where its weights came
    from, across a resume, so that `bnnflow info` still reports the pruning of the result."""
    from bnnflow.cli import checkpoint_info
    from bnnflow.files import sha256_file

    pruned = Path("models/zoo/lfc_w1a1_pruned.pt")
    raw = checkpoint.read_raw(pruned)
    cfg = _cfg(2, arch="lfc", lr=0.001)
    train(cfg, tmp_path / "ft", init_from=pruned, log=lambda _: None, stop_after=1)
    out = train(cfg, tmp_path / "ft", init_from=pruned, resume=True, log=lambda _: None)
    meta = checkpoint.read_raw(out)["meta"]
    assert list(checkpoint.read_raw(out)["widths"]) == list(raw["widths"])
    assert meta["init_from"]["sha256"] == sha256_file(pruned)
    assert meta["init_from"]["pruning"] == raw["meta"]["pruning"]
    info = checkpoint_info(out)
    assert info["pfr"] == raw["meta"]["pruning"]["pfr"] and info["epochs"] == 2
    # fine-tuned again: the record passes through every generation
    again = train(_cfg(1, arch="lfc", lr=0.001), tmp_path / "ft2", init_from=out, log=lambda _: None)
    assert checkpoint.read_raw(again)["meta"]["init_from"]["pruning"] == raw["meta"]["pruning"]
    assert checkpoint_info(again)["pfr"] == raw["meta"]["pruning"]["pfr"]
