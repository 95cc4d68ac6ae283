"""The zoo networks at their real widths: shapes, gradients, FINN-relevant properties."""

from __future__ import annotations

import math

import pytest
import torch
from brevitas.nn import QuantIdentity

import models
from bnnflow.errors import BnnflowError
from models.layers import BinaryClassifier, BinaryUnit


@pytest.mark.parametrize("arch", list(models.ARCHS))
def test_forward_backward_at_real_width(arch: str) -> None:
    torch.manual_seed(0)
    net = models.build(arch)
    assert tuple(net.widths) == net.default_widths
    x = torch.rand(2, *net.input_shape)
    y = net(x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    y.square().sum().backward()
    for unit in net.binary_units():
        g = unit.weight_layer.weight.grad
        assert g is not None and g.abs().sum() > 0, f"{arch}: no gradient reaches a binary layer"


@pytest.mark.parametrize("arch", list(models.ARCHS))
def test_widths_parametrize_the_same_class(arch: str) -> None:
    cls = models.ARCHS[arch]
    small = [max(1, w // 4) for w in cls.default_widths]
    net = models.build(arch, small)
    assert type(net) is cls and list(net.widths) == small
    assert net(torch.rand(2, *net.input_shape)).shape == (2, 10)
    assert len(cls.width_names()) == len(cls.default_widths)


def test_binary_quantizers_have_unit_scale_and_binary_values() -> None:
    net = models.build("cnv").eval()
    for unit in net.binary_units():
        w = unit.weight_layer.quant_weight()
        assert float(w.scale) == 1.0 and set(w.value.unique().tolist()) <= {-1.0, 1.0}
        if unit.act is not None:
            q = unit.act(torch.randn(4, unit.out_channels, 3, 3))
            assert set(q.unique().tolist()) <= {-1.0, 1.0}
    acts = [m for m in net.modules() if isinstance(m, QuantIdentity)]
    assert acts[0].act_quant.bit_width() == 8  # conv nets: 8-bit Q1.7 input
    assert float(acts[0].act_quant.scale()) == 2.0**-7
    assert all(float(a.act_quant.scale()) == 1.0 for a in acts[1:])


def test_classifier_scale_is_positive_so_argmax_is_unchanged() -> None:
    """Whatever the learned (log) scale, the logits are the popcount scores times a positive scalar: the
    class ranking FINN's TopK computes without the scale is the network's."""
    torch.manual_seed(0)
    for arch in ("tfc", "cnv"):
        net = models.build(arch).eval()
        clf = net.classifier
        assert isinstance(clf, BinaryClassifier)
        x = torch.rand(8, *models.ARCHS[arch].input_shape)
        with torch.no_grad():
            clf.log_scale.fill_(0.0)
            raw = net(x)
            for log_scale in (-20.0, 3.0):
                clf.log_scale.fill_(log_scale)
                y = net(x)
                assert torch.allclose(y, raw * math.exp(log_scale), rtol=1e-5, atol=0), (arch, log_scale)
                assert torch.equal(y.argmax(1), raw.argmax(1))


def test_padding_keeps_conv_inputs_binary() -> None:
    unit = BinaryUnit(4, 8, kernel_size=3, padding=1)
    x = torch.ones(1, 4, 5, 5)
    padded = unit.pad(x)
    assert padded.shape == (1, 4, 7, 7) and set(padded.unique().tolist()) == {-1.0, 1.0}


def test_bad_model_name_and_widths_are_clear() -> None:
    with pytest.raises(BnnflowError, match="unknown model 'alexnet': choose one of tfc"):
        models.build("alexnet")
    with pytest.raises(BnnflowError, match="tfc takes 3 positive widths"):
        models.build("tfc", [64, 64])
