"""A plain-torch twin of a zoo network, for training.

Brevitas wraps every binary quantizer in proxies, injectors and quant
tensors; for W1A1 with constant scale 1.0 the arithmetic is two small
functions, and the wrapping is a large part of a CPU training step (see the
training-cost table in BENCHMARKS.md). :func:`twin` returns a module tree that
shares every parameter and buffer with the Brevitas network (an optimizer
step or a BatchNorm statistics update through the twin changes the Brevitas
network itself) and computes the same forward values and the same gradients:

- binary weights: ``+1 if w >= 0 else -1`` with a straight-through gradient,
  as Brevitas' clamped binary weight quantizer (the in-place clamp of the
  latent weights is :func:`bnnflow.train.clip_latent_weights`);
- sign activations: ``+1 if x >= 0 else -1`` with the gradient passed where
  ``-1 <= x <= 1``, as Brevitas' clamp followed by a straight-through sign.

The 8-bit input quantizer stays the Brevitas module (it has no parameters
and costs little). Export, evaluation and everything downstream use the
Brevitas network; only the training steps run through the twin.

``precision="float"`` gives the full-precision network of the same topology
and parameters instead: latent weights used as they are, ``hardtanh`` for
each sign activation, the input quantizer (1-bit for the MNIST nets) kept,
since it defines the data the network sees. It is what ``bnnflow train
--float`` trains, a teacher for distilling the binary network
(``--teacher``), never a network to build.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from torch import nn

from models.nets import BinaryNet


class _SignSTE(torch.autograd.Function):
    """Binary weight: sign with x == 0 -> +1, straight-through gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _ClampedSign(torch.autograd.Function):
    """Sign activation: sign with x == 0 -> +1, gradient passed where -1 <= x <= 1."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x.abs() <= 1.0)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (inside,) = ctx.saved_tensors
        return grad * inside


class FastSign(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ClampedSign.apply(x)


class FloatConv2d(nn.Module):
    """conv2d with the latent (real) weight of a shared Brevitas ``QuantConv2d``."""

    def __init__(self, src: QuantConv2d) -> None:
        super().__init__()
        self.weight = src.weight
        self.stride, self.padding, self.dilation, self.groups = src.stride, src.padding, src.dilation, src.groups

    def kernel(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.kernel(), None, self.stride, self.padding, self.dilation, self.groups)


class FastBinaryConv2d(FloatConv2d):
    """conv2d with the binarized weight of a shared Brevitas ``QuantConv2d``."""

    def kernel(self) -> torch.Tensor:
        return _SignSTE.apply(self.weight)


class FloatLinear(nn.Module):
    """linear with the latent (real) weight of a shared Brevitas ``QuantLinear``."""

    def __init__(self, src: QuantLinear) -> None:
        super().__init__()
        self.weight = src.weight

    def kernel(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.kernel())


class FastBinaryLinear(FloatLinear):
    """linear with the binarized weight of a shared Brevitas ``QuantLinear``."""

    def kernel(self) -> torch.Tensor:
        return _SignSTE.apply(self.weight)


#: what each quantized module becomes in a twin of that precision
_REPLACEMENTS: dict[str, tuple[type[nn.Module], type[nn.Module], Callable[[], nn.Module]]] = {
    "binary": (FastBinaryConv2d, FastBinaryLinear, FastSign),
    "float": (FloatConv2d, FloatLinear, nn.Hardtanh),
}
PRECISIONS = tuple(_REPLACEMENTS)


def _is_sign_act(module: QuantIdentity) -> bool:
    """Whether a QuantIdentity is exactly the +-1 sign (scale 1.0) that FastSign computes."""
    probe = torch.tensor([-3.0, -1.0, -0.25, 0.0, 0.25, 1.0, 3.0])
    with torch.no_grad():
        out = module(probe)
    out = getattr(out, "value", out)
    return bool(torch.equal(out, torch.where(probe >= 0, 1.0, -1.0)))


def _check_supported(name: str, module: QuantConv2d | QuantLinear) -> None:
    """Refuse a layer whose quantized weight is not the +-1 sign with scale 1.0 and no bias."""
    if module.bias is not None:
        raise ValueError(f"fastpath: {name} has a bias; the zoo's binary layers have none")
    probe = torch.tensor([-0.5, 0.0, 0.5])
    with torch.no_grad():
        out = module.weight_quant(probe)
    if not torch.equal(getattr(out, "value", out), torch.tensor([-1.0, 1.0, 1.0])):
        raise ValueError(f"fastpath: {name} is not a +-1 weight quantizer with scale 1.0")


def twin(model: BinaryNet, precision: str = "binary") -> nn.Module:
    """A module with ``model``'s forward (``precision="float"``: its full-precision counterpart),
    sharing its parameters and buffers, in plain torch.

    Raises ``ValueError`` for a quantized layer the twin does not reproduce
    (a bias, a non-binary or scaled weight quantizer, a non-sign activation
    other than the 8-bit input quantizer).
    """
    if precision not in _REPLACEMENTS:
        raise ValueError(f"fastpath: precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    conv, linear, sign = _REPLACEMENTS[precision]
    keep_input = precision == "float"  # the 1-bit input quantizer defines the data; only the binary twin may swap it
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    clone = copy.deepcopy(model, shared)
    replaced: list[str] = []
    for name, module in list(clone.named_modules()):
        if not name or any(name.startswith(r + ".") for r in replaced):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = clone.get_submodule(parent_name) if parent_name else clone
        if isinstance(module, QuantConv2d):
            _check_supported(name, module)
            setattr(parent, attr, conv(module))
            replaced.append(name)
        elif isinstance(module, QuantLinear):
            _check_supported(name, module)
            setattr(parent, attr, linear(module))
            replaced.append(name)
        elif isinstance(module, QuantIdentity) and _is_sign_act(module) and not (keep_input and name == "input_quant"):
            setattr(parent, attr, sign())
            replaced.append(name)
    return clone


def forward_fn(model: BinaryNet, precision: str = "binary") -> Callable[[torch.Tensor], torch.Tensor]:
    """The twin as a callable, in ``model``'s train/eval mode."""
    t = twin(model, precision)
    t.train(model.training)
    return t
