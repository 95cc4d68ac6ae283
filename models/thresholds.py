"""Sign thresholds half an accumulator step away from every value the accumulator can take.

A binary unit's output is ``sign(BN(x))``, and ``x``, the XNOR-popcount sum,
only takes values on a grid: the integers, or multiples of 2^-7 behind the
8-bit input quantizer. In exact arithmetic the unit is the threshold rule
``x >= t`` (``x <= t`` for a negative BatchNorm weight) with ``t`` where
``BN(t) = 0``; FINN turns it into an integer threshold. PyTorch evaluates
``BN`` in float32, whose rounding near ``t`` can decide a grid value lying
within about 1e-4 of ``t`` the other way. A trained net can have such a
channel (fine-tuning moves BatchNorm freely), and then the Brevitas model
and the accelerator disagree on the images that hit that value.

:func:`snap_thresholds` moves each ``t`` to the midpoint between the grid
values it separates, by changing the BatchNorm bias only. The exact rule
decides every grid value as before, so the network is the same function of
its inputs, and float32 now has half a step of margin everywhere: PyTorch and
FINN agree bit for bit. Export, evaluation and the simulator's PyTorch
reference use the snapped network (:func:`bnnflow.checkpoint.load_for_inference`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.layers import BinaryUnit
from models.nets import BinaryNet

GRID_STEPS = (1.0, 2.0**-7)  # binary inputs; the 8-bit Q1.7 input quantizer


@dataclass(frozen=True)
class SignUnit:
    """A unit whose BatchNorm output goes straight into its sign, and its accumulator's grid step."""

    name: str
    unit: BinaryUnit
    step: float


def sign_units(net: BinaryNet) -> list[SignUnit]:
    """The units whose accumulators lie on a grid, found by one forward pass on random pixels (a
    unit without its own sign, e.g. a residual branch, or off every grid of
    :data:`GRID_STEPS`, is left out)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for name, m in net.named_modules():
        if isinstance(m, BinaryUnit) and m.act is not None:
            hooks.append(m.bn.register_forward_pre_hook(lambda _m, inp, n=name: seen.__setitem__(n, inp[0].detach())))
    was_training = net.training
    try:
        net.eval()
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            net(torch.randint(0, 256, (4, *net.input_shape), generator=gen).float() / 255.0)
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    units = dict(net.named_modules())
    out = []
    for name, x in seen.items():
        step = next((s for s in GRID_STEPS if torch.equal(x / s, torch.round(x / s))), None)
        if step is not None:
            unit = units[name]
            assert isinstance(unit, BinaryUnit)
            out.append(SignUnit(name, unit, step))
    return out


def _thresholds(unit: BinaryUnit) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(t, gamma, s)`` in float64 from the float32 parameters: ``BN(x) = gamma (x - mu) / s + beta``."""
    bn = unit.bn
    assert bn.running_mean is not None and bn.running_var is not None  # the zoo always tracks them
    gamma, beta = bn.weight.detach().double(), bn.bias.detach().double()
    mu, s = bn.running_mean.double(), torch.sqrt(bn.running_var.double() + bn.eps)
    return mu - beta * s / gamma, gamma, s


def snap_thresholds(net: BinaryNet) -> int:
    """Move every sign threshold of ``net`` (in place) to the middle between the grid values it
    separates; returns the number of channels whose bias changed. Idempotent."""
    changed = 0
    with torch.no_grad():
        for su in sign_units(net):
            t, gamma, s = _thresholds(su.unit)
            mu = su.unit.bn.running_mean
            assert mu is not None
            k = t / su.step
            # +1 for x >= t (gamma > 0): the first grid value kept is ceil(t); for gamma < 0, x <= t: floor(t)
            mid = torch.where(gamma > 0, torch.ceil(k) - 0.5, torch.floor(k) + 0.5) * su.step
            beta = gamma * (mu.double() - mid) / s
            new = torch.where(gamma != 0, beta, su.unit.bn.bias.double()).to(su.unit.bn.bias.dtype)
            changed += int((new != su.unit.bn.bias).sum())
            su.unit.bn.bias.copy_(new)
    return changed


def float32_disagreements(net: BinaryNet, reach: int = 2) -> list[tuple[str, int]]:
    """The channels ``(unit, channel)`` where PyTorch's float32 BatchNorm and sign decide one of the
    ``reach`` grid values on either side of the threshold unlike the exact rule."""
    bad = []
    with torch.no_grad():
        for su in sign_units(net):
            t, gamma, _ = _thresholds(su.unit)
            offsets = torch.arange(-reach, reach + 1, dtype=torch.float64)
            xs = (torch.round(t / su.step)[None, :] + offsets[:, None]) * su.step  # (values, channels)
            exact = torch.where(gamma > 0, xs >= t, xs <= t)
            bn = su.unit.bn
            # the inference rule by itself, so that a net in training mode stays in it
            y32 = torch.nn.functional.batch_norm(
                xs.float(), bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps
            )
            got = (y32 >= 0) | (gamma == 0)[None, :]
            want = exact | (gamma == 0)[None, :]
            bad += [(su.name, int(c)) for c in torch.nonzero((got != want).any(0)).flatten()]
    return bad
