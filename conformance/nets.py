"""Seeded random W1A1 Brevitas networks of the shapes users write, not the zoo's.

Each seed gives one :class:`NetSpec` and one network built the way
brevitas_examples' bnn_pynq nets are (its ``CommonWeightQuant`` /
``CommonActQuant``, a Q1.7 or 1-bit input quantizer, optionally the
``2 * x - 1`` front), exported with Brevitas' own ``export_qonnx``:

- input 1 or 3 channels, 6 to 32 pixels square (or FC-only on a flat input);
- conv widths 1-70 including odd and prime ones, kernels 1/3/5, -1 padding
  (``ConstantPad2d(p, -1.0)``: zero is not binary), sometimes zero padding as a user
  writes it first (``QuantConv2d(padding=p)``, refused on binary activations), or none;
- max-pools of kernel 2 or 3 over odd and even sizes (floor mode);
- FC layers fed straight by a spatial feature map (LeNet style);
- BatchNorm with gammas of both signs, some near zero, means and betas far
  out, so that channels that always or never fire occur;
- 2-12 classes, a binary last layer with no BatchNorm.

Every binary layer has no bias, as in BNN-PYNQ: FINN turns the
BatchNorm -> sign pair into thresholds.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from brevitas.core.restrict_val import RestrictValueType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from torch import nn

#: Conv widths drawn from: small, odd, prime, around powers of two, up to 70.
WIDTHS = (1, 2, 3, 5, 7, 8, 11, 13, 16, 17, 24, 31, 32, 37, 47, 53, 61, 64, 70)


@dataclass
class Layer:
    """One layer of a spec: ``conv`` (width, kernel, pad), ``pool`` (kernel) or ``fc`` (width).

    ``zero_pad``: the conv pads with 0 as ``QuantConv2d(padding=p)`` does (what a user
    writes first; bnnflow refuses it on binary activations), else with -1.
    """

    kind: str
    width: int = 0
    kernel: int = 0
    pad: int = 0
    zero_pad: bool = False


@dataclass
class NetSpec:
    """Everything that defines one random network."""

    seed: int
    in_ch: int
    in_size: int
    input_bits: int  # 8 (Q1.7) or 1 (sign of the input)
    front: bool  # 2 * x - 1 before the input quantizer
    layers: list[Layer]
    classes: int
    bn_style: str  # "trained" | "wild" (gammas near 0, far means/betas)
    target_fps: int = 2000  # FINN's auto-folding target: exercises other PE/SIMD choices

    def describe(self) -> str:
        parts = []
        for layer in self.layers:
            if layer.kind == "conv":
                pad = f"{'z' if layer.zero_pad else 'p'}{layer.pad}" if layer.pad else ""
                parts.append(f"c{layer.width}k{layer.kernel}{pad}")
            elif layer.kind == "pool":
                parts.append(f"mp{layer.kernel}")
            else:
                parts.append(f"fc{layer.width}")
        return (
            f"seed {self.seed}: {self.in_ch}x{self.in_size}x{self.in_size} in{self.input_bits}"
            f"{'+front' if self.front else ''} "
            + "-".join(parts)
            + f" -> {self.classes} ({self.bn_style}, {self.target_fps} FPS)"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def random_spec(seed: int) -> NetSpec:
    """The network of ``seed``: geometry drawn so that every feature map stays at least 1x1."""
    rng = random.Random(seed)
    pad_rng = random.Random(f"zero-pad {seed}")  # its own stream: the other draws stay as they were
    in_ch = rng.choice((1, 3))
    fc_only = rng.random() < 0.2
    in_size = rng.choice((6, 7, 8, 9, 11, 12, 14, 16)) if fc_only else rng.choice((8, 9, 10, 12, 13, 16, 20, 28, 32))
    input_bits = 1 if (in_ch == 1 and rng.random() < 0.5) else 8
    front = input_bits == 1 or rng.random() < 0.7
    layers: list[Layer] = []
    size = in_size
    if not fc_only:
        for _ in range(rng.randint(1, 4)):
            k = rng.choice((1, 3, 3, 5))
            pad = rng.choice((0, 0, k // 2)) if k > 1 else 0
            if size + 2 * pad - k + 1 < 1:
                k, pad = 1, 0
            zero = bool(pad) and pad_rng.random() < 0.15
            layers.append(Layer("conv", rng.choice(WIDTHS), k, pad, zero_pad=zero))
            size = size + 2 * pad - k + 1
            if size >= 4 and rng.random() < 0.45:
                pk = rng.choice((2, 2, 3))
                layers.append(Layer("pool", kernel=pk))
                size //= pk
    for _ in range(rng.randint(0 if not fc_only else 1, 2)):
        layers.append(Layer("fc", rng.choice((3, 7, 10, 16, 23, 32, 41, 64))))
    return NetSpec(
        seed=seed,
        in_ch=in_ch,
        in_size=in_size,
        input_bits=input_bits,
        front=front,
        layers=layers,
        classes=rng.randint(2, 12),
        bn_style=rng.choice(("trained", "wild")),
        target_fps=rng.choice((300, 2000, 20000, 200000)),
    )


def _weight_quant() -> dict[str, Any]:
    from brevitas_examples.bnn_pynq.models.common import CommonWeightQuant

    return {"weight_quant": CommonWeightQuant, "weight_bit_width": 1}


def _sign() -> QuantIdentity:
    from brevitas_examples.bnn_pynq.models.common import CommonActQuant

    return QuantIdentity(act_quant=CommonActQuant, bit_width=1)


def _input_quant(bits: int) -> QuantIdentity:
    from brevitas_examples.bnn_pynq.models.common import CommonActQuant

    if bits == 1:
        return _sign()
    return QuantIdentity(
        act_quant=CommonActQuant,
        bit_width=8,
        min_val=-1.0,
        max_val=1.0 - 2.0 ** (-7),
        narrow_range=False,
        restrict_scaling_type=RestrictValueType.POWER_OF_TWO,
    )


class RandomNet(nn.Module):
    """The network of a :class:`NetSpec` (input: float images in [0, 1])."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.front = spec.front
        self.input_quant = _input_quant(spec.input_bits)
        feats: list[nn.Module] = []
        ch, size = spec.in_ch, spec.in_size
        flat: int | None = None
        for layer in spec.layers:
            if layer.kind == "conv":
                if layer.pad and not layer.zero_pad:
                    feats.append(nn.ConstantPad2d(layer.pad, -1.0))
                feats += [
                    QuantConv2d(
                        ch,
                        layer.width,
                        layer.kernel,
                        padding=layer.pad if layer.zero_pad else 0,
                        bias=False,
                        **_weight_quant(),
                    ),
                    nn.BatchNorm2d(layer.width),
                    _sign(),
                ]
                ch, size = layer.width, size + 2 * layer.pad - layer.kernel + 1
            elif layer.kind == "pool":
                feats.append(nn.MaxPool2d(layer.kernel))
                size //= layer.kernel
            else:
                if flat is None:
                    feats.append(nn.Flatten())
                    flat = ch * size * size
                feats += [
                    QuantLinear(flat, layer.width, bias=False, **_weight_quant()),
                    nn.BatchNorm1d(layer.width),
                    _sign(),
                ]
                flat = layer.width
        if flat is None:
            feats.append(nn.Flatten())
            flat = ch * size * size
        feats.append(QuantLinear(flat, spec.classes, bias=False, **_weight_quant()))
        self.features = nn.Sequential(*feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.front:
            x = 2.0 * x - torch.tensor([1.0], device=x.device)
        return self.features(self.input_quant(x))


def build_net(spec: NetSpec) -> RandomNet:
    """The network of ``spec`` with random binary weights and BatchNorm statistics of ``spec.bn_style``."""
    torch.manual_seed(spec.seed)
    net = RandomNet(spec)
    gen = torch.Generator().manual_seed(spec.seed + 1)
    for mod in net.modules():
        if isinstance(mod, (QuantConv2d, QuantLinear)):
            mod.weight.data.uniform_(-1.0, 1.0, generator=gen)
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = mod.num_features
            mean, var = mod.running_mean, mod.running_var
            if mean is None or var is None:  # torch allows BatchNorm without them; RandomNet's track them
                raise ValueError(f"seed {spec.seed}: a BatchNorm has no running statistics")
            fan = _fan_in(net, mod)
            # A popcount-like pre-activation of fan-in F has mean 0 and std about sqrt(F).
            spread = max(fan, 1) ** 0.5
            mean.copy_(torch.randn(n, generator=gen) * spread)
            var.copy_((torch.rand(n, generator=gen) * 1.5 + 0.25) * fan)
            gamma = torch.rand(n, generator=gen) * 1.5 + 0.1
            gamma[torch.rand(n, generator=gen) < 0.3] *= -1
            beta = torch.randn(n, generator=gen) * 0.5
            if spec.bn_style == "wild":
                tiny = torch.rand(n, generator=gen) < 0.2
                gamma[tiny] = gamma[tiny] * 1e-4
                far = torch.rand(n, generator=gen) < 0.2
                mean[far] += torch.randn(int(far.sum()), generator=gen) * 10 * fan
                beta[torch.rand(n, generator=gen) < 0.2] += torch.randn(1, generator=gen).item() * 20
            mod.weight.data.copy_(gamma)
            mod.bias.data.copy_(beta)
    return net.eval()


def _fan_in(net: RandomNet, bn: nn.Module) -> int:
    """Fan-in of the weight layer in front of BatchNorm ``bn``."""
    prev = None
    for mod in net.features:
        if mod is bn and prev is not None:
            w = prev.weight
            return int(w[0].numel())
        if isinstance(mod, (QuantConv2d, QuantLinear)):
            prev = mod
    return 1


def export(spec: NetSpec, path: Path) -> Path:
    """Export the network of ``spec`` to QONNX with Brevitas' ``export_qonnx``."""
    from brevitas.export import export_qonnx

    net = build_net(spec)
    export_qonnx(net, input_t=torch.rand(1, spec.in_ch, spec.in_size, spec.in_size), export_path=str(path))
    return path
