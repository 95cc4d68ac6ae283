"""Building blocks shared by the zoo networks.

A *binary unit* is the BNN-PYNQ pattern that FINN streamlines into one
XNOR-popcount layer with thresholds: binary-weight conv/linear (no bias) ->
BatchNorm -> sign. Every prunable layer of every zoo network is one
:class:`BinaryUnit`; its ``out_channels`` is one entry of the network's widths.
"""

from __future__ import annotations

import math

import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from torch import nn

from models.quant import BinaryActQuant, BinaryWeightQuant, InputQuant8


def binary_act() -> QuantIdentity:
    """Sign activation with scale 1.0 (FINN: bipolar MultiThreshold)."""
    return QuantIdentity(act_quant=BinaryActQuant, return_quant_tensor=False)


def input_quant(bits: int) -> QuantIdentity:
    """Input quantizer applied to ``2 * x - 1``: 1-bit (MNIST nets) or 8-bit Q1.7 (conv nets)."""
    if bits == 1:
        return binary_act()
    if bits == 8:
        return QuantIdentity(act_quant=InputQuant8, return_quant_tensor=False)
    raise ValueError(f"input bit width must be 1 or 8, not {bits}")


class BinaryPad(nn.Module):
    """Pad with -1 instead of 0.

    Zero is not a binary value: a zero-padded BNN cannot be computed with
    XNOR-popcount. Padding with -1 keeps every conv input in {-1, +1}; after
    FINN maps bipolar -1/+1 to bits 0/1 it is ordinary zero padding in
    hardware, and on the 8-bit input layer -1 is pixel value 0.
    """

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad == 0:
            return x
        return nn.functional.pad(x, (self.pad,) * 4, value=-1.0)


class BinaryUnit(nn.Module):
    """Binary-weight conv or linear -> BatchNorm -> optional sign activation."""

    weight_layer: QuantLinear | QuantConv2d
    bn: nn.BatchNorm1d | nn.BatchNorm2d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | None = None,
        stride: int = 1,
        padding: int = 0,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.pad = BinaryPad(padding)
        if kernel_size is None:
            self.weight_layer = QuantLinear(in_channels, out_channels, bias=False, weight_quant=BinaryWeightQuant)
            self.bn = nn.BatchNorm1d(out_channels, eps=1e-4)
        else:
            self.weight_layer = QuantConv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=0,
                bias=False,
                weight_quant=BinaryWeightQuant,
            )
            self.bn = nn.BatchNorm2d(out_channels, eps=1e-4)
        nn.init.uniform_(self.weight_layer.weight, -1.0, 1.0)
        self.act = binary_act() if act else None

    @property
    def out_channels(self) -> int:
        return int(self.weight_layer.weight.shape[0])

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """BatchNorm output before the sign (used by residual blocks and by the pruner)."""
        return self.bn(self.weight_layer(self.pad(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pre_activation(x)
        return self.act(y) if self.act is not None else y


class BinaryClassifier(nn.Module):
    """Last layer: binary weights, no BatchNorm, then a positive scalar scale.

    With ``global_pool`` (a 1x1 conv classifier, as in NIN) the class scores
    are averaged over all positions before scaling. The scale keeps the +-K popcount range of the
    logits in a range where cross-entropy trains; being a positive scalar it does not change the
    argmax, and FINN absorbs it into the final TopK/LabelSelect.
    """

    weight_layer: QuantLinear | QuantConv2d

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        kernel_size: int | None = None,
        global_pool: bool = False,
    ) -> None:
        super().__init__()
        self.global_pool = global_pool
        if kernel_size is None:
            self.weight_layer = QuantLinear(in_features, num_classes, bias=False, weight_quant=BinaryWeightQuant)
        else:
            self.weight_layer = QuantConv2d(
                in_features, num_classes, kernel_size, bias=False, weight_quant=BinaryWeightQuant
            )
        nn.init.uniform_(self.weight_layer.weight, -1.0, 1.0)
        fan_in = in_features * (kernel_size or 1) ** 2
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / math.sqrt(fan_in))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.weight_layer(x)
        if self.global_pool:  # NIN: average the per-position class scores
            y = y.mean(dim=(2, 3))
        return y * self.log_scale.exp()
