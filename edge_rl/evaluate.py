"""Greedy evaluation of any batch policy on fresh, seeded episodes (numpy only, no torch).

Episodes run side by side so the policy sees one batched forward pass per step; episode i is
reset with seed `seed + i`, which makes every evaluation reproducible and comparable across
policies. `success_rate` is the mean of `info["success"]` over all steps, when the env reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge_rl.gymenv import make_env

BatchPolicy = Callable[[np.ndarray], np.ndarray]


@dataclass
class EvalResult:
    mean_return: float
    std_return: float
    episodes: int
    returns: list[float]
    lengths: list[int]
    success_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["success_rate"] is None:
            del d["success_rate"]
        return d


def evaluate(
    policy: BatchPolicy,
    env_id: str,
    episodes: int,
    seed: int,
    env_kwargs: dict[str, Any] | None = None,
    parallel: int = 32,
) -> EvalResult:
    """Run `episodes` greedy episodes, `parallel` at a time; `policy` maps (B, obs) -> (B,) actions."""
    returns: list[float] = []
    lengths: list[int] = []
    successes = steps_reporting = 0
    for wave_start in range(0, episodes, parallel):
        envs = [make_env(env_id, env_kwargs) for _ in range(min(parallel, episodes - wave_start))]
        obs = np.stack([env.reset(seed=seed + wave_start + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
        ret = np.zeros(len(envs))
        length = np.zeros(len(envs), int)
        live = list(range(len(envs)))
        while live:
            actions = policy(obs[live])
            still = []
            for i, a in zip(live, actions, strict=True):
                o, r, terminated, truncated, info = envs[i].step(int(a))
                obs[i], ret[i], length[i] = o, ret[i] + r, length[i] + 1
                if "success" in info:
                    successes += bool(info["success"])
                    steps_reporting += 1
                if not (terminated or truncated):
                    still.append(i)
            live = still
        for env in envs:
            env.close()
        returns += ret.tolist()
        lengths += length.tolist()
    return EvalResult(
        mean_return=float(np.mean(returns)),
        std_return=float(np.std(returns)),
        episodes=episodes,
        returns=returns,
        lengths=lengths,
        success_rate=successes / steps_reporting if steps_reporting else None,
    )
