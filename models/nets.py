"""The zoo networks, W1A1, each built from :class:`~models.layers.BinaryUnit`.

Every network takes its per-layer widths as a parameter, so a physically
pruned network is the same class with smaller widths. Inputs are float images
in [0, 1] (uint8 / 255); each network maps them to ``2 * x - 1`` and quantizes
(1 bit for the MNIST nets as in BNN-PYNQ, 8-bit Q1.7 for the conv nets).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from models.layers import BinaryClassifier, BinaryUnit, binary_act, input_quant


class BinaryNet(nn.Module):
    """Common interface of the zoo networks."""

    arch: ClassVar[str]
    dataset: ClassVar[str]
    default_widths: ClassVar[tuple[int, ...]]
    input_shape: ClassVar[tuple[int, int, int]]
    num_classes: ClassVar[int] = 10
    classifier: BinaryClassifier  # every zoo network ends in one

    def __init__(self, widths: Sequence[int] | None) -> None:
        super().__init__()
        widths = tuple(int(w) for w in (widths if widths is not None else self.default_widths))
        if len(widths) != len(self.default_widths) or min(widths) < 1:
            raise ValueError(
                f"{self.arch} takes {len(self.default_widths)} positive widths "
                f"({', '.join(self.width_names())}), got {list(widths)}"
            )
        self.widths = widths

    @classmethod
    def width_names(cls) -> list[str]:
        """Names of the entries of ``widths``, in order."""
        raise NotImplementedError

    def binary_units(self) -> list[BinaryUnit]:
        """All binary units, in forward order."""
        return [m for m in self.modules() if isinstance(m, BinaryUnit)]

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """[0, 1] -> [-1, 1]."""
        return 2.0 * x - 1.0


class FC(BinaryNet):
    """BNN-PYNQ's fully connected MNIST nets: 784 -> w1 -> w2 -> w3 -> 10, binary input."""

    dataset = "mnist"
    input_shape = (1, 28, 28)

    def __init__(self, widths: Sequence[int] | None = None, dropout: float = 0.2) -> None:
        super().__init__(widths)
        self.input_quant = input_quant(1)
        self.dropout = nn.Dropout(dropout)
        dims = (28 * 28, *self.widths)
        self.units = nn.ModuleList(BinaryUnit(i, o) for i, o in itertools.pairwise(dims))
        self.classifier = BinaryClassifier(self.widths[-1], self.num_classes)

    @classmethod
    def width_names(cls) -> list[str]:
        return [f"fc{i + 1}" for i in range(len(cls.default_widths))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.input_quant(self.preprocess(x.flatten(1))))
        for unit in self.units:
            x = self.dropout(unit(x))
        return self.classifier(x)


class TFC(FC):
    arch = "tfc"
    default_widths = (64, 64, 64)


class SFC(FC):
    arch = "sfc"
    default_widths = (256, 256, 256)


class LFC(FC):
    arch = "lfc"
    default_widths = (1024, 1024, 1024)


class ConvChain(BinaryNet):
    """A plain chain of conv units (with max-pools) followed by FC units.

    Subclasses give the conv layout as (kernel, padding, pool-after) per conv.
    """

    dataset = "cifar10"
    input_shape = (3, 32, 32)
    conv_layout: ClassVar[tuple[tuple[int, int, bool], ...]]
    n_fc: ClassVar[int]

    def __init__(self, widths: Sequence[int] | None = None) -> None:
        super().__init__(widths)
        self.input_quant = input_quant(8)
        conv_w = self.widths[: len(self.conv_layout)]
        fc_w = self.widths[len(self.conv_layout) :]
        layers: list[nn.Module] = []
        in_ch, size = self.input_shape[0], self.input_shape[1]
        for out_ch, (k, pad, pool) in zip(conv_w, self.conv_layout, strict=True):
            layers.append(BinaryUnit(in_ch, out_ch, k, padding=pad))
            size = size + 2 * pad - k + 1
            if pool:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        dims = (in_ch * size * size, *fc_w)
        self.fc_units = nn.ModuleList(BinaryUnit(i, o) for i, o in itertools.pairwise(dims))
        self.classifier = BinaryClassifier(dims[-1], self.num_classes)

    @classmethod
    def width_names(cls) -> list[str]:
        n_conv = len(cls.conv_layout)
        return [f"conv{i + 1}" for i in range(n_conv)] + [f"fc{i + 1}" for i in range(len(cls.default_widths) - n_conv)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.input_quant(self.preprocess(x))).flatten(1)
        for unit in self.fc_units:
            x = unit(x)
        return self.classifier(x)


class CNV(ConvChain):
    """BNN-PYNQ's CNV: six 3x3 convs without padding, two max-pools, FC 512, 512."""

    arch = "cnv"
    default_widths = (64, 64, 128, 128, 256, 256, 512, 512)
    conv_layout = ((3, 0, False), (3, 0, True), (3, 0, False), (3, 0, True), (3, 0, False), (3, 0, False))


