"""The Q-network of the streaming learner: float32, one flat parameter buffer, hand-written backward.

Hidden layers are Dense -> LayerNorm (no affine, eps 1e-5, biased variance over the features)
-> LeakyReLU(0.01), as stream Q(lambda) prescribes; adapted policies may bring ReLU or no
LayerNorm, so both are per-layer options. The backward pass computes the gradient of one
Q-value (the action taken) with respect to every parameter, reusing the act-time forward.
LeakyReLU's derivative at exactly 0 is the slope (0.01): the sparse-initialised CartPole first
layer starts all zero and learns only through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LN_EPS = np.float32(1e-5)
SLOPE = np.float32(0.01)
ACTIVATIONS = ("leaky_relu", "relu", "tanh")


@dataclass(frozen=True)
class LayerSpec:
    """One dense layer: widths, whether LayerNorm follows, which activation (None for the Q head)."""

    n_in: int
    n_out: int
    layernorm: bool
    activation: str | None


class StreamNet:
    """Parameters live in `theta` (float32); `weights[i]`, `biases[i]` are views into it."""

    def __init__(self, specs: list[LayerSpec]) -> None:
        for s in specs[:-1]:
            if s.activation not in ACTIVATIONS:
                raise ValueError(f"unknown activation {s.activation!r}")
        self.specs = specs
        sizes = [s.n_out * s.n_in + s.n_out for s in specs]
        self.theta = np.zeros(sum(sizes), np.float32)
        self.slices: list[tuple[slice, slice]] = []
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        offset = 0
        for s in specs:
            w = slice(offset, offset + s.n_out * s.n_in)
            b = slice(w.stop, w.stop + s.n_out)
            self.slices.append((w, b))
            self.weights.append(self.theta[w].reshape(s.n_out, s.n_in))
            self.biases.append(self.theta[b])
            offset = b.stop

    @classmethod
    def mlp(cls, sizes: list[int], layernorm: bool = True, activation: str = "leaky_relu") -> StreamNet:
        last = len(sizes) - 2
        return cls(
            [
                LayerSpec(a, b, layernorm and i < last, activation if i < last else None)
                for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
            ]
        )

    def sparse_init(self, rng: np.random.Generator, sparsity: float = 0.9) -> None:
        """U(+-1/sqrt(fan_in)) weights with exactly ceil(sparsity * fan_in) zeros per unit; zero biases."""
        for s, w, b in zip(self.specs, self.weights, self.biases, strict=True):
            bound = 1.0 / math.sqrt(s.n_in)
            w[:] = rng.uniform(-bound, bound, size=w.shape)
            zeros = math.ceil(sparsity * s.n_in)
            for row in w:
                row[rng.permutation(s.n_in)[:zeros]] = 0.0
            b[:] = 0.0

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list]:
        """Q-values of one normalised observation (float32) and the cache the backward pass needs."""
        cache = []
        h = x
        for s, w, b in zip(self.specs, self.weights, self.biases, strict=True):
            z = w @ h + b
            if s.activation is None:
                cache.append((h, None, None))
                return z, cache
            inv = None
            if s.layernorm:
                c = z - z.mean()
                inv = np.float32(1.0) / np.sqrt((c * c).mean() + LN_EPS)
                z = c * inv
            cache.append((h, z, inv))
            if s.activation == "leaky_relu":
                h = np.where(z > 0, z, z * SLOPE)
            elif s.activation == "relu":
                h = np.maximum(z, np.float32(0))
            else:
                h = np.tanh(z)
        raise AssertionError("the last layer is the Q head")

    def grad(self, cache: list, action: int) -> np.ndarray:
        """d Q[action] / d theta, flat float32, from a `forward` cache."""
        g = np.zeros_like(self.theta)
        h_last = cache[-1][0]
        w_slice, b_slice = self.slices[-1]
        n_in = self.specs[-1].n_in
        g[w_slice][action * n_in : (action + 1) * n_in] = h_last
        g[b_slice][action] = 1.0
        gh = self.weights[-1][action].copy()
        for i in range(len(self.specs) - 2, -1, -1):
            s, (h, y, inv) = self.specs[i], cache[i]
            if s.activation == "leaky_relu":
                gy = np.where(y > 0, gh, gh * SLOPE)
            elif s.activation == "relu":
                gy = np.where(y > 0, gh, np.float32(0))
            else:
                gy = gh * (np.float32(1) - np.tanh(y) ** 2)
            gz = inv * (gy - gy.mean() - y * (gy * y).mean()) if s.layernorm else gy
            w_slice, b_slice = self.slices[i]
            g[w_slice] = np.outer(gz, h).ravel()
            g[b_slice] = gz
            gh = self.weights[i].T @ gz
        return g
