"""int8 post-training quantization of dense layers (numpy only).

Weights: symmetric per output channel, s_w = max|W_row| / 127, codes in [-127, 127] (the -128
code is left unused, as TFLite's spec asks). Biases: int32 at scale s_in * s_w. Activations:
asymmetric per tensor, calibrated on recorded states with one of three range estimators:
`minmax` (the full observed range), `percentile` (drops the rarest outliers; the default) or
`mse` (the clipping threshold with the least quantization error on the recorded values).

The Q-value head is stored split (`split_value_row`): the row all actions share, then each
action's difference from it, each row with its own scale. Q-values are large and their gaps
small (CartPole: ~40 vs ~0.3; Hover: ~25 vs ~0.03), so one scale per full row would round the
gaps away; after the split only the shared value carries the coarse grid, and it cancels in
the argmax (`edge_rl.layers.DuelingSum` adds it back).
"""

from __future__ import annotations

import numpy as np

from edge_rl.layers import Dense
from edge_rl.qlayers import INT8_MAX, INT8_MIN, DenseInt8

CALIBRATION_METHODS = ("minmax", "percentile", "mse")


def activation_qparams(values: np.ndarray, method: str = "percentile", percentile: float = 99.99) -> tuple[float, int]:
    """Scale and zero point that cover the calibrated range of `values` (0 always representable)."""
    v = np.asarray(values, np.float64).ravel()
    if method == "minmax":
        lo, hi = v.min(), v.max()
    elif method == "percentile":
        lo, hi = np.percentile(v, 100.0 - percentile), np.percentile(v, percentile)
    elif method == "mse":
        lo, hi = _mse_range(v)
    else:
        raise ValueError(f"unknown calibration method {method!r}; known: {', '.join(CALIBRATION_METHODS)}")
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = max((hi - lo) / (INT8_MAX - INT8_MIN), 1e-8)
    zero_point = int(np.clip(np.rint(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX))
    return scale, zero_point


def _mse_range(v: np.ndarray, candidates: int = 64) -> tuple[float, float]:
    """Shrink the min/max range by a common factor; keep the factor with the least squared error."""
    lo, hi = min(v.min(), 0.0), max(v.max(), 0.0)
    best, best_err = (lo, hi), np.inf
    for frac in np.linspace(0.3, 1.0, candidates):
        c_lo, c_hi = lo * frac, hi * frac
        scale = max((c_hi - c_lo) / 255.0, 1e-12)
        zp = np.clip(np.rint(INT8_MIN - c_lo / scale), INT8_MIN, INT8_MAX)
        q = np.clip(np.rint(v / scale) + zp, INT8_MIN, INT8_MAX)
        err = np.mean(((q - zp) * scale - v) ** 2)
        if err < best_err:
            best, best_err = (c_lo, c_hi), err
    return best


def quantize_weights(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 codes and float32 scales."""
    w = np.asarray(weight, np.float32)
    scale = np.maximum(np.abs(w).max(axis=1) / INT8_MAX, np.float32(1e-12)).astype(np.float32)
    codes = np.clip(np.rint(w / scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return codes, scale


def split_value_row(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, in) head -> (1 + n, in): the mean row first, then every row minus it (same for the bias)."""
    w, b = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
    w_v, b_v = w.mean(axis=0, keepdims=True), b.mean(keepdims=True)
    return np.concatenate([w_v, w - w_v]), np.concatenate([b_v, b - b_v])


def int8_dense(
    dense: Dense,
    input_qparams: tuple[float, int],
    output_qparams: tuple[float, int] | None,
    relu: bool,
) -> DenseInt8:
    """Quantize one fp32 dense layer; `output_qparams=None` gives a float (dequantized) output."""
    codes, w_scale = quantize_weights(dense.weight)
    in_scale, in_zp = input_qparams
    acc_scale = np.float64(np.float32(in_scale)) * w_scale.astype(np.float64)
    bias = np.clip(np.rint(dense.bias / acc_scale), np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
    out_scale, out_zp = output_qparams if output_qparams is not None else (None, 0)
    return DenseInt8(codes, w_scale, bias, in_scale, in_zp, out_scale, out_zp, relu=relu and output_qparams is not None)
