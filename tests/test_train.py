"""Training, checkpoints and the train/eval/info CLI on real MNIST subsets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bnnflow import checkpoint, cli
from bnnflow.errors import CheckpointError
from bnnflow.train import TrainConfig, train


def _cfg(epochs: int) -> TrainConfig:
    return TrainConfig(arch="tfc", epochs=epochs, batch_size=50, lr=0.01, train_limit=1500,
                       eval_limit=500, seed=3)


def test_short_training_lowers_the_loss_and_learns(tmp_path: Path) -> None:
    path = train(_cfg(3), tmp_path / "run", log=lambda _: None)
    _, meta = checkpoint.load(path)
    losses = [h["loss"] for h in meta["history"]]
    assert losses[-1] < losses[0]
    assert meta["n"] == 10000 and meta["accuracy"] > 0.5  # far above chance after 4500 samples


def test_resume_continues_exactly(tmp_path: Path) -> None:
    straight = train(_cfg(2), tmp_path / "straight", log=lambda _: None)
    train(_cfg(1), tmp_path / "resumed", log=lambda _: None)
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
