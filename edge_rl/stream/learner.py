"""Stream Q(lambda) in numpy: one sample at a time, no replay buffer, no target network, constant memory.

Implemented from the specification in the reference notes (Elsayed, Vasan & Mahmood 2024,
"Streaming Deep Reinforcement Learning Finally Works"). Per step: epsilon-greedy action from
the act-time forward; TD error with pre-update parameters (semi-gradient); accumulating trace
z = gamma lambda z + grad Q(s, a); ObGD step size alpha / max(1, alpha kappa max(|delta|, 1) |z|_1);
theta += alpha_eff delta z; trace reset after the update on episode end or a non-greedy action.

API contract: every raw observation enters the normaliser exactly once. `observe` counts
`next_obs`; `act` counts its `obs` only at the start and after an episode ended, so calling
`act(next_obs)` right after `observe` reuses the normalised state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_rl.errors import BadInput
from edge_rl.stream.draws import ActionDraws
from edge_rl.stream.network import Plan, StreamNet
from edge_rl.stream.normalize import ObservationNormalizer, RewardScaler, Welford


def td_update(
    learner: StreamQ,
    q: Sequence[float],
    cache: Plan,
    action: int,
    reward: float,
    next_state: np.ndarray,
    done: bool,
    nongreedy: bool,
) -> dict[str, float]:
    """One stream Q(lambda) update of `learner.net` and `learner.trace` from a scaled transition.

    `q` (the Q-values, a list or array), `cache` are the act-time forward of the state; delta in float64 with pre-update
    parameters; the trace is stored unscaled; |z|_1 is one float32 BLAS sum (the reference
    sums each tensor in float32 too).
    """
    net, trace, scratch = learner.net, learner.trace, learner.scratch
    target = reward if done else reward + learner.gamma * max(net.forward(next_state, 1, False)[0].tolist())
    delta = target - float(q[action])
    np.add(np.multiply(trace, learner.decay, trace), net.gradient(cache, action), trace)
    z_norm = float(np.abs(trace, scratch).dot(learner.ones))
    alpha = learner.lr / max(1.0, learner.lr * learner.kappa * max(abs(delta), 1.0) * z_norm)
    step = learner.step_size
    step[()] = alpha * delta
    np.add(net.theta, np.multiply(trace, step, scratch), net.theta)
    if done or nongreedy:
        trace.fill(0.0)
    return {"delta": delta, "alpha": alpha, "trace_l1": z_norm}


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
    ) -> None:
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
        self.normalizer = ObservationNormalizer(obs_dim, raw_tail)
        self.rewards = RewardScaler(gamma)
        self.draws = ActionDraws(seed)  # action draws only: one uniform per step, one integer when exploring
        self.steps = 0
        self._state: np.ndarray | None = None  # normalised current observation, None at start / after an episode
        self._raw: np.ndarray | None = None  # the raw observation `_state` came from
        self._given: object = None  # the object `observe` got it as: `act(next_obs)` is then an identity check
        self._pending: tuple[list[float], Plan, int, bool] | None = None  # (q, cache, action, nongreedy)
        self.last: dict[str, float] = {}  # the last update's delta, alpha_eff, |z|_1: for telemetry and tests

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

    def act(self, obs: np.ndarray) -> int:
        """Epsilon-greedy action for `obs`; remembers the act-time forward for the next `observe`."""
        if self._state is None or (obs is not self._given and not (self._check(obs) == self._raw).all()):
            x = self._check(obs)
            self._state, self._raw = self.normalizer(x), x
        self.steps += 1
        q, cache = self.net.forward(self._state)
        values = q.tolist()
        greedy = values.index(max(values))  # the first index on ties
        action, nongreedy = greedy, False
        if self.draws.uniform() < self.epsilon:
            action = self.draws.integer(self.n_actions)
            nongreedy = action != greedy
        self._pending = (values, cache, action, nongreedy)
        return action

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q-values of `obs` under the current normalisation, without counting it or learning."""
        x = self._check(obs)
        if not math.isfinite(x.dot(x)):  # inf/NaN in x (or |x| > 1e154) make x.x non-finite
            raise BadInput("observation contains NaN or infinity")
        head = x[: self.obs_dim - self.raw_tail]
        stats = self.normalizer.stats
        normed = np.concatenate([(head - stats.mean) / np.sqrt(stats.var + 1e-8), x[len(head) :]]).astype(np.float32)
        return self.net.forward(normed, 2, False)[0]

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
        self.last = td_update(self, q, cache, action, r, next_state, done, nongreedy)
        self._state, self._raw = (None, None) if done else (next_state, x)
        self._given = None if done else next_obs
        return self.last["delta"]

    # -- persistence ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Arrays plus JSON-able scalars; `from_state_dict` continues bit for bit (between steps)."""
        if self._pending is not None:
            raise BadInput("state_dict() between act() and observe(): save after observe")
        _, keys, pos, has_gauss, gauss = self.draws.get_state()
        specs = [[s.n_in, s.n_out, s.layernorm, s.activation] for s in self.net.specs]
        obs_stats = self.normalizer.stats  # a copy
        scalars = {
            "obs_dim": self.obs_dim,
            "n_actions": self.n_actions,
            "hidden": list(self.hidden),
            "gamma": self.gamma,
            "lam": self.lam,
            "kappa": self.kappa,
            "lr": self.lr,
            "eps_start": self.eps_start,
            "eps_end": self.eps_end,
            "eps_decay_steps": self.eps_decay_steps,
            "raw_tail": self.raw_tail,
            "seed": self.seed,
            "sparsity": self.sparsity,
            "scale_rewards": self.scale_rewards,
            "steps": self.steps,
            "layers": specs,
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

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> StreamQ:
        from edge_rl.stream.network import LayerSpec

        s, a = d["scalars"], d["arrays"]
        if s.get("head_over"):
            raise BadInput("a head-adaptation state needs its policy: HeadStreamQ.restore(state, policy)")
        net = StreamNet([LayerSpec(int(i), int(o), bool(ln), act) for i, o, ln, act in s["layers"]])
        if a["theta"].shape != net.theta.shape or a["trace"].shape != net.theta.shape:
            raise BadInput("learner state: parameter and trace sizes do not match the layers")
        net.theta[:] = a["theta"]
        net.offsets[:] = a["offsets"]  # theta is stored centred: restoring both continues bit for bit
        keys = ("hidden", "gamma", "lam", "kappa", "lr", "eps_start", "eps_end", "eps_decay_steps", "raw_tail", "seed")
        learner = cls(
            s["obs_dim"],
            s["n_actions"],
            net=net,
            sparsity=s["sparsity"],
            scale_rewards=s["scale_rewards"],
            **{k: s[k] for k in keys},
        )
        learner.hidden = tuple(s["hidden"])
        learner.trace[:] = a["trace"]
        learner.steps = int(s["steps"])
        learner.normalizer.load(int(s["obs_count"]), a["obs_mean"], a["obs_m2"])
        rewards = learner.rewards
        rewards.u = float(s["reward_u"])
        rewards.stats = Welford()
        rewards.stats.count = int(s["reward_count"])
        rewards.stats.mean, rewards.stats.m2 = float(s["reward_mean"]), float(s["reward_m2"])
        learner.draws.set_state(("MT19937", a["rng_keys"], s["rng_pos"], s["rng_has_gauss"], s["rng_gauss"]))
        if s["mid_episode"]:
            learner._state, learner._raw = a["state"].copy(), a["raw"].copy()
        return learner

    # -- deployed policies ------------------------------------------------------------------------

    @classmethod
    def from_policy(cls, policy: Any, mode: str = "full", **kwargs: Any) -> StreamQ:
        """A learner that starts from a deployed IR (fp32 or int8); see `edge_rl.stream.adapt`."""
        from edge_rl.stream.adapt import from_policy

        return from_policy(policy, mode, **kwargs)

    def to_policy(self) -> Any:
        """The current network as a policy IR (Dense / LayerNorm / activations), to quantize and export again."""
        from edge_rl.stream.adapt import to_policy

        return to_policy(self)
