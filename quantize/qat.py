"""Quantization-aware training modules (torch; training side only, never imported on a device).

`BinaryLinear` is the QuEST fake-quant of one dense layer: the input and the fp32 shadow weights
are rotated by D H_n (`quantize.binary.rotation`, the same matrix the deploy layer uses), each
row is replaced by sign * sqrt(2/pi) * rms (the weight scale rounded to float16 as stored), and
the trust gradient estimator passes gradients only where |q(x) - x| <= trust * rms(x):
elements far outside the 1-bit grid get no gradient, the rest a straight-through one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edge_rl.qlayers import BINARY_SCALE
from quantize.binary import rotation

TRUST_1BIT = 1.3 * BINARY_SCALE  # 1.3x QuEST's default half-step trust, best in its W1A1 sweep


def trust_binarize(x: torch.Tensor, trust: float, scale_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Rows of x -> sign(x) * c1 * rms(row) (sign(0) = +1), trust-masked straight-through gradient."""
    rms = x.pow(2).mean(dim=-1, keepdim=True).sqrt()
    scale = BINARY_SCALE * rms
    if scale_dtype is not None:
        scale = scale.to(scale_dtype).to(x.dtype)
    q = torch.where(x >= 0, scale, -scale)
    mask = ((q - x).abs() <= trust * rms).to(x.dtype)
    passthrough = x * mask
    return passthrough + (q - passthrough).detach()


class BinaryLinear(nn.Module):
    """Linear layer trained through its 1-bit deploy form (W1A1 in a randomised Hadamard basis)."""

    def __init__(self, in_features: int, out_features: int, seed: int, trust: float = TRUST_1BIT) -> None:
        super().__init__()
        self.in_features, self.trust, self.seed = in_features, trust, seed
        rot = torch.from_numpy(rotation(in_features, seed))
        self.register_buffer("rotation", rot)
        self.n = rot.shape[0]
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x, (0, self.n - self.in_features)) @ self.rotation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = trust_binarize(self.rotate(x), self.trust)
        wq = trust_binarize(self.rotate(self.weight), self.trust, scale_dtype=torch.float16)
        return nn.functional.linear(xq, wq, self.bias)


def fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    """Per-row symmetric int8 fake quantization (as `quantize.int8.quantize_weights`), STE gradient."""
    scale = (weight.detach().abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)
    q = (weight / scale).round().clamp(-127, 127) * scale
    return weight + (q - weight).detach()


def fake_quant_split_head(weight: torch.Tensor) -> torch.Tensor:
    """A Q-value head as `quantize.int8.split_value_row` stores it: shared row + per-action differences.

    Each part is fake-quantized per row; their sum is the (n, in) weight the deployed head applies.
    """
    shared = weight.mean(dim=0, keepdim=True)
    return fake_quant_weight(shared) + fake_quant_weight(weight - shared)


def fake_quant_activation(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """Per-tensor asymmetric int8 fake quantization; gradient passes inside the representable range."""
    lo, hi = (-128 - zero_point) * scale, (127 - zero_point) * scale
    q = ((x / scale).round() + zero_point).clamp(-128, 127).sub(zero_point).mul(scale)
    inside = ((x >= lo) & (x <= hi)).to(x.dtype)
    passthrough = x * inside
    return passthrough + (q - passthrough).detach()
