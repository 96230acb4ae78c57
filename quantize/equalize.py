"""Range equalisation before int8 quantization (cross-layer scaling, Nagel et al. 2019), numpy only.

ReLU and LeakyReLU commute with positive scaling, relu(s * z) = s * relu(z), so multiplying row j
of a dense layer (and its bias) by s_j and column j of the next dense layer by 1 / s_j leaves the
network's function unchanged. The next layer quantizes its input with one per-tensor scale, set
by its widest channel; choosing s_j so that every channel's calibrated range is the same gives
the narrow channels the whole int8 grid instead of a few codes. The producing layer's per-row
weight scales absorb the row factors, so its int8 codes do not change.

The observation gets the same treatment when the first layer is int8: the per-feature
normalisation scale (1 / sqrt(var + eps)) takes s_j and the first layer's column j takes
1 / s_j. That is exact up to the observation clip, which now cuts feature j at clip / s_j
instead of clip standard deviations; the int8 input quantizer saturates at the common range
first, far inside both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_rl.layers import Activation, Dense, Layer
from edge_rl.policy import ObservationSpec, Policy
from quantize.convert import blocks


def _homogeneous(post: list[Layer]) -> bool:
    """True if the layers after a dense layer commute with positive per-channel scaling."""
    return all(isinstance(p, Activation) and p.fn in ("relu", "leaky_relu") for p in post)


def equalize_ranges(
    policy: Policy, states: np.ndarray, plan: Sequence[str] | None = None, percentile: float = 99.99
) -> Policy:
    """The same function with every hidden channel's calibrated range equal, where that is exact.

    A channel between dense layers i and i + 1 is rescaled only if the layers between them are
    ReLU/LeakyReLU and layer i + 1 quantizes its input per tensor (`plan[i + 1]` is "int8"; a
    1-bit layer normalises its input per sample, so scaling would change what it computes).
    Channels that never activate on `states` keep their scale.
    """
    parts = blocks(policy)
    plan = list(plan) if plan is not None else ["int8"] * len(parts)
    weights = [d.weight.astype(np.float64) for d, _ in parts]
    biases = [d.bias.astype(np.float64) for d, _ in parts]
    obs = policy.observation
    x = obs.normalize(np.asarray(states, np.float32).reshape(len(states), -1)).astype(np.float64)
    if plan[0] == "int8":
        s = _channel_scales(x, percentile)
        std = np.sqrt(obs.var.astype(np.float64).ravel() + obs.eps) / s
        var = np.maximum(std * std - obs.eps, 0.0).reshape(obs.shape)
        obs = ObservationSpec(obs.shape, obs.low, obs.high, obs.mean, var, obs.clip, obs.eps, obs.names)
        weights[0] /= s[None, :]
        x = obs.normalize(np.asarray(states, np.float32).reshape(len(states), -1)).astype(np.float64)
    for i, (_, post) in enumerate(parts[:-1]):
        h = x @ weights[i].T + biases[i]
        for p in post:
            h = p.forward(h)
        if plan[i + 1] == "int8" and _homogeneous(post):
            s = _channel_scales(h, percentile)
            weights[i] *= s[:, None]
            biases[i] *= s
            weights[i + 1] /= s[None, :]
            h *= s
        x = h
    dense = iter(Dense(w.astype(np.float32), b.astype(np.float32)) for w, b in zip(weights, biases, strict=True))
    layers = [next(dense) if isinstance(layer, Dense) else layer for layer in policy.layers]
    return Policy(obs, policy.action, layers, policy.metadata)


def _channel_scales(x: np.ndarray, percentile: float) -> np.ndarray:
    """Per-column factors that bring every live column's |x| percentile to their median (dead: 1)."""
    ranges = np.percentile(np.abs(x), percentile, axis=0)
    live = ranges > 1e-9
    if not live.any():
        return np.ones(x.shape[1])
    return np.where(live, np.median(ranges[live]) / np.where(live, ranges, 1.0), 1.0)
