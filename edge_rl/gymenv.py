"""Making Gymnasium environments and reading their contract into IR specs.

Any env with a Box observation and a Discrete action space works; the project's own envs
(`edge_rl/...`) are registered on import here. Problems are raised as `EnvError` with one
readable line, which the CLI turns into exit code 2.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

import edge_rl.envs  # noqa: F401 - registers edge_rl/AntiJam-v0, Hover-v0, LineFollow-v0
from edge_rl.errors import BadInput
from edge_rl.policy import ActionSpec, ObservationSpec, Policy


class EnvError(BadInput):
    """The environment id, its kwargs or its spaces are unusable."""


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> gym.Env:
    """gymnasium.make with a clear error for unknown ids, bad kwargs and unsupported spaces."""
    try:
        env = gym.make(env_id, **(env_kwargs or {}))
    except gym.error.Error as e:
        raise EnvError(f"cannot make environment {env_id!r}: {e}") from None
    except (TypeError, ValueError) as e:
        raise EnvError(f"bad env kwargs for {env_id!r}: {e}") from None
    if not isinstance(env.observation_space, gym.spaces.Box) or not isinstance(env.action_space, gym.spaces.Discrete):
        env.close()
        raise EnvError(f"{env_id} needs a Box observation and a Discrete action space")
    return env


def check_fits(policy: Policy, env_id: str, env_kwargs: dict[str, Any] | None = None, name: str = "policy") -> None:
    """Refuse a policy whose observation or action count does not match the env's."""
    env = make_env(env_id, env_kwargs)
    obs_spec, action_spec = env_specs(env)
    env.close()
    if obs_spec.size != policy.observation.size or action_spec.n != policy.action.n:
        raise EnvError(
            f"{name} expects {policy.observation.size} observations and {policy.action.n} actions, "
            f"{env_id} has {obs_spec.size} and {action_spec.n}"
        )


def env_specs(env: gym.Env) -> tuple[ObservationSpec, ActionSpec]:
    """Observation bounds and action names/safe action, read from the env where it offers them."""
    space = env.observation_space
    low = np.asarray(space.low, np.float32).ravel()
    high = np.asarray(space.high, np.float32).ravel()
    names = tuple(getattr(env.unwrapped, "observation_names", ()) or ())
    action_names = tuple(getattr(env.unwrapped, "action_names", ()) or ())
    safe = int(getattr(env.unwrapped, "safe_action", 0))
    return ObservationSpec.unnormalized(low, high, names), ActionSpec(int(env.action_space.n), action_names, safe)
