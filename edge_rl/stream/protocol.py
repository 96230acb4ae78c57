"""Run a streaming learner in a Gymnasium env, one step at a time, as the daemon will on a device.

`stream_cartpole` is the reference protocol of stream Q(lambda) on CartPole-v1: episodes capped
at 10,000 steps (truncation is terminal), a time feature t / 10,000 - 0.5 appended after
normalisation and left raw (`raw_tail=1`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_rl.gymenv import make_env

CARTPOLE_LIMIT = 10_000


@dataclass
class StreamRun:
    """Per finished episode: return, length, the global step it ended on, and the mean of info['success'].

    `success_rate` follows `edge_rl.evaluate`: the mean of info["success"] over the episode's steps.
    """

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    end_steps: list[int] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)

    def window_mean(self, start: int, end: int) -> float:
        """Mean return of the episodes that ended in (start, end] steps (NaN if none did), as `report.curve` bins."""
        values = [r for r, s in zip(self.returns, self.end_steps, strict=True) if start < s <= end]
        return float(np.mean(values)) if values else float("nan")


def run_stream(
    learner: Any,
    env_id: str,
    steps: int,
    seed: int,
    env_kwargs: dict[str, Any] | None = None,
    time_limit: int | None = None,
    time_feature: bool = False,
    time_lag: int = 0,
    on_step: Callable[[int, Any], None] | None = None,
    shift: tuple[int, dict[str, Any]] | None = None,
) -> StreamRun:
    """`steps` act/observe steps of `learner` (anything with act and observe) in a fresh env.

    With `time_feature`, t / time_limit - 0.5 is appended to each observation (t = steps since
    reset; needs `time_limit`); `time_lag=1` uses max(t - 1, 0) instead, the public reference
    wrapper's convention (-0.5 on the reset observation and after the first step).
    `on_step(step, learner)` runs after each step.
    `shift=(step, {"attr": value})` sets attributes of the unwrapped env at that step: the
    mid-run change a deployed policy must adapt to (e.g. AntiJam's `jammer`).
    """
    import gymnasium as gym

    if time_feature and not time_limit:
        raise ValueError("the time feature t / time_limit - 0.5 needs a time_limit")
    env = (
        gym.make(env_id, max_episode_steps=time_limit, **(env_kwargs or {}))
        if time_limit
        else make_env(env_id, env_kwargs)
    )

    def featured(obs: np.ndarray, t: int) -> np.ndarray:
        obs = np.asarray(obs, np.float64).ravel()
        return np.append(obs, max(t - time_lag, 0) / time_limit - 0.5) if time_feature else obs

    run = StreamRun()
    obs, _ = env.reset(seed=seed)
    t, ret, succ, reporting = 0, 0.0, 0.0, 0
    x = featured(obs, t)
    for step in range(steps):
        if shift is not None and step == shift[0]:
            for key, value in shift[1].items():
                setattr(env.unwrapped, key, value)
        action = learner.act(x)
        obs, reward, terminated, truncated, info = env.step(action)
        t += 1
        ret += float(reward)
        if "success" in info:
            succ, reporting = succ + bool(info["success"]), reporting + 1
        next_x = featured(obs, t)
        learner.observe(float(reward), next_x, terminated, truncated)
        if terminated or truncated:
            run.returns.append(ret)
            run.lengths.append(t)
            run.end_steps.append(step + 1)
            if reporting:
                run.successes.append(succ / reporting)
            obs, _ = env.reset()
            t, ret, succ, reporting = 0, 0.0, 0.0, 0
            next_x = featured(obs, t)
        x = next_x
        if on_step is not None:
            on_step(step, learner)
    env.close()
    return run


def stream_cartpole(learner: Any, steps: int, seed: int, **kwargs: Any) -> StreamRun:
    """The reference protocol: CartPole-v1, limit 10,000, raw time feature."""
    return run_stream(learner, "CartPole-v1", steps, seed, time_limit=CARTPOLE_LIMIT, time_feature=True, **kwargs)