class VGG11(ConvChain):
    """VGG-11, CIFAR-10 variant: 8 padded 3x3 convs, five max-pools, one classifier layer."""

    arch = "vgg11"
    default_widths = (64, 128, 256, 256, 512, 512, 512, 512)
    conv_layout = (
        (3, 1, True),
        (3, 1, True),
        (3, 1, False),
        (3, 1, True),
        (3, 1, False),
        (3, 1, True),
        (3, 1, False),
        (3, 1, True),
    )


class NIN(BinaryNet):
    """Network-in-Network for CIFAR-10 (the layout of the pruning paper's code), binarized.

    Our choices, for FINN: the first conv has binary weights on 8-bit input
    (the paper keeps it full precision), 2x2 max-pools replace the 3x3/2
    max- and average-pools, and the 1x1 classifier conv has binary weights;
    its class scores are globally averaged.
    """

    arch = "nin"
    dataset = "cifar10"
    input_shape = (3, 32, 32)
    default_widths = (192, 160, 96, 192, 192, 192, 192, 192)
    layout = (
        (5, 2, False),
        (1, 0, False),
        (1, 0, True),
        (5, 2, False),
        (1, 0, False),
        (1, 0, True),
        (3, 1, False),
        (1, 0, False),
    )

    def __init__(self, widths: Sequence[int] | None = None) -> None:
        super().__init__(widths)
        self.input_quant = input_quant(8)
        layers: list[nn.Module] = []
        in_ch = self.input_shape[0]
        for out_ch, (k, pad, pool) in zip(self.widths, self.layout, strict=True):
            layers.append(BinaryUnit(in_ch, out_ch, k, padding=pad))
            if pool:
                layers.append(nn.MaxPool2d(2))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.classifier = BinaryClassifier(in_ch, self.num_classes, kernel_size=1, global_pool=True)

    @classmethod
    def width_names(cls) -> list[str]:
        return [f"conv{i + 1}" for i in range(len(cls.default_widths))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.input_quant(self.preprocess(x))))


class BinaryBasicBlock(nn.Module):
    """Binary residual block: sign(BN(conv(sign(BN(conv(x))))) + shortcut(x)).

    The residual sum is taken on real values before the sign, as in binary
    ResNets (Bi-Real, XNOR-Net). The shortcut is the identity, or, when the
    shape changes, a strided 1x1 binary conv with BatchNorm and a sign
    **(our choice, for FINN)**: with a +-1 shortcut every block's output is
    ``[popcount + E * shortcut_bit >= W]`` per channel, an exact integer
    form FINN streams (see build_flows/transforms/residual.py); a real-valued shortcut
    would need a second per-channel scale in the sum.
    """

    def __init__(self, in_ch: int, inner: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.unit1 = BinaryUnit(in_ch, inner, 3, stride=stride, padding=1)
        self.unit2 = BinaryUnit(inner, out_ch, 3, padding=1, act=False)
        self.shortcut = BinaryUnit(in_ch, out_ch, 1, stride=stride) if stride != 1 or in_ch != out_ch else None
        self.act = binary_act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.unit2(self.unit1(x))
        s = x if self.shortcut is None else self.shortcut(x)
        return self.act(y + s)


class ResNet18(BinaryNet):
    """ResNet-18, CIFAR-10 variant (3x3 stem, four stages of two basic blocks), binarized.

    Widths: the four stage widths (tied by the residual sums: the stem outputs
    stage 1's width), then the inner width of each of the eight blocks. Our
    choice, for FINN: a 4x4 max-pool of the binary features (their OR, still
    binary) replaces global average pooling before the binary classifier.
    """

    arch = "resnet18"
    dataset = "cifar10"
    input_shape = (3, 32, 32)
    default_widths = (64, 128, 256, 512, 64, 64, 128, 128, 256, 256, 512, 512)

    def __init__(self, widths: Sequence[int] | None = None) -> None:
        super().__init__(widths)
        stage_w, inner_w = self.widths[:4], self.widths[4:]
        self.input_quant = input_quant(8)
        self.stem = BinaryUnit(self.input_shape[0], stage_w[0], 3, padding=1)
        blocks = []
        in_ch = stage_w[0]
        for i, inner in enumerate(inner_w):
            stage = i // 2
            stride = 2 if stage > 0 and i % 2 == 0 else 1
            blocks.append(BinaryBasicBlock(in_ch, inner, stage_w[stage], stride))
            in_ch = stage_w[stage]
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.MaxPool2d(4)
        self.classifier = BinaryClassifier(in_ch, self.num_classes)

    @classmethod
    def width_names(cls) -> list[str]:
        return [f"stage{s + 1}" for s in range(4)] + [f"block{b + 1}.inner" for b in range(8)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.input_quant(self.preprocess(x)))
        x = self.pool(self.blocks(x)).flatten(1)
        return self.classifier(x)
