"""1-bit dense layers in the QuEST deploy form (numpy only).

The weight matrix is padded to a power-of-two input width n, multiplied by a fixed random +-1
diagonal D (it spreads the all-positive ReLU inputs so the first Hadamard coefficient is not an
outlier) and rotated by the orthonormal Hadamard H_n. Each rotated row keeps only its signs and
one scale, sqrt(2/pi) * rms(row): the MSE-optimal 1-bit scale for Gaussian-like rows, which the
rotation makes them. The scale is stored in float16 so 1-bit weights cost 1 bit + 16 bits per
row; the torch fake-quant (`quantize.qat`) rounds it the same way, so training and deployment
see identical numbers.
"""

from __future__ import annotations

import numpy as np

from edge_rl.layers import Dense
from edge_rl.qlayers import BINARY_SCALE, DenseBinary, hadamard, next_pow2, pack_signs


def random_diagonal(n: int, seed: int) -> np.ndarray:
    """The fixed +-1 diagonal D of a binary layer (float32), reproducible from its seed."""
    return np.where(np.random.default_rng(seed).random(n) < 0.5, np.float32(-1), np.float32(1))


def rotation(in_features: int, seed: int) -> np.ndarray:
    """D @ H_n (float32, n x n) for a layer with `in_features` inputs."""
    n = next_pow2(in_features)
    return random_diagonal(n, seed)[:, None] * hadamard(n)


def rotated_weight(weight: np.ndarray, seed: int) -> np.ndarray:
    """W padded to n columns, in the rotated basis: W_pad @ D @ H_n."""
    out, in_features = weight.shape
    padded = np.zeros((out, next_pow2(in_features)), np.float32)
    padded[:, :in_features] = weight
    return padded @ rotation(in_features, seed)


def row_scale(rotated: np.ndarray) -> np.ndarray:
    """sqrt(2/pi) * rms per row, rounded to float16 (the stored precision)."""
    rms = np.sqrt(np.mean(rotated.astype(np.float32) ** 2, axis=1, dtype=np.float32))
    return (np.float32(BINARY_SCALE) * rms).astype(np.float16)


def binary_dense(dense: Dense, seed: int) -> DenseBinary:
    """Binarise an fp32 dense layer (its float weights are the QAT shadow weights)."""
    in_features = dense.weight.shape[1]
    n = next_pow2(in_features)
    rotated = rotated_weight(dense.weight, seed)
    return DenseBinary(
        in_features=in_features,
        sign_bits=pack_signs(rotated >= 0),
        weight_scale=row_scale(rotated),
        bias=dense.bias.astype(np.float32),
        diag_bits=pack_signs(random_diagonal(n, seed) > 0),
    )
