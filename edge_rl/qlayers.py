"""Quantized layer kinds of the policy IR: int8 (integer-exact) and 1-bit (QuEST-style).

int8 follows the integer-only scheme TFLite executes (Jacob et al. 2018): symmetric
per-output-channel int8 weights, int32 biases, asymmetric per-tensor int8 activations. A dense
layer accumulates (x_q - zp_in) * w_q in int32, adds the bias, then either requantizes to int8
codes with TFLite's fixed-point arithmetic (`edge_rl.fixedpoint`: an int32 multiplier and a
shift per channel, what LiteRT's builtin kernels, TFLite Micro and CMSIS-NN compute), or, for the
Q-value head, dequantizes: q = float32(acc) * float32(s_in * s_w). The float head keeps small Q
gaps, on which the greedy action depends, out of an int8 grid.

1-bit follows QuEST (Panferov et al. 2025) in its deploy form: the input is padded to a power
of two n, multiplied by a fixed random +-1 diagonal D and rotated by the orthonormal Hadamard
H_n; the rotated weights W D H_n were binarised offline to sign bits with a per-row scale
s_w = sqrt(2/pi) * rms(row) (the MSE-optimal 1-bit constant), and at run time the rotated input
becomes sign bits with s_x = sqrt(2/pi) * rms(x_r). Then y = count * (s_x * s_w) + b, where
count = sum of +-1 products = n - 2 * popcount(x_bits XOR w_bits). sign(0) is +1 throughout.
The run-time rotation is a butterfly Walsh-Hadamard transform and the mean square a halving
sum, both in a fixed order every exported form repeats: a sign decided differently by one
backend would move an output by a whole 1-bit step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from edge_rl.errors import PolicyFormatError
from edge_rl.fixedpoint import Requantizer, effective_scales, quantize_multiplier
from edge_rl.layers import Layer

INT8_MIN, INT8_MAX = -128, 127
BINARY_SCALE = math.sqrt(2.0 / math.pi)  # E|x| / rms for a Gaussian: QuEST's c_1


def _check_scale(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise PolicyFormatError(f"{name} must be a positive finite number, got {value}")
    return value


def _check_zero_point(value: int) -> int:
    if not INT8_MIN <= int(value) <= INT8_MAX:
        raise PolicyFormatError(f"zero point {value} is outside int8")
    return int(value)


def reciprocal(scale: float) -> np.float32:
    """float32(1) / float32(scale): quantizers multiply by it (runtimes' division is not always exact)."""
    return np.float32(1.0) / np.float32(scale)


def quantize_int8(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float -> int8: rint(x * (1 / scale)) + zp (ties to even), saturated.

    A multiply by the float32 reciprocal, not a division: IEEE multiplication is exact in every
    runtime, while XNNPACK's division can be an ulp off, which moves exact ties (common after
    1-bit layers, whose outputs lie on a grid) to the other code.
    """
    q = np.rint(np.asarray(x, np.float32) * reciprocal(scale)) + zero_point
    return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)


@dataclass(eq=False)
class Quantize(Layer):
    """Float activations -> int8 codes with one per-tensor scale and zero point."""

    scale: float
    zero_point: int = 0
    kind: ClassVar[str] = "quantize"
    input_kind: ClassVar[str] = "float"

    def __post_init__(self) -> None:
        self.scale = _check_scale("quantize scale", self.scale)
        self.zero_point = _check_zero_point(self.zero_point)

    @property
    def output_kind(self) -> str:
        return "int8"

    def forward(self, x: np.ndarray) -> np.ndarray:
        return quantize_int8(x, self.scale, self.zero_point)

    def config(self) -> dict[str, Any]:
        return {"scale": self.scale, "zero_point": self.zero_point}


@dataclass(eq=False)
class Dequantize(Layer):
    """int8 codes -> float (x - zp) * scale: lets a float layer (an adapted Q head) read an int8 body."""

    scale: float
    zero_point: int = 0
    kind: ClassVar[str] = "dequantize"
    input_kind: ClassVar[str] = "int8"

    def __post_init__(self) -> None:
        self.scale = _check_scale("dequantize scale", self.scale)
        self.zero_point = _check_zero_point(self.zero_point)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return (x.astype(np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)

    def config(self) -> dict[str, Any]:
        return {"scale": self.scale, "zero_point": self.zero_point}


@dataclass(eq=False)
class DenseInt8(Layer):
    """Integer dense layer; `output_scale=None` makes it a float (dequantized) output head.

    `relu` fuses a ReLU into the requantization (clamp at the output zero point), as TFLite and
    ONNX Runtime fuse it, so hidden layers never leave the integer domain.
    """

    weight: np.ndarray  # int8 (out, in), symmetric: zero point 0
    weight_scale: np.ndarray  # float32 (out,)
    bias: np.ndarray  # int32 (out,), scale input_scale * weight_scale
    input_scale: float
    input_zero_point: int
    output_scale: float | None = None
    output_zero_point: int = 0
    relu: bool = False
    kind: ClassVar[str] = "dense_int8"
    input_kind: ClassVar[str] = "int8"
    array_dtypes: ClassVar[dict[str, np.dtype]] = {
        "weight": np.dtype(np.int8),
        "weight_scale": np.dtype(np.float32),
        "bias": np.dtype(np.int32),
    }

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight)
        self.weight_scale = np.asarray(self.weight_scale)
        self.bias = np.asarray(self.bias)
        for name, dtype in self.array_dtypes.items():
            if getattr(self, name).dtype != dtype:
                raise PolicyFormatError(f"dense_int8 {name} must be {dtype}, got {getattr(self, name).dtype}")
        out = self.weight.shape[0] if self.weight.ndim == 2 else -1
        if out < 1 or self.weight_scale.shape != (out,) or self.bias.shape != (out,):
            raise PolicyFormatError(f"dense_int8 weight {self.weight.shape}, scales and bias do not fit")
        if not (np.isfinite(self.weight_scale).all() and (self.weight_scale > 0).all()):
            raise PolicyFormatError("dense_int8 weight scales must be positive and finite")
        self.input_scale = _check_scale("dense_int8 input_scale", self.input_scale)
        self.input_zero_point = _check_zero_point(self.input_zero_point)
        self.output_zero_point = _check_zero_point(self.output_zero_point)
        if self.output_scale is not None:
            self.output_scale = _check_scale("dense_int8 output_scale", self.output_scale)
        elif self.relu:
            raise PolicyFormatError("dense_int8 with a float output cannot fuse relu")
        self.relu = bool(self.relu)
        self._w32 = self.weight.astype(np.int32).T
        self._acc_scale = np.float32(self.input_scale) * self.weight_scale  # float32 arithmetic
        self._acc_scale.setflags(write=False)
        self._requantization: tuple[np.ndarray, np.ndarray] | None = None
        if self.output_scale is not None:
            m0, shift = quantize_multiplier(effective_scales(self.input_scale, self.weight_scale, self.output_scale))
            m0.setflags(write=False)
            shift.setflags(write=False)
            self._requantization = (m0, shift)
            self._requantize = Requantizer(m0, shift, self.output_zero_point, self.output_low)

    @property
    def acc_scale(self) -> np.ndarray:
        """float32 per output row, float32(s_in) * s_w: what a float-output layer multiplies its accumulator by."""
        return self._acc_scale

    @property
    def requantization(self) -> tuple[np.ndarray, np.ndarray]:
        """Per output row, TFLite's int32 multiplier M0 and shift (int8-output layers only)."""
        if self._requantization is None:
            raise PolicyFormatError("a float-output dense_int8 layer has no requantization")
        return self._requantization

    @property
    def output_low(self) -> int:
        """The smallest code the layer emits: its output zero point with a fused ReLU, else -128."""
        return self.output_zero_point if self.relu else INT8_MIN

    @property
    def output_kind(self) -> str:
        return "float" if self.output_scale is None else "int8"

    @property
    def n_params(self) -> int:
        """Logical parameters (weights and biases); scales are quantization metadata."""
        return int(self.weight.size + self.bias.size)

    def out_features(self, in_features: int) -> int:
        if in_features != self.weight.shape[1]:
            raise PolicyFormatError(f"dense_int8 layer expects {self.weight.shape[1]} inputs, gets {in_features}")
        return int(self.weight.shape[0])

    def accumulate(self, x: np.ndarray) -> np.ndarray:
        """int32 accumulator: sum((x_q - zp_in) * w_q) + bias_q."""
        return (x.astype(np.int32) - np.int32(self.input_zero_point)) @ self._w32 + self.bias

    def forward(self, x: np.ndarray) -> np.ndarray:
        acc = self.accumulate(x)
        if self._requantization is None:
            return acc.astype(np.float32) * self._acc_scale
        return self._requantize(acc)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "weight_scale": self.weight_scale, "bias": self.bias}

    def config(self) -> dict[str, Any]:
        return {
            "input_scale": self.input_scale,
            "input_zero_point": self.input_zero_point,
            "output_scale": self.output_scale,
            "output_zero_point": self.output_zero_point,
            "relu": self.relu,
        }


