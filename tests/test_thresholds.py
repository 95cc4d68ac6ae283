"""Sign thresholds snapped between accumulator values (models/thresholds.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import models
from bnnflow import checkpoint
from models.layers import BinaryUnit
from models.thresholds import float32_disagreements, sign_units, snap_thresholds


def _near_ties(unit: BinaryUnit, seed: int) -> None:
    """BatchNorm parameters whose thresholds lie within 3e-5 of an integer (either sign of gamma),
    the trained-net situation where float32 decides some of them the other way."""
    bn = unit.bn
    n = bn.num_features
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(-40, 40, (n,), generator=g).double() + torch.empty(n).uniform_(-3e-5, 3e-5, generator=g).double()
    gamma = torch.empty(n).uniform_(0.01, 3.0, generator=g) * torch.where(torch.rand(n, generator=g) < 0.3, -1.0, 1.0)
    mu = torch.empty(n).uniform_(-50.0, 50.0, generator=g)
    var = torch.empty(n).uniform_(10.0, 1000.0, generator=g)
    assert bn.running_mean is not None and bn.running_var is not None
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.running_mean.copy_(mu)
        bn.running_var.copy_(var)
        s = torch.sqrt(var.double() + bn.eps)
        bn.bias.copy_((-gamma.double() * (t - mu.double()) / s).float())


def _exact_rule(unit: BinaryUnit, xs: torch.Tensor) -> torch.Tensor:
    """sign(BN(x)) >= 0 in float64 for grid values ``xs`` (values, channels)."""
    bn = unit.bn
    assert bn.running_mean is not None and bn.running_var is not None
    y = bn.weight.double() * (xs - bn.running_mean.double()) / torch.sqrt(bn.running_var.double() + bn.eps)
    return (y + bn.bias.double()) >= 0


def test_snapping_keeps_every_decision_and_makes_float32_agree() -> None:
    torch.manual_seed(0)
    net = models.build("tfc", [256, 256, 256]).eval()
    unit = net.binary_units()[1]
    _near_ties(unit, seed=1)
    before = float32_disagreements(net)
    assert before and {name for name, _ in before} == {"units.1"}  # the construction bites
    xs = torch.arange(-256, 257, dtype=torch.float64)[:, None].expand(-1, 256)
    exact_before = _exact_rule(unit, xs)
    assert snap_thresholds(net) > 0
    assert float32_disagreements(net) == []
    assert torch.equal(_exact_rule(unit, xs), exact_before)  # the same function of the accumulator
    assert snap_thresholds(net) == 0  # idempotent
    x = xs.float()
    assert torch.equal(unit.bn(x) >= 0, exact_before)  # float32 now decides as the exact rule


@pytest.mark.parametrize(("arch", "widths"), [("cnv", [8, 8, 16, 16, 16, 16, 32, 32]), ("sfc", [32, 32, 32])])
def test_sign_units_find_each_accumulator_grid(arch: str, widths: list[int]) -> None:
    """Behind the 8-bit input quantizer the grid is 2^-7, behind binary activations 1."""
    net = models.build(arch, widths)
    steps = [u.step for u in sign_units(net)]
    assert len(steps) == len([u for u in net.binary_units() if u.act is not None])
    assert steps == ([2.0**-7] if arch == "cnv" else [1.0]) + [1.0] * (len(steps) - 1)


def test_residual_branches_are_left_alone() -> None:
    """A unit whose BatchNorm output is added to a shortcut before any sign has no threshold."""
    net = models.build("resnet18", [8, 16, 16, 16, 8, 8, 8, 8, 8, 8, 8, 8])
    names = {u.name for u in sign_units(net)}
    units = dict(net.named_modules())
    assert names and all(isinstance(units[n], BinaryUnit) and units[n].act is not None for n in names)
    assert any(isinstance(m, BinaryUnit) and m.act is None for m in net.modules())


def test_inference_loads_the_snapped_network(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = models.build("tfc", [64, 64, 64]).eval()
    _near_ties(net.binary_units()[2], seed=2)
    checkpoint.save(net, {"accuracy": None, "n": 0}, tmp_path / "t.pt")
    plain, _ = checkpoint.load(tmp_path / "t.pt")
    snapped, _ = checkpoint.load_for_inference(tmp_path / "t.pt")
    assert float32_disagreements(snapped) == [] and snap_thresholds(plain) > 0
    assert all(
        torch.equal(a, b) for a, b in zip(plain.state_dict().values(), snapped.state_dict().values(), strict=True)
    )


def test_checks_leave_a_training_net_in_training_mode() -> None:
    net = models.build("tfc", [256, 256, 256]).train()
    _near_ties(net.binary_units()[1], seed=1)
    assert float32_disagreements(net)
    assert all(m.training for m in net.modules())
    assert sign_units(net)
    assert all(m.training for m in net.modules())
