"""A Q-network whose parameters live in one flat tensor, and its conversion to and from the IR.

Why flat: at the sizes a device runs (a few thousand parameters) the cost of a DQN update is
per-call overhead, not arithmetic. With every weight a view into one leaf tensor, autograd
writes one gradient buffer, gradient clipping is one norm, Adam is one fused call and a target
update is one copy or lerp. The same buffer is shared with numpy (zero copy), so acting in the
environment loop runs a numpy forward on the live weights without touching torch at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edge_rl.policy import ActionSpec, Activation, Dense, LayerNorm, ObservationSpec, Policy, PolicyFormatError

_LN_EPS = 1e-5


@dataclass(frozen=True)
class Arch:
    """Shape of the MLP: hidden widths, per-layer LayerNorm, activation, dueling head."""

    obs_dim: int
    n_actions: int
    hidden: tuple[int, ...] = (64, 64)
    layernorm: bool = False
    activation: str = "relu"
    dueling: bool = False

    def slots(self) -> list[tuple[str, tuple[int, ...]]]:
        """Names and shapes of every parameter, in the order they sit in the flat buffer."""
        out: list[tuple[str, tuple[int, ...]]] = []
        width = self.obs_dim
        for i, h in enumerate(self.hidden):
            out += [(f"h{i}.weight", (h, width)), (f"h{i}.bias", (h,))]
            if self.layernorm:
                out += [(f"h{i}.ln_weight", (h,)), (f"h{i}.ln_bias", (h,))]
            width = h
        if self.dueling:
            out += [("value.weight", (1, width)), ("value.bias", (1,))]
        out += [("head.weight", (self.n_actions, width)), ("head.bias", (self.n_actions,))]
        return out


class FlatQNet:
    """MLP Q-network over a flat parameter tensor, with a hand-written backward pass.

    Autograd costs ~0.3 ms per update at this size on a small CPU, several times the arithmetic;
    the explicit backward below (checked against autograd in the tests) costs a third of that.
    """

    def __init__(self, arch: Arch, generator: torch.Generator | None = None) -> None:
        self.arch = arch
        self._slices: list[tuple[str, int, int, tuple[int, ...]]] = []
        start = 0
        for name, shape in arch.slots():
            self._slices.append((name, start, start + math.prod(shape), shape))
            start += math.prod(shape)
        self.theta = torch.empty(start)
        self.grad = torch.zeros(start)
        self._init(generator)
        self.p = self.views(self.theta)
        self.g = self.views(self.grad)
        flat_np = self.theta.numpy()  # shares memory with theta: acting sees every update
        self.np_params = {name: flat_np[a:b].reshape(shape) for name, a, b, shape in self._slices}
        self._body = self._ir_layers(self.np_params)[:-1]

    def _init(self, generator: torch.Generator | None) -> None:
        """PyTorch's nn.Linear default init (uniform +-1/sqrt(fan_in)); LayerNorm gain 1, bias 0."""
        fan_in = {name.rsplit(".", 1)[0]: shape[1] for name, _, _, shape in self._slices if len(shape) == 2}
        for name, a, b, _ in self._slices:
            part = self.theta[a:b]
            if name.endswith("ln_weight"):
                part.fill_(1.0)
            elif name.endswith("ln_bias"):
                part.zero_()
            else:
                bound = 1.0 / math.sqrt(fan_in[name.rsplit(".", 1)[0]])
                part.uniform_(-bound, bound, generator=generator)

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-layer views into a flat buffer (theta, its gradient, or a target copy)."""
        return {name: flat[a:b].view(shape) for name, a, b, shape in self._slices}

    def _head(self, p: dict) -> tuple:
        """Dueling V + A - mean(A) is linear in the features, so it folds into one weight/bias.

        Works on torch tensors and numpy arrays alike (only ops both share).
        """
        if not self.arch.dueling:
            return p["head.weight"], p["head.bias"]
        wa, ba, n = p["head.weight"], p["head.bias"], self.arch.n_actions
        return p["value.weight"] + wa - wa.sum(0)[None] / n, p["value.bias"] + ba - ba.sum() / n

    def forward(self, p: dict[str, torch.Tensor], x: torch.Tensor, tape: list | None = None) -> torch.Tensor:
        """Q-values for normalised observations; with `tape`, records what `backward` needs."""
        slope = 0.01 if self.arch.activation == "leaky_relu" else 0.0
        for i in range(len(self.arch.hidden)):
            z = torch.addmm(p[f"h{i}.bias"], x, p[f"h{i}.weight"].t())
            zhat = inv = None
            if self.arch.layernorm:
                zc = z - z.mean(1, keepdim=True)
                inv = torch.rsqrt((zc * zc).mean(1, keepdim=True) + _LN_EPS)
                zhat = zc * inv
                z = torch.addcmul(p[f"h{i}.ln_bias"], zhat, p[f"h{i}.ln_weight"])
            if tape is not None:
                tape.append((x, z, zhat, inv))
            x = F.leaky_relu(z, slope) if slope else z.clamp_min(0.0)
        w, b = self._head(p)
        if tape is not None:
            tape.append((x, w))
        return torch.addmm(b, x, w.t())

    def backward(self, tape: list, dq: torch.Tensor) -> torch.Tensor:
        """Write dLoss/dtheta into `self.grad` given dLoss/dQ for the taped batch; returns it."""
        p, g, slope = self.p, self.g, (0.01 if self.arch.activation == "leaky_relu" else 0.0)
        x, w = tape[-1]
        if self.arch.dueling:  # chain rule through the fold W = wv + wa - mean(wa)
            gw, gb = dq.t() @ x, dq.sum(0)
            g["value.weight"].copy_(gw.sum(0, keepdim=True))
            g["value.bias"].copy_(gb.sum(0, keepdim=True))
            torch.sub(gw, g["value.weight"] / self.arch.n_actions, out=g["head.weight"])
            torch.sub(gb, g["value.bias"] / self.arch.n_actions, out=g["head.bias"])
        else:
            torch.mm(dq.t(), x, out=g["head.weight"])
            torch.sum(dq, 0, out=g["head.bias"])
        dx = dq @ w
        for i in reversed(range(len(self.arch.hidden))):
            x, z, zhat, inv = tape[i]
            d = torch.where(z >= 0, dx, dx * slope) if slope else dx * (z > 0)
            if self.arch.layernorm:
                torch.sum(d * zhat, 0, out=g[f"h{i}.ln_weight"])
                torch.sum(d, 0, out=g[f"h{i}.ln_bias"])
                dzhat = d * p[f"h{i}.ln_weight"]
                d = inv * (dzhat - dzhat.mean(1, keepdim=True) - zhat * (dzhat * zhat).mean(1, keepdim=True))
            torch.mm(d.t(), x, out=g[f"h{i}.weight"])
            torch.sum(d, 0, out=g[f"h{i}.bias"])
            if i:
                dx = d @ p[f"h{i}.weight"]
        return self.grad

    def q_numpy(self, x: np.ndarray) -> np.ndarray:
        """Forward pass in numpy through the IR's own layers, on the live weights (zero copy)."""
        for layer in self._body:
            x = layer.forward(x)
        w, b = self._head(self.np_params)
        return x @ w.T + b

    def _ir_layers(self, p: dict[str, np.ndarray]) -> list:
        layers: list = []
        for i in range(len(self.arch.hidden)):
            layers.append(Dense(p[f"h{i}.weight"], p[f"h{i}.bias"]))
            if self.arch.layernorm:
                layers.append(LayerNorm(_LN_EPS, p[f"h{i}.ln_weight"], p[f"h{i}.ln_bias"]))
            layers.append(Activation(self.arch.activation))
        w, b = self._head(p)
        layers.append(Dense(w, b))
        return layers

    # -- IR conversion --------------------------------------------------------------------------

    def to_policy(self, observation: ObservationSpec, action: ActionSpec, metadata: dict | None = None) -> Policy:
        """Snapshot the current weights as an IR policy (dueling folded into the last layer)."""
        layers = self._ir_layers({k: v.copy() for k, v in self.np_params.items()})
        return Policy(observation, action, layers, dict(metadata or {}))

    @classmethod
    def from_policy(cls, policy: Policy) -> FlatQNet:
        """Rebuild a trainable network from an fp32 IR made of dense/layernorm/activation layers."""
        hidden, layernorm, activation, weights = [], False, "relu", []
        for layer in policy.layers:
            if isinstance(layer, Dense):
                weights.append((layer.weight, layer.bias))
                hidden.append(layer.weight.shape[0])
            elif isinstance(layer, LayerNorm) and layer.weight is not None:
                layernorm = True
                weights.append((layer.weight, layer.bias))
            elif isinstance(layer, Activation) and layer.fn in ("relu", "leaky_relu"):
                activation = layer.fn
            else:
                raise PolicyFormatError(f"cannot train from a {layer.kind} layer of this configuration")
        arch = Arch(policy.observation.size, policy.action.n, tuple(hidden[:-1]), layernorm, activation)
        net = cls(arch)
        flat = net.theta.numpy()
        arrays = [a for pair in weights for a in pair]
        if len(arrays) != len(net._slices):
            raise PolicyFormatError("policy layout does not match a Dense(+LayerNorm)+activation MLP")
        for (_, a, b, shape), arr in zip(net._slices, arrays, strict=True):
            if arr.shape != shape:
                raise PolicyFormatError(f"parameter shape {arr.shape} does not fit {shape}")
            flat[a:b] = arr.ravel()
        return net
