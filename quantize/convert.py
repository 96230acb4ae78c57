"""Turn an fp32 policy IR into a mixed-precision one, layer by layer, calibrating as deployed.

A plan gives each dense layer a precision: "fp32", "int8" or "1bit". Layers are converted in
order, and every activation range is measured by running the *already converted* prefix on the
calibration states, so each layer is calibrated on the inputs it will really see on a device.
Between two int8 layers the activations stay int8 (requantization with a fused ReLU); an int8
layer that feeds anything else, or is the last, emits float values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from edge_rl.errors import BadInput
from edge_rl.layers import Activation, Dense, DuelingSum, Layer, LayerNorm
from edge_rl.policy import Policy
from edge_rl.qlayers import DenseInt8, Quantize
from quantize.binary import binary_dense
from quantize.int8 import activation_qparams, int8_dense, split_value_row

PRECISIONS = ("fp32", "int8", "1bit")


class QuantizeError(BadInput):
    """The policy cannot be quantized as asked."""


def blocks(policy: Policy) -> list[tuple[Dense, list[Layer]]]:
    """Split a float MLP into (dense, following non-dense layers) blocks."""
    out: list[tuple[Dense, list[Layer]]] = []
    for layer in policy.layers:
        if isinstance(layer, Dense):
            out.append((layer, []))
        elif out and isinstance(layer, (Activation, LayerNorm)):
            out[-1][1].append(layer)
        else:
            raise QuantizeError(f"only fp32 dense/layernorm/activation policies can be quantized, found {layer.kind}")
    return out


def default_plan(n_dense: int, precision: str) -> list[str]:
    """int8 everywhere, or 1-bit hidden layers between int8 first and last layers."""
    if precision == "1bit":
        if n_dense < 3:
            raise QuantizeError("1-bit needs at least two hidden layers (first and last layers stay int8)")
        return ["int8"] + ["1bit"] * (n_dense - 2) + ["int8"]
    return [precision] * n_dense


def quantize_policy(
    policy: Policy,
    states: np.ndarray,
    plan: Sequence[str],
    method: str = "percentile",
    seed: int = 0,
    input_qparams: Mapping[int, tuple[float, int]] | None = None,
    correct_bias: bool = False,
) -> Policy:
    """Convert `policy` following `plan`, calibrating on raw observations `states` (N, *obs_shape).

    `input_qparams` fixes the input (scale, zero point) of int8 layers by index instead of
    calibrating them: after quantization-aware training the deployed ranges must be the ones the
    network was trained with, not a fresh calibration of its final weights. `correct_bias`
    (post-training quantization) shifts each int8 layer's bias by the mean error of its output
    against the fp32 layer on the calibration states (empirical bias correction, Nagel et al.
    2019), so rounding errors that every state shares do not bias one action over another.
    An int8 head with several actions is stored split into a shared value row and per-action
    difference rows (`quantize.int8.split_value_row`) followed by `DuelingSum`.
    """
    fixed = dict(input_qparams or {})
    parts = blocks(policy)
    if len(plan) != len(parts) or any(p not in PRECISIONS for p in plan):
        raise QuantizeError(f"plan {list(plan)} must give one of {PRECISIONS} for each of {len(parts)} dense layers")
    if len(states) < 16:
        raise QuantizeError(f"need at least 16 calibration states, got {len(states)}")
    x = policy.observation.normalize(np.asarray(states, np.float32).reshape(len(states), -1))
    x_ref = x  # the fp32 network's activations, the bias-correction target
    layers: list[Layer] = []
    in_qparams: tuple[float, int] | None = None  # set while activations are int8
    for i, ((dense, post), precision) in enumerate(zip(parts, plan, strict=True)):
        if precision == "int8":
            relu_only = all(isinstance(p, Activation) and p.fn == "relu" for p in post) and len(post) <= 1
            if not relu_only:
                raise QuantizeError(
                    f"int8 layer {i} must be followed by nothing or a ReLU, not {[p.kind for p in post]}"
                )
            if in_qparams is None:
                in_qparams = fixed.get(i) or activation_qparams(x, method)
                layers.append(Quantize(*in_qparams))
                x = layers[-1].forward(x)
            next_int8 = i + 1 < len(plan) and plan[i + 1] == "int8"
            head = i == len(plan) - 1 and dense.weight.shape[0] > 1
            source = Dense(*split_value_row(dense.weight, dense.bias)) if head else dense
            out_qparams = None
            if next_int8 and i + 1 in fixed:
                out_qparams = fixed[i + 1]
            elif next_int8:  # calibrate the requantization on this layer's float output
                probe = int8_dense(source, in_qparams, None, relu=False).forward(x)
                out_qparams = activation_qparams(np.maximum(probe, 0) if post else probe, method)
            layer = int8_dense(source, in_qparams, out_qparams, relu=bool(post))
            if correct_bias:
                layer = _correct_bias(layer, x, dense.forward(x_ref), head)
            new = [layer, DuelingSum()] if head else [layer]
            if not next_int8:
                new += post
            in_qparams = out_qparams
        else:
            new = [dense if precision == "fp32" else binary_dense(dense, seed + i), *post]
        for layer in new:
            x = layer.forward(x)
        for layer in (dense, *post):
            x_ref = layer.forward(x_ref)
        layers += new
    meta = {
        **policy.metadata,
        "quantization": {"plan": list(plan), "calibration": method, "seed": seed, "bias_correction": correct_bias},
    }
    return Policy(policy.observation, policy.action, layers, meta)


def _correct_bias(layer: DenseInt8, x_q: np.ndarray, target: np.ndarray, head: bool) -> DenseInt8:
    """`layer` with its int32 bias shifted by the mean of target - output per channel (in accumulator units).

    For a split head the output is compared as Q-values, and the correction goes to the
    per-action rows: the shared row stays as it is.
    """
    acc_scale = np.float64(np.float32(layer.input_scale)) * layer.weight_scale.astype(np.float64)
    out = layer.accumulate(x_q) * acc_scale
    if head:
        error = (target - (out[:, :1] + out[:, 1:])).mean(axis=0)
        error = np.concatenate([[0.0], error])
    else:
        error = (target - out).mean(axis=0)
    bias = layer.bias.astype(np.int64) + np.rint(error / acc_scale).astype(np.int64)
    return replace(layer, bias=np.clip(bias, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32))
