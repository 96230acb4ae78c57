"""DQN hyperparameters: one dataclass that is the single source for the CLI, TOML files and docs.

Every field carries its help text, so `edge-rl train --help`, `--config run.toml` and the
`config` block written into `train.json` can never disagree. Values are resolved in this order:
defaults < per-environment preset (`PRESETS`) < TOML file < command-line flags.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def _f(default: Any, help: str) -> Any:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DQNConfig:
    """Double DQN with n-step returns, optional dueling head and LayerNorm."""

    env_id: str = _f("CartPole-v1", "Gymnasium environment id (Box observations, Discrete actions)")
    env_kwargs: dict = _f({}, "keyword arguments for gymnasium.make, as a JSON object")
    steps: int = _f(50_000, "budget of environment steps, summed over the vectorised envs")
    seed: int = _f(0, "seed for networks, exploration, replay sampling and environment resets")
    hidden: tuple = _f((64, 64), "hidden layer widths, e.g. 64,64")
    activation: str = _f("relu", "hidden activation: relu or leaky_relu")
    layernorm: bool = _f(False, "LayerNorm (with gain and bias) after every hidden linear layer")
    dueling: bool = _f(False, "dueling head V + A - mean(A) (linear, folded into one layer on export)")
    double: bool = _f(True, "Double DQN target: the online network picks, the target network rates")
    n_step: int = _f(3, "n-step returns (1 = classic one-step TD)")
    gamma: float = _f(0.99, "discount factor")
    lr: float = _f(1e-3, "Adam learning rate")
    batch_size: int = _f(64, "minibatch size per gradient step")
    buffer_size: int = _f(50_000, "replay capacity in transitions")
    learning_starts: int = _f(1_000, "environment steps of uniform-random play before learning starts")
    train_freq: int = _f(1, "vectorised env steps between training rounds")
    gradient_steps: int = _f(1, "gradient steps per training round")
    target_network: bool = _f(
        True,
        "bootstrap from a lagged target network (off: from the online network, as PQN does with LayerNorm; "
        "--double then has no second network to rate with and the target is the online max)",
    )
    target_update_interval: int = _f(250, "gradient steps between target-network updates")
    tau: float = _f(1.0, "target update coefficient: 1.0 = hard copy, <1 = Polyak averaging")
    max_grad_norm: float = _f(10.0, "clip the global gradient norm to this (0 = no clipping)")
    eps_start: float = _f(1.0, "initial exploration rate")
    eps_end: float = _f(0.05, "final exploration rate")
    eps_fraction: float = _f(0.1, "fraction of the step budget over which epsilon decays linearly")
    num_envs: int = _f(1, "environments stepped in lockstep (one batched forward pass per step)")
    normalize_obs: bool = _f(True, "freeze observation mean/var after learning_starts and bake them into the policy")
    eval_every: int = _f(5_000, "environment steps between greedy evaluations (0 = only at the end)")
    eval_episodes: int = _f(20, "episodes per greedy evaluation, on seeds disjoint from training")
    stop_reward: float | None = _f(
        None, "stop once an evaluation's mean return reaches this (default: env's threshold)"
    )
    early_stop: bool = _f(True, "allow stopping at stop_reward (as RL Zoo's StopTrainingOnRewardThreshold)")
    threads: int = _f(1, "torch intra-op threads (small networks run fastest on one)")

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        checks = {
            "steps": self.steps > 0,
            "seed": self.seed >= 0,
            "hidden": all(h > 0 for h in self.hidden),
            "activation": self.activation in ("relu", "leaky_relu"),
            "n_step": self.n_step >= 1,
            "gamma": 0.0 <= self.gamma <= 1.0,
            "lr": self.lr > 0,
            "batch_size": self.batch_size > 0,
            "buffer_size": self.buffer_size >= self.batch_size,
            "learning_starts": self.learning_starts >= self.batch_size,
            "train_freq": self.train_freq >= 1,
            "gradient_steps": self.gradient_steps >= 1,
            "target_update_interval": self.target_update_interval >= 1,
            "tau": 0.0 < self.tau <= 1.0,
            "max_grad_norm": self.max_grad_norm >= 0,
            "eps_end": 0.0 <= self.eps_end <= self.eps_start <= 1.0,
            "eps_fraction": 0.0 < self.eps_fraction <= 1.0,
            "num_envs": self.num_envs >= 1,
            "eval_episodes": self.eval_episodes >= 1,
            "threads": self.threads >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            settings = (f"{n}={getattr(self, n)!r} (--{n.replace('_', '-')})" for n in bad)
            raise ValueError("invalid DQN settings: " + ", ".join(settings))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d


# Tuned starting points per environment, in the spirit of RL Zoo's hyperparams/dqn.yml.
# Stopping at CartPole's 500 (confirmed on 40 episodes) rather than its 475 threshold: policies
# stopped at 475-495 often scored below 475 on the next twenty seeds.
PRESETS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {"batch_size": 128, "eval_every": 2_500, "stop_reward": 500.0},
    "edge_rl/AntiJam-v0": {"steps": 40_000},
    # the tuned PD baseline is within 2% of a privileged oracle: beating it takes a slower, longer run
    "edge_rl/Hover-v0": {"steps": 150_000, "lr": 5e-4, "gamma": 0.97},
    "edge_rl/LineFollow-v0": {"steps": 60_000},
}

FIELD_NAMES = frozenset(f.name for f in fields(DQNConfig))


def resolve_config(env_id: str, toml_path: str | Path | None = None, **overrides: Any) -> DQNConfig:
    """Build a config: defaults < preset for env_id < TOML file < explicit overrides."""
    values: dict[str, Any] = {"env_id": env_id, **PRESETS.get(env_id, {})}
    if toml_path is not None:
        with open(toml_path, "rb") as f:
            file_values = tomllib.load(f)
        file_values = file_values.get("dqn", file_values)
        unknown = sorted(set(file_values) - FIELD_NAMES)
        if unknown:
            raise ValueError(f"{toml_path}: unknown setting(s) {', '.join(unknown)}")
        values.update(file_values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["env_id"] = env_id
    return DQNConfig(**values)
