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

LayerNorm layers keep their blocks column-centred, with the column means in a constant offset row
(`offsets`): the true block is `block + offset`. LayerNorm ignores a shift shared by all its
inputs, and gradients through it have zero column sums, so updates keep the blocks centred and
the offset never changes; the forward pass then skips the centring (two numpy calls per layer,
four per step).
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
        self.offsets = np.zeros(sum(s.n_in + 1 for s in specs), np.float32)  # rows added back to LN blocks
        starts = np.cumsum([0] + [s.n_in + 1 for s in specs])
        self._offset_rows = [
            self.offsets[a:b] if s.layernorm else None for s, a, b in zip(specs, starts[:-1], starts[1:], strict=True)
        ]
        self._weights = [block[:, :-1] for block in self.blocks]  # views, made once: slicing costs per step
        self._backward = [  # hidden layers, last first: what add_grad needs, looked up once
            (i, ACTIVATIONS.index(s.activation), s.layernorm, s.n_out, self._weights[i])
            for i, s in reversed(list(enumerate(specs[:-1])))
        ]
        self._buffers: dict[int, list] = {}

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

    def centre(self) -> None:
        """Move each LayerNorm block's column means into its offset row (the function is unchanged)."""
        for block, row in zip(self.blocks, self._offset_rows, strict=True):
            if row is not None:
                means = block.mean(axis=0, dtype=np.float64).astype(np.float32)
                block -= means
                row += means

    def true_block(self, i: int) -> np.ndarray:
        """Layer i's [W | b] as the network computes it (centred block plus its offset row)."""
        row = self._offset_rows[i]
        return self.blocks[i] + row if row is not None else self.blocks[i].copy()

    def weight(self, i: int) -> np.ndarray:
        return self.true_block(i)[:, :-1]

    def bias(self, i: int) -> np.ndarray:
        return self.true_block(i)[:, -1]

    def torch_order(self, flat: np.ndarray | None = None) -> np.ndarray:
        """`flat` (default: the true parameters) as W0, b0, W1, b1, ..., the order of torch parameters."""
        blocks = [self.true_block(i) for i in range(len(self.specs))] if flat is None else self.views(flat)
        return np.concatenate([part for b in blocks for part in (b[:, :-1].ravel(), b[:, -1])])

    def load_torch_order(self, values: np.ndarray, flat: np.ndarray | None = None) -> None:
        """The inverse of `torch_order`: write W0, b0, W1, b1, ... into `flat` (default: the parameters)."""
        offset = 0
        for s, block in zip(self.specs, self.blocks if flat is None else self.views(flat), strict=True):
            block[:, :-1] = values[offset : offset + s.n_out * s.n_in].reshape(s.n_out, s.n_in)
            offset += s.n_out * s.n_in
            block[:, -1] = values[offset : offset + s.n_out]
            offset += s.n_out
        if flat is None:
            self.offsets[:] = 0.0
            self.centre()

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
        self.offsets[:] = 0.0
        self.centre()

    def forward(self, x: np.ndarray, slot: int = 0) -> tuple[np.ndarray, list]:
        """Q-values of one normalised observation (float32) and the cache the backward pass needs.

        The cache holds each layer's input (with its trailing 1), its post-LayerNorm values and
        1/sigma, in buffers preallocated per `slot`: the act-time forward (slot 0) must survive
        the target forward (slot 1) until the update reads it. LayerNorm needs no centring (the
        blocks are centred); scalar arithmetic runs on Python floats, cheaper than numpy scalars.
        """
        first, hidden, head = self._plan(slot)
        first[:] = x
        cache = []
        for block, n, layernorm, act, z, h, body in hidden:
            np.dot(block, h, out=z)
            inv = None
            if layernorm:
                inv = 1.0 / math.sqrt(float(np.dot(z, z)) / n + 1e-5)
                z *= inv
            cache.append((h, z, inv))
            if act == 0:
                np.maximum(z, z * SLOPE, out=body)  # = LeakyReLU for a slope below 1
            elif act == 1:
                np.maximum(z, np.float32(0), out=body)
            else:
                np.tanh(z, out=body)
        block, h = head
        cache.append((h, None, None))
        return np.dot(block, h), cache  # the Q-values: a new array, callers keep it

    def _plan(self, slot: int) -> tuple:
        """Per slot: the input view, per hidden layer (block, n_out, layernorm, activation code, output
        buffer, its input buffer, the next input's view), and the head (block, its input buffer)."""
        plan = self._buffers.get(slot)
        if plan is None:
            inputs = []
            for s in self.specs:
                h = np.empty(s.n_in + 1, np.float32)
                h[-1] = 1.0
                inputs.append(h)
            hidden = [
                (
                    self.blocks[i],
                    s.n_out,
                    s.layernorm,
                    ACTIVATIONS.index(s.activation),
                    np.empty(s.n_out, np.float32),
                    inputs[i],
                    inputs[i + 1][:-1],
                )
                for i, s in enumerate(self.specs[:-1])
            ]
            plan = self._buffers[slot] = (inputs[0][:-1], hidden, (self.blocks[-1], inputs[-1]))
        return plan

    def add_grad(self, cache: list, action: int, out: list[np.ndarray]) -> None:
        """Add d Q[action] / d theta to `out` (block views from `views`), from a `forward` cache."""
        out[-1][action] += cache[-1][0]
        gh = self._weights[-1][action]
        for i, act, layernorm, n, weight in self._backward:
            h, y, inv = cache[i]
            if act == 0:  # LeakyReLU: derivative 1 above 0, the slope at and below 0 (as the spec asks)
                gy = gh * np.maximum(np.sign(y), SLOPE)
            elif act == 1:
                gy = gh * (y > 0)
            else:
                gy = gh * (np.float32(1) - np.tanh(y) ** 2)
            if layernorm:
                gy -= float(_sum(gy)) / n
                gy -= y * np.float32(float(np.dot(gy, y)) / n)
                gy *= inv
            out[i] += gy[:, None] * h
            if i:
                gh = np.dot(gy, weight)

    def grad(self, cache: list, action: int) -> np.ndarray:
        """d Q[action] / d theta as a new flat float32 array (theta's layout)."""
        g = np.zeros_like(self.theta)
        self.add_grad(cache, action, self.views(g))
        return g
