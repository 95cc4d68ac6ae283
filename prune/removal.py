"""Physical removal: the gated network -> the same zoo class with smaller widths.

A gated-off filter k leaves a channel that is the constant ``c_k`` in {-1, +1}
after BatchNorm and sign (see :mod:`prune.gates`); max-pooling keeps it
constant, a flatten spreads it over ``spatial`` features, and a padded
consumer sees -1 = ``c_k`` at its borders too. A consumer's integer
pre-activation therefore contains the per-output-channel constant
``sum over removed inputs of c_k * (sum of its binary weights on that input)``,
which is folded into the consumer's BatchNorm by shifting ``running_mean``.
Then the filter (weights and BatchNorm entries) and the consumer's matching
input weights are deleted. In eval mode the pruned network computes what the
gated one computes, up to float rounding of the shifted mean.
"""

from __future__ import annotations

import torch

import models
from models.nets import BinaryNet
from prune.gates import GateSet
from prune.topology import unit_at


def keep_masks(gates: GateSet) -> dict[str, torch.Tensor]:
    """Boolean keep-mask per prunable layer (open gates keep everything)."""
    return {layer.name: gate.values().detach() > 0.5 for layer, gate in gates}


def new_widths(net: BinaryNet, gates: GateSet) -> list[int]:
    """Widths of the pruned network."""
    widths = list(net.widths)
    for layer, gate in gates:
        widths[layer.width_index] = int((gate.values().detach() > 0.5).sum())
    return widths


@torch.no_grad()
def physically_prune(net: BinaryNet, gates: GateSet) -> BinaryNet:
    """The pruned network (eval mode) equal to ``net`` with ``gates`` applied."""
    masks = keep_masks(gates)
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    # 1. Consumers: fold the removed channels' constants, drop their input weights.
    for layer, gate in gates:
        keep = masks[layer.name]
        for cons in layer.consumers:
            unit = unit_at(net, cons.unit)
            wq = unit.weight_layer.quant_weight().value.detach()
            per_input = wq.flatten(2).sum(2) if wq.dim() == 4 else wq  # (out, in): kernel summed
            cols = keep.repeat_interleave(cons.spatial)
            const = gate.const.repeat_interleave(cons.spatial)
            fold = (per_input[:, ~cols] * const[~cols]).sum(1)
            sd[f"{cons.unit}.bn.running_mean"] -= fold
            w = f"{cons.unit}.weight_layer.weight"
            sd[w] = sd[w][:, cols]
    # 2. The pruned layers themselves: drop filters and their BatchNorm entries.
    for layer, _ in gates:
        keep = masks[layer.name]
        for key in ("weight_layer.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
            full = f"{layer.unit}.{key}"
            sd[full] = sd[full][keep]
    pruned = models.build(net.arch, new_widths(net, gates))
    pruned.load_state_dict(sd)
    return pruned.eval()
