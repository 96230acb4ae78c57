"""The Q-network of the streaming learner: float32, one flat parameter buffer, hand-written backward.

Hidden layers are Dense -> LayerNorm (no affine, eps 1e-5, biased variance over the features)
-> LeakyReLU(0.01), as stream Q(lambda) prescribes; adapted policies may bring ReLU, tanh or no
LayerNorm, so those are per-layer options. The backward pass computes the gradient of one
Q-value (the action taken) with respect to every parameter, reusing the act-time forward.
LeakyReLU's derivative at exactly 0 is the slope (0.01): the sparse-initialised CartPole first
layer starts all zero and learns only through it.

Why it is laid out like this: at this size (a 5-32-32-2 network has 1,314 parameters) a control
step costs what its numpy calls cost, ~0.3 us for an elementwise call on arrays and ~0.6 us for
a small BLAS call, while arithmetic is nearly free; Python scalars inside a ufunc call cost a
conversion each. So:
- each layer is one row-major block [W | b] of shape (n_out, n_in + 1) in `theta`, and every
  layer input carries a trailing 1: a layer is one matrix-vector product, its gradient one
  outer product;
- LayerNorm layers keep their blocks column-centred, with the column means in a constant offset
  row (`offsets`; the true block is `block + offset`). LayerNorm ignores a shift shared by all
  its inputs and gradients through it have zero column sums, so updates keep the blocks centred,
  the offset never changes, and the forward pass skips the centring;
- the LayerNorm scale 1/sigma is positive, so LeakyReLU(z / sigma) = LeakyReLU(z) / sigma: the
  forward never materialises the normalised values, and the LayerNorm backward
  inv * (g - mean(g) - y mean(g y)) is one 3-term matrix-vector product over rows [g; 1; z];
- every buffer is preallocated per `slot` (the act-time forward, slot 0, must survive the target
  forward, slot 1, until the update reads it) and scalars enter ufuncs as 0-d arrays.
`torch_order` converts to the (W, b, W, b, ...) order of a torch module's parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

import numpy as np

SLOPE = 0.01
LN_EPS = 1e-5
ACTIVATIONS = ("leaky_relu", "relu", "tanh")
_F32 = np.float32


@dataclass(frozen=True)
class LayerSpec:
    """One dense layer: widths, whether LayerNorm follows, which activation (None for the Q head)."""

    n_in: int
    n_out: int
    layernorm: bool
    activation: str | None


class _Hidden(NamedTuple):
    """One hidden layer's buffers in one slot (a tuple: unpacking it is the cheapest access)."""

    index: int
    block: np.ndarray  # [W | b] (n_out, n_in + 1): a view into theta
    x: np.ndarray  # the layer's input with its trailing 1
    z: np.ndarray  # the pre-activation (centred by construction for LayerNorm layers)
    d: np.ndarray  # d activation / d y at the forward's y
    out: np.ndarray  # the activation: a view into the next layer's input
    width: int
    layernorm: bool
    tanh: bool
    floor: np.ndarray  # max(sign(z), floor) is LeakyReLU's (0.01) or ReLU's (0) derivative
    inv: np.ndarray  # 0-d: LayerNorm's 1 / sigma (1 without LayerNorm)


class _Backward(NamedTuple):
    """What the backward pass of one hidden layer needs, looked up once per slot."""

    index: int
    gy: np.ndarray  # m[0]
    m: np.ndarray  # (3, n_out) rows [dQ/dy; ones; z]: the LayerNorm backward is k @ m
    m12: np.ndarray  # m[1:]: [ones; z] @ gy = [sum(gy), gy . z]
    k: np.ndarray  # (3,) coefficients of the LayerNorm backward
    gz: np.ndarray  # dQ / dz
    gz_col: np.ndarray  # gz as a column, for the outer product
    x_row: np.ndarray  # the layer's input as a row
    grad: np.ndarray  # the layer's block of the network's gradient buffer
    d: np.ndarray
    width: int
    layernorm: bool
    block: np.ndarray
    gx: np.ndarray | None  # dQ / d input (with the trailing 1's entry), None for the first layer
    gh: np.ndarray | None  # gx without that entry: the previous layer's dQ / d activation


class Plan:
    """The buffers of one slot: forward inputs, per-layer caches and the backward's views."""

    def __init__(self, net: StreamNet) -> None:
        specs = net.specs
        inputs = []
        for s in specs:
            h = np.empty(s.n_in + 1, _F32)
            h[-1] = 1.0
            inputs.append(h)
        self.x = inputs[0][:-1]
        self.hidden: list[_Hidden] = []
        self.backward: list[_Backward] = []
        self.scales = [1.0] * (len(specs) - 1)  # LayerNorm's 1 / sigma per hidden layer, as Python floats
        for i, s in enumerate(specs[:-1]):
            m = np.empty((3, s.n_out), _F32)
            m[1] = 1.0
            layer = _Hidden(
                index=i,
                block=net.blocks[i],
                x=inputs[i],
                z=m[2],
                d=np.empty(s.n_out, _F32),
                out=inputs[i + 1][:-1],
                width=s.n_out,
                layernorm=s.layernorm,
                tanh=s.activation == "tanh",
                floor=np.full(s.n_out, SLOPE if s.activation == "leaky_relu" else 0.0, _F32),
                inv=np.ones((), _F32),
            )
            self.hidden.append(layer)
            gz = np.empty(s.n_out, _F32)
            gx = np.empty(s.n_in + 1, _F32) if i else None
            self.backward.append(
                _Backward(
                    index=i,
                    gy=m[0],
                    m=m,
                    m12=m[1:],
                    k=np.empty(3, _F32),
                    gz=gz,
                    gz_col=gz.reshape(-1, 1),
                    x_row=inputs[i].reshape(1, -1),
                    grad=net._grad_blocks[i],
                    d=layer.d,
                    width=s.n_out,
                    layernorm=s.layernorm,
                    block=net.blocks[i],
                    gx=gx,
                    gh=None if gx is None else gx[:-1],
                )
            )
        self.backward.reverse()
        self.head_block, self.head_x = net.blocks[-1], inputs[-1]
        self.head_x_row = self.head_x.reshape(1, -1)
        self.one_hot = list(np.eye(specs[-1].n_out, dtype=_F32).reshape(-1, specs[-1].n_out, 1))  # e_a as columns


