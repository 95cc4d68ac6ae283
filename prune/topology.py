"""Which layers of a zoo network can lose filters, and who reads their output.

Pruning filter k of a layer removes output channel k there and input channel
k in every *consumer* of that output. A consumer sees the channel either
directly (the next conv or linear layer, possibly through a max-pool, which
maps channel k to channel k) or through a flatten (channel k becomes the
``spatial`` features ``k*spatial .. (k+1)*spatial - 1`` of the next linear
layer). A padded consumer (the zoo pads with -1) fixes the constant a removed
channel must take (see :mod:`prune.gates`).

Not prunable **(our choice)**:

* the layer feeding the classifier: the classifier has no bias, and folding a
  removed channel's constant there would need a per-class bias in front of
  FINN's TopK;
* ResNet-18's stem, second block units and shortcuts: their widths are tied by
  the residual sums. Pruning the inner width of every basic block (unit1,
  ``widths[4:]``) is the standard choice for residual nets and leaves the
  residual structure untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from models.layers import BinaryUnit
from models.nets import FC, NIN, BinaryBasicBlock, BinaryNet, ConvChain, ResNet18


@dataclass(frozen=True)
class Consumer:
    """A binary unit that reads a prunable layer's output."""

    unit: str  # dotted module path inside the network
    spatial: int  # input features per producer channel (1: direct; H*W: after flatten)
    padded: bool  # the consumer pads its input with -1


@dataclass(frozen=True)
class PrunableLayer:
    """One prunable layer: its width entry, its module and its consumers."""

    name: str  # the entry of ``width_names()``
    width_index: int  # index into ``widths``
    unit: str  # dotted module path of the BinaryUnit
    consumers: tuple[Consumer, ...]


def _unit_path(net: BinaryNet, unit: BinaryUnit) -> str:
    for path, module in net.named_modules():
        if module is unit:
            return path
    raise KeyError("unit not found in network")


def _chain(
    net: BinaryNet, units: list[BinaryUnit], names: list[str], spatial: list[int], padded: list[bool]
) -> list[PrunableLayer]:
    """A plain chain: unit i feeds unit i + 1; the last one feeds the classifier (not prunable).

    ``spatial[i]`` and ``padded[i]`` describe how unit i + 1 reads unit i.
    """
    return [
        PrunableLayer(
            names[i], i, _unit_path(net, units[i]), (Consumer(_unit_path(net, units[i + 1]), spatial[i], padded[i]),)
        )
        for i in range(len(units) - 1)
    ]


def prunable_layers(net: BinaryNet) -> list[PrunableLayer]:
    """The prunable layers of ``net`` in forward (bottom-up) order."""
    names = net.width_names()
    if isinstance(net, FC):
        units = cast(list[BinaryUnit], list(net.units))  # nn.ModuleList iterates as nn.Module
        return _chain(net, units, names, [1] * len(units), [False] * len(units))
    if isinstance(net, ConvChain):
        convs = [m for m in net.features if isinstance(m, BinaryUnit)]
        units = convs + cast(list[BinaryUnit], list(net.fc_units))
        spatial: list[int] = []
        padded: list[bool] = []
        for i in range(len(units) - 1):
            nxt = units[i + 1]
            if i + 1 < len(convs):
                spatial.append(1)
                padded.append(nxt.pad.pad > 0)
            elif i + 1 == len(convs):  # last conv -> flatten -> first FC
                spatial.append(nxt.weight_layer.in_features // convs[-1].out_channels)
                padded.append(False)
            else:
                spatial.append(1)
                padded.append(False)
        return _chain(net, units, names, spatial, padded)
    if isinstance(net, NIN):
        units = [m for m in net.features if isinstance(m, BinaryUnit)]
        return _chain(net, units, names, [1] * len(units), [units[i + 1].pad.pad > 0 for i in range(len(units) - 1)])
    if isinstance(net, ResNet18):
        return [
            PrunableLayer(
                names[4 + b], 4 + b, f"blocks.{b}.unit1", (Consumer(f"blocks.{b}.unit2", 1, block.unit2.pad.pad > 0),)
            )
            for b, block in enumerate(cast(list[BinaryBasicBlock], list(net.blocks)))
        ]
    raise TypeError(f"no pruning topology for {type(net).__name__}")


def unit_at(net: BinaryNet, path: str) -> BinaryUnit:
    """The BinaryUnit at dotted ``path``."""
    module = net.get_submodule(path)
    if not isinstance(module, BinaryUnit):
        raise TypeError(f"{path} is not a BinaryUnit")
    return module
