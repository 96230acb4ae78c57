"""Stream Q(lambda) in numpy: one sample at a time, no replay buffer, no target network, constant memory.

Implemented from the specification in the reference notes (Elsayed, Vasan & Mahmood 2024,
"Streaming Deep Reinforcement Learning Finally Works"). Per step: epsilon-greedy action from
the act-time forward; TD error with pre-update parameters (semi-gradient); accumulating trace
z = gamma lambda z + grad Q(s, a); ObGD step size alpha / max(1, alpha kappa max(|delta|, 1) |z|_1);
theta += alpha_eff delta z; trace reset after the update on episode end or a non-greedy action.

API contract: every raw observation enters the normaliser exactly once. `observe` counts
`next_obs`; `act` counts its `obs` only at the start and after an episode ended, so calling
`act(next_obs)` right after `observe` reuses the normalised state (recognised as the same
object: do not refill that array in between). Hyperparameters are fixed at construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_rl.errors import BadInput
from edge_rl.layers import Activation, Dense, Layer, LayerNorm
from edge_rl.policy import ActionSpec, ObservationSpec, Policy
from edge_rl.stream.draws import ActionDraws
from edge_rl.stream.network import Plan, StreamNet
from edge_rl.stream.normalize import ObservationNormalizer, RewardScaler

NO_CLIP = 1e30  # the IR's clip for a learner that normalises without one (stream Q(lambda) from scratch)


class StreamQ:
    """Streaming Q(lambda) learner over a float32 MLP (LayerNorm + LeakyReLU by default)."""

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden: tuple[int, ...] = (32, 32),
        gamma: float = 0.99,
        lam: float = 0.8,
        kappa: float = 2.0,
        lr: float = 1.0,
        eps_start: float = 1.0,
        eps_end: float = 0.01,
        eps_decay_steps: int = 25_000,
        raw_tail: int = 0,
        seed: int = 0,
        sparsity: float = 0.9,
        net: StreamNet | None = None,
        scale_rewards: bool = True,
        normalizer: ObservationNormalizer | None = None,
        mode: str = "scratch",
        source: Policy | None = None,
    ) -> None:
        """`net` and `normalizer` default to a fresh sparse-initialised MLP and running statistics;
        an adapted learner (`edge_rl.stream.adapt`) passes its own, with `mode` "full" or "head"
        and the deployed `source` policy it adapts."""
        if not (0 <= raw_tail <= obs_dim and n_actions >= 1 and obs_dim >= 1 and eps_decay_steps >= 1):
            raise BadInput("StreamQ needs obs_dim >= 1, n_actions >= 1, 0 <= raw_tail <= obs_dim, eps_decay_steps >= 1")
        self.obs_dim, self.n_actions, self.hidden = obs_dim, n_actions, tuple(hidden)
        self.gamma, self.lam, self.kappa, self.lr = gamma, lam, kappa, lr
        self.eps_start, self.eps_end, self.eps_decay_steps = eps_start, eps_end, eps_decay_steps
        self.raw_tail, self.seed, self.sparsity, self.scale_rewards = raw_tail, seed, sparsity, scale_rewards
        if net is None:
            net = StreamNet.mlp([obs_dim, *self.hidden, n_actions])
            net.sparse_init(np.random.default_rng(seed), sparsity)
        self.net = net
        self.trace = np.zeros_like(net.theta)
        self.scratch = np.empty_like(net.theta)  # reused by every update: no allocation per step
        self.ones = np.ones_like(net.theta)  # |z|_1 = |z| . 1
        self.decay = np.array(gamma * lam, np.float32)  # 0-d arrays: Python scalars in a ufunc cost a conversion
        self.step_size = np.zeros((), np.float32)
        self.normalizer = normalizer if normalizer is not None else ObservationNormalizer(obs_dim, raw_tail)
        self.rewards = RewardScaler(gamma)
        self.draws = ActionDraws(seed)  # action draws only: one uniform per step, one integer when exploring
        self.steps = 0
        self._state: np.ndarray | None = None  # normalised current observation, None at start / after an episode
        self._raw: np.ndarray | None = None  # the raw observation `_state` came from
        self._given: object = None  # the object `observe` got it as: `act(next_obs)` is then an identity check
        self._pending: tuple[list[float], Plan, int, bool] | None = None  # (q, cache, action, nongreedy)
        self.last: dict[str, float] = {}  # the last update's delta, alpha_eff, |z|_1: for telemetry and tests
        self.mode = mode  # "scratch", or "full" / "head": adapting `source`, the deployed policy
        self.source = source

    # -- acting ---------------------------------------------------------------------------------

    @property
    def epsilon(self) -> float:
        frac = self.steps / self.eps_decay_steps
        return max(self.eps_start + (self.eps_end - self.eps_start) * frac, self.eps_end)

    def _check(self, obs: np.ndarray) -> np.ndarray:
        """`obs` as a float64 vector of the right size (the normaliser refuses NaN and infinity)."""
        x = np.asarray(obs, np.float64)
        if x.ndim != 1:
            x = x.ravel()
        if x.shape[0] != self.obs_dim:
            raise BadInput(f"observation has {x.size} features, the learner takes {self.obs_dim}")
        return x

    def _forward(self, obs: np.ndarray) -> tuple[list[float], Plan]:
        """Q-values and the forward's cache for the action about to be taken in `obs`; counts the step."""
        if self._state is None or obs is not self._given:
            x = self._check(obs)
            if self._state is None or not (x == self._raw).all():
                self._state, self._raw = self.normalizer(x), x
        self.steps += 1
        q, cache = self.net.forward(self._state)
        return q.tolist(), cache

    def act(self, obs: np.ndarray) -> int:
        """Epsilon-greedy action for `obs`; remembers the act-time forward for the next `observe`.

        `obs` is counted by the normaliser at the start, after an episode ended, and (a guard
        beyond the reference rule) whenever it is not the `next_obs` the last `observe` counted.
        """
        values, cache = self._forward(obs)
        greedy = values.index(max(values))  # the first index on ties
        action, nongreedy = greedy, False
        if self.draws.uniform() < self.epsilon:
            action = self.draws.integer(self.n_actions)
            nongreedy = action != greedy
        self._pending = (values, cache, action, nongreedy)
        return action

    def behave(self, obs: np.ndarray, action: int) -> None:
        """Record that another policy took `action` in `obs`: the next `observe` learns from it.

        Off-policy, as Watkins's Q(lambda): the trace is cut after a step whose action is not
        this learner's greedy one. A shadow learner learns this way from the actions a deployed
        policy takes, never choosing one itself (no exploration draw is spent).
        """
        if not 0 <= action < self.n_actions:
            raise BadInput(f"action {action} is not in 0..{self.n_actions - 1}")
        values, cache = self._forward(obs)
        self._pending = (values, cache, action, action != values.index(max(values)))

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q-values of `obs` under the current normalisation, without counting it or learning."""
        x = self._check(obs)
        if not math.isfinite(x.dot(x)):  # inf/NaN in x (or |x| > 1e154) make x.x non-finite
            raise BadInput("observation contains NaN or infinity")
        return self.net.forward(self.normalizer.apply(x), 2, False)[0]

    # -- learning -------------------------------------------------------------------------------

    def observe(self, reward: float, next_obs: np.ndarray, terminated: bool, truncated: bool) -> float:
        """Learn from the transition that followed the last `act`; returns the TD error."""
        if self._pending is None:
            raise BadInput("observe() needs a preceding act()")
        if not math.isfinite(reward):
            raise BadInput(f"reward {reward} is not finite")
        x = self._check(next_obs)
        next_state = self.normalizer(x)  # refuses bad values before it changes: a refused step changes nothing
        q, cache, action, nongreedy = self._pending
        self._pending = None
        done = bool(terminated or truncated)
        r = self.rewards(float(reward), done) if self.scale_rewards else float(reward)
        self.last = self.update(q, cache, action, r, next_state, done, nongreedy)
        self._state, self._raw = (None, None) if done else (next_state, x)
        self._given = None if done else next_obs
        return self.last["delta"]

    def update(
        self,
        q: Sequence[float],
        cache: Plan,
        action: int,
        reward: float,
        next_state: np.ndarray,
        done: bool,
        nongreedy: bool,
    ) -> dict[str, float]:
        """One stream Q(lambda) update of the network and the trace from a scaled, normalised transition.

        `q` (the Q-values, a list or array) and `cache` are the act-time forward of the state.
        delta in float64 with pre-update parameters; the trace is stored unscaled; |z|_1 is one
        float32 BLAS sum over all parameters (the reference sums per tensor in float32 and adds
        the sums in float64: the same to float32 rounding).
        """
        net, trace, scratch = self.net, self.trace, self.scratch
        target = reward if done else reward + self.gamma * max(net.forward(next_state, 1, False)[0].tolist())
        delta = target - float(q[action])
        np.add(np.multiply(trace, self.decay, trace), net.gradient(cache, action), trace)
        z_norm = float(np.abs(trace, scratch).dot(self.ones))
        alpha = self.lr / max(1.0, self.lr * self.kappa * max(abs(delta), 1.0) * z_norm)
        step = self.step_size
        step[()] = alpha * delta
        np.add(net.theta, np.multiply(trace, step, scratch), net.theta)
        if done or nongreedy:
            trace.fill(0.0)
        return {"delta": delta, "alpha": alpha, "trace_l1": z_norm}

    # -- persistence ----------------------------------------------------------------------------

    HYPERPARAMETERS = (
        *("gamma", "lam", "kappa", "lr"),
        *("eps_start", "eps_end", "eps_decay_steps"),
        *("seed", "scale_rewards"),
    )  # what the constructor takes and the state carries

    def state_dict(self) -> dict[str, Any]:
        """Arrays plus JSON-able scalars; `edge_rl.stream.state.restore` continues bit for bit (between steps)."""
        if self._pending is not None:
            raise BadInput("state_dict() between act() and observe(): save after observe")
        _, keys, pos, has_gauss, gauss = self.draws.get_state()
        obs_stats = self.normalizer.stats  # a copy
        scalars = {
            **{k: getattr(self, k) for k in self.HYPERPARAMETERS},
            "mode": self.mode,
            "source": None if self.source is None else self.source.digest(),
            "obs_dim": self.obs_dim,
            "n_actions": self.n_actions,
            "hidden": list(self.hidden),
            "raw_tail": self.raw_tail,
            "layers": self._layers(),
            "steps": self.steps,
            "obs_count": obs_stats.count,
            "reward_count": self.rewards.stats.count,
            "reward_u": self.rewards.u,
            "reward_mean": float(self.rewards.stats.mean),
            "reward_m2": float(self.rewards.stats.m2),
            "rng_pos": int(pos),
            "rng_has_gauss": int(has_gauss),
            "rng_gauss": float(gauss),
            "mid_episode": self._state is not None,
        }
        arrays = {
            "theta": self.net.theta.copy(),
            "offsets": self.net.offsets.copy(),
            "trace": self.trace.copy(),
            "obs_mean": obs_stats.mean,
            "obs_m2": obs_stats.m2,
            "rng_keys": np.asarray(keys, np.uint32).copy(),
        }
        if self._state is not None:
            arrays["state"], arrays["raw"] = self._state.copy(), self._raw.copy()
        return {"scalars": scalars, "arrays": arrays}

    def _layers(self) -> list[list]:
        """The network's layers as JSON rows [n_in, n_out, layernorm, activation]."""
        return [[spec.n_in, spec.n_out, spec.layernorm, spec.activation] for spec in self.net.specs]

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Fill this learner (built with the saved structure: `edge_rl.stream.state.restore`), refusing mismatches."""
        s, a = d["scalars"], d["arrays"]
        if [list(layer) for layer in s["layers"]] != self._layers() or s["obs_dim"] != self.obs_dim:
            raise BadInput("learner state: its layers do not match this network")
        shapes = {"theta": self.net.theta.shape, "trace": self.net.theta.shape, "offsets": self.net.offsets.shape}
        shapes["rng_keys"] = (624,)
        if s["mid_episode"]:
            shapes["state"] = shapes["raw"] = (self.obs_dim,)
        for key, shape in shapes.items():
            if key not in a or np.shape(a[key]) != shape:
                raise BadInput(f"learner state: {key} is missing or not of shape {shape} (sizes do not match)")
            if not np.isfinite(a[key]).all():
                raise BadInput(f"learner state: {key} is not finite")
        self.net.theta[:] = a["theta"]
        self.net.offsets[:] = a["offsets"]  # theta is stored centred: restoring both continues bit for bit
        self.trace[:] = a["trace"]
        self.steps = int(s["steps"])
        self.normalizer.load(int(s["obs_count"]), a["obs_mean"], a["obs_m2"])
        self.rewards.load(s["reward_u"], s["reward_count"], s["reward_mean"], s["reward_m2"])
        self.draws.set_state(("MT19937", a["rng_keys"], s["rng_pos"], s["rng_has_gauss"], s["rng_gauss"]))
        if s["mid_episode"]:
            self._state, self._raw = a["state"].astype(np.float32), a["raw"].astype(np.float64)
        else:
            self._state = self._raw = None
        self._given, self._pending = None, None

    # -- back to the IR ---------------------------------------------------------------------------

    def to_policy(self) -> Policy:
        """The current greedy network as a policy IR (Dense / LayerNorm / activations), to quantize and export.

        Its normalisation is the learner's running one; an adapted learner keeps its source's
        spec (shape, bounds, names, actions and safe action) and metadata.
        """
        source = self.source
        stats, tail = self.normalizer.stats, self.raw_tail
        mean = np.concatenate([stats.mean, np.zeros(tail)])
        var = np.concatenate([stats.var, np.ones(tail)])
        clip = NO_CLIP if self.normalizer.clip is None else self.normalizer.clip
        if source is not None:
            deployed = source.observation
            shape, low, high, names = deployed.shape, deployed.low, deployed.high, deployed.names
        else:
            shape, names = (self.obs_dim,), ()
            low, high = np.full(shape, -np.inf), np.full(shape, np.inf)
        observation = ObservationSpec(
            shape, low, high, mean.reshape(shape), var.reshape(shape), clip, self.normalizer.eps, names
        )
        layers: list[Layer] = []
        for i, spec in enumerate(self.net.specs):
            layers.append(Dense(self.net.weight(i).copy(), self.net.bias(i).copy()))
            if spec.layernorm:
                layers.append(LayerNorm(1e-5))
            if spec.activation is not None:
                layers.append(Activation(spec.activation, 0.01))
        return Policy(observation, source.action if source else ActionSpec(self.n_actions), layers, self.metadata())

    def metadata(self) -> dict[str, Any]:
        """What `to_policy` records: the source's metadata, the trainer, gamma, steps learned and the mode."""
        meta = {**(self.source.metadata if self.source else {}), "trainer": "stream_q", "gamma": self.gamma}
        meta["stream_steps"], meta["adapted"] = self.steps, self.mode
        return meta
