"""The Q-network of the streaming learner: float32, one flat parameter buffer, hand-written backward.

Hidden layers are Dense -> LayerNorm (no affine, eps 1e-5, biased variance over the features)
-> LeakyReLU(0.01), as stream Q(lambda) prescribes; adapted policies may bring ReLU or no
LayerNorm, so both are per-layer options. The backward pass computes the gradient of one
Q-value (the action taken) with respect to every parameter, reusing the act-time forward.
LeakyReLU's derivative at exactly 0 is the slope (0.01): the sparse-initialised CartPole first
layer starts all zero and learns only through it.

Layout: each layer is one row-major block [W | b] of shape (n_out, n_in + 1) in `theta`, and
every layer input carries a trailing 1, so a layer is one matrix-vector product and its
gradient one outer product: this runs twice (forward) and once (backward) per control step,
where the cost is the number of numpy calls, not arithmetic. `torch_order` converts to the
(W, b, W, b, ...) order of a torch module's parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

SLOPE = np.float32(0.01)
ACTIVATIONS = ("leaky_relu", "relu", "tanh")
_sum = np.add.reduce  # ndarray.sum goes through a Python wrapper: ~1 us per call on the hot path


@dataclass(frozen=True)
class LayerSpec:
    """One dense layer: widths, whether LayerNorm follows, which activation (None for the Q head)."""

    n_in: int
    n_out: int
    layernorm: bool
    activation: str | None


class StreamNet:
    """Parameters live in `theta` (float32); `blocks[i]` is layer i's [W | b] view into it."""

    def __init__(self, specs: list[LayerSpec]) -> None:
        for s in specs[:-1]:
            if s.activation not in ACTIVATIONS:
                raise ValueError(f"unknown activation {s.activation!r}")
        self.specs = specs
        self.theta = np.zeros(sum(s.n_out * (s.n_in + 1) for s in specs), np.float32)
        self.blocks = self.views(self.theta)
        self._weights = [block[:, :-1] for block in self.blocks]  # views, made once: slicing costs per step
        self._buffers: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}

    @classmethod
    def mlp(cls, sizes: list[int], layernorm: bool = True, activation: str = "leaky_relu") -> StreamNet:
        last = len(sizes) - 2
        return cls(
            [
                LayerSpec(a, b, layernorm and i < last, activation if i < last else None)
                for i, (a, b) in enumerate(pairwise(sizes))
            ]
        )

    def views(self, flat: np.ndarray) -> list[np.ndarray]:
        """(n_out, n_in + 1) [W | b] views of a flat array laid out like `theta` (e.g. the trace)."""
        out, offset = [], 0
        for s in self.specs:
            size = s.n_out * (s.n_in + 1)
            out.append(flat[offset : offset + size].reshape(s.n_out, s.n_in + 1))
            offset += size
        return out

    def weight(self, i: int) -> np.ndarray:
        return self.blocks[i][:, :-1]

    def bias(self, i: int) -> np.ndarray:
        return self.blocks[i][:, -1]

    def torch_order(self, flat: np.ndarray | None = None) -> np.ndarray:
        """`flat` (default theta) as W0, b0, W1, b1, ... concatenated, the order of torch parameters."""
        blocks = self.blocks if flat is None else self.views(flat)
        return np.concatenate([part for b in blocks for part in (b[:, :-1].ravel(), b[:, -1])])

    def load_torch_order(self, values: np.ndarray, flat: np.ndarray | None = None) -> None:
        """The inverse of `torch_order`: write W0, b0, W1, b1, ... into `flat` (default theta)."""
        offset = 0
        for s, block in zip(self.specs, self.blocks if flat is None else self.views(flat), strict=True):
            block[:, :-1] = values[offset : offset + s.n_out * s.n_in].reshape(s.n_out, s.n_in)
            offset += s.n_out * s.n_in
            block[:, -1] = values[offset : offset + s.n_out]
            offset += s.n_out

    def sparse_init(self, rng: np.random.Generator, sparsity: float = 0.9) -> None:
        """U(+-1/sqrt(fan_in)) weights with exactly ceil(sparsity * fan_in) zeros per unit; zero biases."""
        for i, s in enumerate(self.specs):
            bound = 1.0 / math.sqrt(s.n_in)
            w = rng.uniform(-bound, bound, size=(s.n_out, s.n_in))
            zeros = math.ceil(sparsity * s.n_in)
            for row in w:
                row[rng.permutation(s.n_in)[:zeros]] = 0.0
            self.blocks[i][:, :-1] = w
            self.blocks[i][:, -1] = 0.0

    def forward(self, x: np.ndarray, slot: int = 0) -> tuple[np.ndarray, list]:
        """Q-values of one normalised observation (float32) and the cache the backward pass needs.

        The cache holds each layer's input (with its trailing 1), its post-LayerNorm values and
        1/sigma, in buffers preallocated per `slot`: the act-time forward (slot 0) must survive
        the target forward (slot 1) until the update reads it. Scalar arithmetic runs on Python
        floats, cheaper than numpy scalars.
        """
        inputs = self._inputs(slot)
        h, body, _ = inputs[0]
        body[:] = x
        cache = []
        for i, (s, block) in enumerate(zip(self.specs, self.blocks, strict=True)):
            if s.activation is None:  # the Q-values: a new array, callers keep it
                cache.append((h, None, None))
                return np.dot(block, h), cache
            z = np.dot(block, h, out=inputs[i][2])
            inv = None
            if s.layernorm:
                z -= float(_sum(z)) / s.n_out
                inv = 1.0 / math.sqrt(float(np.dot(z, z)) / s.n_out + 1e-5)
                z *= inv
            cache.append((h, z, inv))
            h, body, _ = inputs[i + 1]
            if s.activation == "leaky_relu":
                np.maximum(z, z * SLOPE, out=body)  # = LeakyReLU for a slope below 1
            elif s.activation == "relu":
                np.maximum(z, np.float32(0), out=body)
            else:
                np.tanh(z, out=body)
        raise AssertionError("the last layer is the Q head")

    def _inputs(self, slot: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per layer: input buffer with the trailing 1, a view of the rest, the output buffer; once per slot."""
        buffers = self._buffers.get(slot)
        if buffers is None:
            buffers = []
            for s in self.specs:
                h = np.empty(s.n_in + 1, np.float32)
                h[-1] = 1.0
                buffers.append((h, h[:-1], np.empty(s.n_out, np.float32)))
            self._buffers[slot] = buffers
        return buffers

    def add_grad(self, cache: list, action: int, out: list[np.ndarray]) -> None:
        """Add d Q[action] / d theta to `out` (block views from `views`), from a `forward` cache."""
        out[-1][action] += cache[-1][0]
        gh = self._weights[-1][action]
        for i in range(len(self.specs) - 2, -1, -1):
            s, (h, y, inv) = self.specs[i], cache[i]
            if s.activation == "leaky_relu":  # derivative 1 above 0, the slope at and below 0
                gy = gh * np.maximum(np.sign(y), SLOPE)
            elif s.activation == "relu":
                gy = gh * (y > 0)
            else:
                gy = gh * (np.float32(1) - np.tanh(y) ** 2)
            if s.layernorm:
                gy -= float(_sum(gy)) / s.n_out
                gy -= y * np.float32(float(np.dot(gy, y)) / s.n_out)
                gy *= inv
            out[i] += gy[:, None] * h
            if i:
                gh = np.dot(gy, self._weights[i])

    def grad(self, cache: list, action: int) -> np.ndarray:
        """d Q[action] / d theta as a new flat float32 array (theta's layout)."""
        g = np.zeros_like(self.theta)
        self.add_grad(cache, action, self.views(g))
        return g
