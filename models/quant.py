"""Quantizers, kept apart from the layers as Brevitas does.

FINN's ``ConvertQONNXtoFINN`` turns a 1-bit quantizer into a bipolar
MultiThreshold only when its scale is exactly 1.0, so both binary quantizers
here use a constant scale of 1.0. The weight quantizer clamps the latent
(real) weights to [-1, 1] in place, which is the latent weight clipping of
BNN training.
"""

from brevitas.core.bit_width import BitWidthImplType
from brevitas.core.quant import QuantType
from brevitas.core.restrict_val import FloatToIntImplType, RestrictValueType
from brevitas.core.scaling import ScalingImplType
from brevitas.core.zero_point import ZeroZeroPoint
from brevitas.quant.binary import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst
from brevitas.quant.solver import ActQuantSolver


class BinaryWeightQuant(SignedBinaryWeightPerTensorConst):
    """+-1 weights (scale 1.0); latent weights clamped to [-1, 1]."""

    scaling_const = 1.0


class BinaryActQuant(SignedBinaryActPerTensorConst):
    """+-1 activations (scale 1.0), sign with a clipped straight-through estimator."""


class InputQuant8(ActQuantSolver):
    """8-bit signed fixed point Q1.7 in [-1, 1 - 2^-7] for image input.

    With input ``2 * (pixel / 255) - 1`` this is what BNN-PYNQ's CNV uses; the
    power-of-two scale lets FINN turn it into an integer input layer.
    """

    quant_type = QuantType.INT
    bit_width = 8
    bit_width_impl_type = BitWidthImplType.CONST
    scaling_impl_type = ScalingImplType.CONST
    restrict_scaling_type = RestrictValueType.POWER_OF_TWO
    float_to_int_impl_type = FloatToIntImplType.ROUND
    zero_point_impl = ZeroZeroPoint
    scaling_per_output_channel = False
    narrow_range = False
    signed = True
    min_val = -1.0
    max_val = 1.0 - 2.0 ** (-7)