class StreamNet:
    """Parameters live in `theta` (float32); `blocks[i]` is layer i's [W | b] view into it."""

    def __init__(self, specs: list[LayerSpec]) -> None:
        for s in specs[:-1]:
            if s.activation not in ACTIVATIONS:
                raise ValueError(f"unknown activation {s.activation!r}")
        self.specs = specs
        self.theta = np.zeros(sum(s.n_out * (s.n_in + 1) for s in specs), _F32)
        self.blocks = self.views(self.theta)
        self.offsets = np.zeros(sum(s.n_in + 1 for s in specs), _F32)  # rows added back to LN blocks
        starts = np.cumsum([0] + [s.n_in + 1 for s in specs])
        self._offset_rows = [
            self.offsets[a:b] if s.layernorm else None for s, a, b in zip(specs, starts[:-1], starts[1:], strict=True)
        ]
        self._head_rows = [row[:-1] for row in self.blocks[-1]]  # dQ[a] / d last activation = W_head[a]
        self._grad = np.zeros_like(self.theta)
        self._grad_blocks = self.views(self._grad)
        self._plans: dict[int, Plan] = {}

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
                means = block.mean(axis=0, dtype=np.float64).astype(_F32)
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

    def plan(self, slot: int) -> Plan:
        """The buffers of `slot`, made on first use."""
        plan = self._plans.get(slot)
        if plan is None:
            plan = self._plans[slot] = Plan(self)
        return plan

    def forward(self, x: np.ndarray, slot: int = 0, keep: bool = True) -> tuple[np.ndarray, Plan]:
        """Q-values of one normalised observation (float32) and the slot's plan, the backward's cache.

        `keep=False` (a target, never differentiated) skips the activation derivatives and leaves
        the slot unusable for `gradient`. Array methods (`a.dot`) rather than `np.dot`: they skip
        the array-function dispatch.
        """
        plan = self.plan(slot)
        plan.x[:] = x
        scales = plan.scales
        sign, multiply, fmax, sqrt = np.sign, np.multiply, np.fmax, math.sqrt  # fmax: maximum, positional out
        for i, block, h, z, d, out, width, layernorm, tanh, floor, inv in plan.hidden:
            block.dot(h, z)
            if layernorm:
                scale = 1.0 / sqrt(float(z.dot(z)) / width + LN_EPS)
                scales[i] = scale
                inv[()] = scale
            if tanh:
                multiply(z, inv, out)
                np.tanh(out, out)
                if keep:
                    multiply(out, out, d)
                    np.subtract(1.0, d, d)
            elif keep:  # d = 1 above zero, the floor (LeakyReLU's slope, ReLU's 0) at and below it
                sign(z, d)
                fmax(d, floor, d)
                multiply(z, d, out)
                if layernorm:
                    multiply(out, inv, out)  # LeakyReLU(z / sigma) = LeakyReLU(z) / sigma
            else:
                if layernorm:
                    multiply(z, inv, z)
                multiply(z, floor, d)
                fmax(z, d, out)
        return plan.head_block.dot(plan.head_x), plan  # the Q-values: a new array, callers keep it

    def gradient(self, plan: Plan, action: int) -> np.ndarray:
        """d Q[action] / d theta from `forward`'s plan, in theta's layout (a buffer the next call overwrites)."""
        plan.one_hot[action].dot(plan.head_x_row, self._grad_blocks[-1])
        gh = self._head_rows[action]
        scales = plan.scales
        multiply = np.multiply
        for i, gy, m, m12, k, gz, gz_col, x_row, grad, d, width, layernorm, block, gx, gh_prev in plan.backward:
            if layernorm:
                multiply(gh, d, gy)
                total, dot_z = m12.dot(gy).tolist()
                scale = scales[i]
                k[0], k[1], k[2] = scale, -scale * total / width, -(scale**3) * dot_z / width
                k.dot(m, gz)
            else:
                multiply(gh, d, gz)
            gz_col.dot(x_row, grad)
            if gx is not None:
                gz.dot(block, gx)  # the centred block is exact here: gz sums to zero
                gh = gh_prev
        return self._grad

    def activation_inputs(self, plan: Plan) -> list[np.ndarray]:
        """Each hidden layer's activation input y (after LayerNorm) in `plan`: where the kinks are."""
        return [h.z * _F32(plan.scales[h.index]) for h in plan.hidden]