def hadamard(n: int) -> np.ndarray:
    """Orthonormal Sylvester Hadamard matrix H_n / sqrt(n), float32; n a power of two."""
    if n < 1 or n & (n - 1):
        raise PolicyFormatError(f"Hadamard size must be a power of two, got {n}")
    h = np.ones((1, 1), np.float64)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return (h / math.sqrt(n)).astype(np.float32)


def fwht(x: np.ndarray) -> np.ndarray:
    """Unnormalised Walsh-Hadamard transform of each row (Sylvester order), one butterfly stage at a time.

    Every output is a fixed sequence of float32 additions and subtractions, the sequence the
    ONNX, TFLite and C forms perform too, so rotated values and their signs agree bit for bit
    across backends (a dense matmul would sum in whatever order each BLAS prefers).
    """
    rows, n = x.shape
    h = 1
    while h < n:
        pairs = x.reshape(rows, n // (2 * h), 2, h)
        out = np.empty_like(pairs)
        np.add(pairs[:, :, 0], pairs[:, :, 1], out=out[:, :, 0])
        np.subtract(pairs[:, :, 0], pairs[:, :, 1], out=out[:, :, 1])
        x = out.reshape(rows, n)
        h *= 2
    return x


def halving_sum(x: np.ndarray) -> np.ndarray:
    """Row sums by repeatedly adding the second half onto the first: a summation order backends can copy."""
    while x.shape[1] > 1:
        half = x.shape[1] // 2
        x = x[:, :half] + x[:, half:]
    return x[:, 0]


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def pack_signs(signs_positive: np.ndarray) -> np.ndarray:
    """Boolean (..., n) with True for +1 -> uint8 (..., n/8), little-endian bit order per byte."""
    return np.packbits(signs_positive, axis=-1, bitorder="little")


def unpack_signs(bits: np.ndarray, n: int) -> np.ndarray:
    """uint8 (..., n/8) -> float32 (..., n) of +-1."""
    positive = np.unpackbits(bits, axis=-1, count=n, bitorder="little")
    return positive.astype(np.float32) * 2.0 - 1.0


@dataclass(eq=False)
class DenseBinary(Layer):
    """1-bit weights and 1-bit activations in a randomised Hadamard basis (QuEST deploy form)."""

    in_features: int
    sign_bits: np.ndarray  # uint8 (out, n/8): bit j of row r is 1 where (W D H)[r, j] >= 0
    weight_scale: np.ndarray  # float16 (out,): sqrt(2/pi) * rms of the rotated row
    bias: np.ndarray  # float32 (out,)
    diag_bits: np.ndarray  # uint8 (n/8): the random +-1 diagonal D, bit 1 = +1
    kind: ClassVar[str] = "dense_binary"
    array_dtypes: ClassVar[dict[str, np.dtype]] = {
        "sign_bits": np.dtype(np.uint8),
        "weight_scale": np.dtype(np.float16),
        "bias": np.dtype(np.float32),
        "diag_bits": np.dtype(np.uint8),
    }

    def __post_init__(self) -> None:
        self.in_features = int(self.in_features)
        n = self.n = next_pow2(self.in_features)
        for name, dtype in self.array_dtypes.items():
            setattr(self, name, np.asarray(getattr(self, name)))
            if getattr(self, name).dtype != dtype:
                raise PolicyFormatError(f"dense_binary {name} must be {dtype}, got {getattr(self, name).dtype}")
        out = self.bias.shape[0] if self.bias.ndim == 1 else -1
        if self.in_features < 1 or out < 1:
            raise PolicyFormatError("dense_binary needs at least one input and one output")
        if self.sign_bits.shape != (out, (n + 7) // 8) or self.weight_scale.shape != (out,):
            raise PolicyFormatError(f"dense_binary sign bits {self.sign_bits.shape} do not fit {out} rows of {n}")
        if self.diag_bits.shape != ((n + 7) // 8,):
            raise PolicyFormatError(f"dense_binary diagonal has {self.diag_bits.shape}, expected {((n + 7) // 8,)}")
        scales = self.weight_scale.astype(np.float32)
        if not (np.isfinite(scales).all() and (scales >= 0).all() and np.isfinite(self.bias).all()):
            raise PolicyFormatError("dense_binary scales must be finite and >= 0, bias finite")
        self._diagonal = unpack_signs(self.diag_bits, n)  # D as +-1 float32
        self._inv_sqrt_n = np.float32(1.0 / math.sqrt(n))
        self._weight_signs = unpack_signs(self.sign_bits, n)  # (out, n) of +-1
        self._scale = scales
        for array in (self._diagonal, self._weight_signs, self._scale):
            array.setflags(write=False)

    @property
    def diagonal(self) -> np.ndarray:
        """The random +-1 diagonal D (n,) as float32."""
        return self._diagonal

    @property
    def weight_signs(self) -> np.ndarray:
        """The rotated weights' signs (out, n) as float32 +-1."""
        return self._weight_signs

    @property
    def scales(self) -> np.ndarray:
        """Per-row weight scales s_w as float32 (stored as float16)."""
        return self._scale

    @property
    def inv_sqrt_n(self) -> np.float32:
        """1 / sqrt(n) in float32: the Hadamard transform's normalisation."""
        return self._inv_sqrt_n

    def out_features(self, in_features: int) -> int:
        if in_features != self.in_features:
            raise PolicyFormatError(f"dense_binary layer expects {self.in_features} inputs, gets {in_features}")
        return int(self.bias.shape[0])

    def rotate(self, x: np.ndarray) -> np.ndarray:
        """Pad to n, multiply by D, Walsh-Hadamard transform, scale by 1/sqrt(n): x D H_n, exactly ordered."""
        padded = np.zeros((x.shape[0], self.n), np.float32)
        padded[:, : self.in_features] = x
        return fwht(padded * self._diagonal) * self._inv_sqrt_n

    def binarize_input(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample scale s_x = c1 * sqrt(mean(r^2)) and +-1 signs of the rotated input r."""
        rotated = self.rotate(np.asarray(x, np.float32))
        mean_sq = halving_sum(rotated * rotated) * np.float32(1.0 / self.n)  # 1/n is exact: n is a power of two
        s_x = np.float32(BINARY_SCALE) * np.sqrt(mean_sq)
        return s_x.astype(np.float32), np.where(rotated >= 0, np.float32(1), np.float32(-1))

    def forward(self, x: np.ndarray) -> np.ndarray:
        s_x, signs = self.binarize_input(x)
        count = signs @ self._weight_signs.T  # exact small integers in float32
        return count * (s_x[:, None] * self._scale) + self.bias

    def forward_popcount(self, x: np.ndarray) -> np.ndarray:
        """The same result through XNOR/popcount on packed bits, as firmware computes it."""
        s_x, signs = self.binarize_input(x)
        x_bits = pack_signs(signs > 0)
        differing = np.bitwise_xor(x_bits[:, None, :], self.sign_bits[None, :, :])
        popcount = np.unpackbits(differing, axis=-1).sum(axis=-1, dtype=np.int32)
        count = (self.n - 2 * popcount).astype(np.float32)
        return count * (s_x[:, None] * self._scale) + self.bias

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "sign_bits": self.sign_bits,
            "weight_scale": self.weight_scale,
            "bias": self.bias,
            "diag_bits": self.diag_bits,
        }

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features}

    @property
    def n_params(self) -> int:
        """Logical parameters: one per real weight (stored as a bit) and the biases; scales are metadata."""
        return int(self.bias.shape[0]) * (self.in_features + 1)
