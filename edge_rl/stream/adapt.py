"""Adapting a deployed policy on the device: stream Q(lambda) from a policy IR, and back to an IR.

- `full`: every layer learns, from float32 master weights (an int8 IR is dequantized into them;
  updates of ~1e-5 are far below int8 resolution, so quantized weights cannot learn). The
  observation normaliser starts from the IR's statistics, weighted as `prior_count` samples.
- `head`: the body runs exactly as deployed (int8 or 1-bit included) and a float last layer,
  initialised from the deployed head, learns on its features. When the head reads int8 codes,
  they reach it mapped into [-1, 1] (its weights rescaled to match: the same Q-values), as
  ObGD's step bound assumes inputs of magnitude <= 1 (dequantized codes reach ~10), and it
  learns without eligibility traces (lambda 0 unless given): with traces, the rows of the
  actions of a greedy cycle grow together and the Q-values diverge.

Defaults for adaptation differ from learning from scratch: little exploration (the policy is
already good), rewards unscaled and gamma from the policy's metadata, so the TD targets are in
the units the imported Q-values already have (scaling them would start every TD error at the
size of the Q-values themselves).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_rl.errors import BadInput
from edge_rl.layers import Activation, Dense, DuelingSum, LayerNorm
from edge_rl.policy import Policy
from edge_rl.qlayers import INT8_MAX, INT8_MIN, DenseBinary, DenseInt8, Dequantize, Quantize
from edge_rl.stream.learner import StreamQ
from edge_rl.stream.network import LayerSpec, StreamNet
from edge_rl.stream.normalize import ObservationNormalizer

MODES = ("full", "head")
PRIOR_COUNT = 10_000
ADAPT_DEFAULTS = {"eps_start": 0.05, "eps_end": 0.01, "eps_decay_steps": 10_000, "scale_rewards": False}


def float_dense(layer: Dense | DenseInt8) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) in float32 of a float or int8 dense layer (int8: codes x scales, bias x accumulator scale)."""
    if isinstance(layer, Dense):
        return layer.weight.copy(), layer.bias.copy()
    acc_scale = np.float64(np.float32(layer.input_scale)) * layer.weight_scale.astype(np.float64)
    weight = layer.weight.astype(np.float64) * layer.weight_scale.astype(np.float64)[:, None]
    return weight.astype(np.float32), (layer.bias.astype(np.float64) * acc_scale).astype(np.float32)


