"""Recording the states a policy visits: calibration sets, distillation data, held-out tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edge_rl.gymenv import make_env


def collect_states(
    act: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    n_states: int,
    seed: int,
    epsilon: float = 0.0,
    env_kwargs: dict[str, Any] | None = None,
    n_envs: int = 8,
) -> np.ndarray:
    """Raw observations from `n_envs` envs run in lockstep under epsilon-greedy `act` (batch -> actions).

    Episode resets draw seeds seed, seed + 1, ...; exploration uses its own generator seeded
    with `seed`, so the same call returns the same states.
    """
    rng = np.random.default_rng(seed)
    envs = [make_env(env_id, env_kwargs) for _ in range(n_envs)]
    next_seed = seed
    obs = []
    for env in envs:
        obs.append(env.reset(seed=next_seed)[0])
        next_seed += 1
    current = np.asarray(obs, np.float32)
    states = np.empty((n_states, *current.shape[1:]), np.float32)
    filled = 0
    while filled < n_states:
        take = min(n_envs, n_states - filled)
        states[filled : filled + take] = current[:take]
        filled += take
        actions = np.asarray(act(current))
        explore = rng.random(n_envs) < epsilon
        actions = np.where(explore, rng.integers(0, envs[0].action_space.n, n_envs), actions)
        for i, env in enumerate(envs):
            o, _, terminated, truncated, _ = env.step(int(actions[i]))
            if terminated or truncated:
                o, _ = env.reset(seed=next_seed)
                next_seed += 1
            current[i] = o
    for env in envs:
        env.close()
    return states
