"""TFLite's fixed-point requantization, bit for bit: how an int8 layer's int32 accumulator becomes int8 codes.

A full-integer int8 layer never touches a float at run time: the real factor s_in * s_w / s_out
is turned, once, into an int32 multiplier M0 in [2^30, 2^31) and a power-of-two shift, and each
accumulator is scaled with integer arithmetic. This is what LiteRT's builtin kernels, TensorFlow
Lite Micro and CMSIS-NN run, so the IR computes exactly this (measured bit-exact against
ai-edge-litert 2.3.0's builtin FULLY_CONNECTED on x86 over 7.6 M accumulators):

    d = double(s_in) * double(s_w[c]) / double(s_out)          (float32 scales widened to double)
    q, e = frexp(d);  M0 = round_half_away(q * 2^31);  if M0 == 2^31: M0 = 2^30, e += 1
    if e < -31: M0 = e = 0;  shift = e
    a  = wrap32(acc * 2^max(shift, 0))                          (an int32 left shift)
    r1 = floor((a * M0 + 2^30) / 2^31)                          (rounding doubling high multiply, ties up)
    r  = floor((r1 + 2^(rs - 1)) / 2^rs), rs = max(-shift, 0)   (rounding right shift, ties up; r1 if rs = 0)
    y  = clamp(wrap32(r + zp_out), low, 127)                    (low = zp_out with a fused ReLU, else -128)

TFLite Micro's reference kernel and CMSIS-NN (default builds, gemmlowp's double rounding) round
the second step's ties away from zero instead of up: the same codes whenever a ReLU is fused,
which every hidden layer `quantize` makes has. XNNPACK (LiteRT's default delegate) requantizes
in float32 instead and cannot match this on every accumulator (see docs/export.md).
"""

from __future__ import annotations

import numpy as np

INT8_MAX = 127


def effective_scales(input_scale: float, weight_scale: np.ndarray, output_scale: float) -> np.ndarray:
    """The per-channel real multipliers in float64, from the float32 scales a model file stores."""
    s_in, s_out = np.float64(np.float32(input_scale)), np.float64(np.float32(output_scale))
    return s_in * np.asarray(weight_scale, np.float32).astype(np.float64) / s_out


def quantize_multiplier(scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's QuantizeMultiplier, per element: (M0 int32, shift int32) with scale ~= M0 * 2^(shift - 31)."""
    d = np.asarray(scale, np.float64)
    fraction, exponent = np.frexp(d)
    m0 = np.floor(fraction * 2.0**31 + 0.5).astype(np.int64)  # std::round; exact (q * 2^31 has spare bits)
    exponent = exponent.astype(np.int64)
    full = m0 == 2**31
    m0, exponent = np.where(full, m0 // 2, m0), np.where(full, exponent + 1, exponent)
    tiny = (exponent < -31) | (d == 0)
    return np.where(tiny, 0, m0).astype(np.int32), np.where(tiny, 0, exponent).astype(np.int32)


def wrap32(v: np.ndarray) -> np.ndarray:
    """int64 values as a 32-bit register would hold them (two's complement wrap), still int64."""
    return ((v + np.int64(2**31)) & np.int64(0xFFFFFFFF)) - np.int64(2**31)


HALF, WRAP, LOW32 = np.int64(1 << 30), np.int64(0xFFFFFFFF), np.int64(1 << 31)


class Requantizer:
    """Per-channel (M0, shift) and the output zero point and floor, prepared once; called per forward pass.

    The arithmetic of the module docstring in int64, in place where it can be: an int8 layer's
    requantization runs on every decision of the numpy backend.
    """

    def __init__(self, multiplier: np.ndarray, shift: np.ndarray, zero_point: int, low: int) -> None:
        shift = np.asarray(shift, np.int64)
        self.m0 = np.asarray(multiplier, np.int64)
        self.left = np.maximum(shift, 0) if (shift > 0).any() else None  # M > 1 is rare: skip the shift
        self.right = np.maximum(-shift, 0)
        self.nudge = np.where(self.right > 0, np.int64(1) << np.maximum(self.right - 1, 0), 0).astype(np.int64)
        self.zero_point, self.low = np.int64(zero_point), np.int64(low)

    def __call__(self, acc: np.ndarray) -> np.ndarray:
        """int32 accumulators (..., channels) -> int8 codes."""
        r = acc.astype(np.int64)
        if self.left is not None:
            r = wrap32(r << self.left)
        r *= self.m0
        r += HALF
        r >>= 31  # numpy's >> on int64 is arithmetic: floor division by 2^31
        r += self.nudge
        r >>= self.right
        r += self.zero_point
        r += LOW32  # wrap32, in place
        r &= WRAP
        r -= LOW32
        np.clip(r, self.low, INT8_MAX, out=r)
        return r.astype(np.int8)