def _fold_dueling(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows [value; per-action] -> per-action rows with the value added back."""
    return weight[1:] + weight[:1], bias[1:] + bias[:1]


def float_layers(policy: Policy) -> tuple[list[LayerSpec], list[tuple[np.ndarray, np.ndarray]]]:
    """The IR as float dense layers with their LayerNorm / activation, as the learner's net takes them."""
    entries: list[list[Any]] = []  # [W, b, layernorm, activation]
    for layer in policy.layers:
        if isinstance(layer, (Quantize, Dequantize)):
            continue
        if isinstance(layer, DenseBinary):
            raise BadInput("1-bit layers have no float form to learn; adapt this policy with mode='head'")
        if isinstance(layer, (Dense, DenseInt8)):
            entries.append([*float_dense(layer), False, "relu" if getattr(layer, "relu", False) else None])
        elif isinstance(layer, LayerNorm) and entries and entries[-1][3] is None and not entries[-1][2]:
            if layer.weight is not None:
                raise BadInput("LayerNorm with affine parameters cannot be adapted; the learner's LayerNorm has none")
            entries[-1][2] = True
        elif isinstance(layer, Activation) and entries and entries[-1][3] is None:
            entries[-1][3] = layer.fn
            if layer.fn == "leaky_relu" and abs(layer.slope - 0.01) > 1e-12:
                raise BadInput(f"LeakyReLU slope {layer.slope}: the learner uses 0.01")
        elif isinstance(layer, DuelingSum) and entries:
            entries[-1][0], entries[-1][1] = _fold_dueling(entries[-1][0], entries[-1][1])
        else:
            raise BadInput(f"layer {layer.kind} cannot be adapted in this position")
    if not entries or entries[-1][2] or entries[-1][3] is not None or any(e[3] is None for e in entries[:-1]):
        raise BadInput("adaptation needs dense layers with an activation each, then a plain linear Q head")
    specs = [LayerSpec(w.shape[1], w.shape[0], ln, act) for w, _, ln, act in entries]
    return specs, [(w, b) for w, b, _, _ in entries]


class HeadStreamQ(StreamQ):
    """Stream Q(lambda) on a float linear head over a frozen body executed exactly as deployed."""

    def __init__(self, policy: Policy, **kwargs: Any) -> None:
        layers = list(policy.layers)
        head_end = len(layers) - (1 if isinstance(layers[-1], DuelingSum) else 0)
        head = layers[head_end - 1]
        if not isinstance(head, (Dense, DenseInt8)):
            raise BadInput(f"the policy's last layer is {head.kind}; head adaptation needs a dense Q head")
        weight, bias = float_dense(head)
        if head_end < len(layers):
            weight, bias = _fold_dueling(weight, bias)
        self.body = layers[: head_end - 1]
        if isinstance(head, DenseInt8):  # the head read int8 codes: give the float head their values
            self.body.append(Dequantize(head.input_scale, head.input_zero_point))
        if self.body and isinstance(self.body[-1], Dequantize):  # codes into [-1, 1], the head's weights x widest
            dq = self.body[-1]
            widest = max(dq.zero_point - INT8_MIN, INT8_MAX - dq.zero_point)  # the largest |code - zero point|
            self.body[-1] = Dequantize(1.0 / widest, dq.zero_point)
            weight = (weight.astype(np.float64) * (float(np.float32(dq.scale)) * widest)).astype(np.float32)
            kwargs = {"lam": 0.0, **kwargs}
        net = StreamNet([LayerSpec(weight.shape[1], weight.shape[0], False, None)])
        net.blocks[0][:, :-1], net.blocks[0][:, -1] = weight, bias
        n = weight.shape[1]
        super().__init__(n, weight.shape[0], hidden=(), net=net, raw_tail=n, mode="head", source=policy, **kwargs)
        self._features: tuple[np.ndarray, np.ndarray] | None = None  # (raw observation, its features)

    def features(self, obs: np.ndarray) -> np.ndarray:
        """The body's output for one raw observation (the deployed computation, float at the end)."""
        x = np.asarray(obs, np.float64).ravel()
        if self._features is not None and np.array_equal(x, self._features[0]):
            return self._features[1]
        flat, _ = self.source.observation.batch(x.astype(np.float32).reshape(self.source.observation.shape))
        h = self.source.observation.normalize(flat)
        for layer in self.body:
            h = layer.forward(h)
        self._features = (x.copy(), h[0].astype(np.float64))  # a copy: the caller may refill its buffer
        return self._features[1]

    def act(self, obs: np.ndarray) -> int:
        return super().act(self.features(obs))

    def behave(self, obs: np.ndarray, action: int) -> None:
        super().behave(self.features(obs), action)

    def observe(self, reward: float, next_obs: np.ndarray, terminated: bool, truncated: bool) -> float:
        return super().observe(reward, self.features(next_obs), terminated, truncated)

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        return super().q_values(self.features(obs))

    def to_policy(self) -> Policy:
        """The deployed body (unchanged, int8 / 1-bit included) under the learned float head."""
        head = Dense(self.net.weight(0).copy(), self.net.bias(0).copy())
        return Policy(self.source.observation, self.source.action, [*self.body, head], self.metadata())


def from_policy(policy: Policy, mode: str = "full", prior_count: int = PRIOR_COUNT, **kwargs: Any) -> StreamQ:
    """A learner starting from `policy`; keyword arguments override the adaptation defaults.

    `prior_count` weighs the policy's observation statistics in the `full` learner's running
    ones; the `head` learner sees the body's features, which it does not normalise (int8
    codes are mapped into [-1, 1] and learnt on with lambda 0 by default; see the module docstring).
    """
    if mode not in MODES:
        raise BadInput(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    fixed = sorted({"hidden", "raw_tail", "net", "normalizer", "mode", "source"} & kwargs.keys())
    if fixed:
        raise BadInput(f"the policy fixes {', '.join(fixed)}: adaptation takes only the learning settings")
    settings = {"gamma": float(policy.metadata.get("gamma", 0.99)), **ADAPT_DEFAULTS, **kwargs}
    if mode == "head":
        return HeadStreamQ(policy, **settings)
    specs, params = float_layers(policy)
    net = StreamNet(specs)
    for block, (weight, bias) in zip(net.blocks, params, strict=True):
        block[:, :-1], block[:, -1] = weight, bias
    net.centre()
    obs = policy.observation
    normalizer = ObservationNormalizer(obs.size, clip=obs.clip, eps=obs.eps)  # as the policy normalises
    normalizer.load(prior_count, obs.mean.astype(np.float64), obs.var.astype(np.float64) * (prior_count - 1))
    hidden = tuple(s.n_out for s in specs[:-1])
    return StreamQ(
        obs.size, policy.action.n, hidden, net=net, normalizer=normalizer, mode="full", source=policy, **settings
    )
