"""Run an agent in a Gymnasium env, one step at a time, as the daemon will run it on a device.

The one module of `edge_rl.stream` that imports gymnasium (the device side never does).
`stream_cartpole` is the reference protocol of stream Q(lambda) on CartPole-v1: episodes capped
at 10,000 steps (truncation is terminal), a time feature t / 10,000 - 0.5 appended after
normalisation and left raw (`raw_tail=1`). `write_adaptation` is `edge-rl adapt`: a run, then the
curve, the adapted policy and the learner's state on disk.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_rl.agent import Agent
from edge_rl.atomic import write_atomic
from edge_rl.errors import BadInput
from edge_rl.gymenv import make_env
from edge_rl.stream.learner import StreamQ
from edge_rl.stream.report import curve, plot
from edge_rl.stream.state import save_state

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
    learner: Agent,
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
    """`steps` act/observe steps of `learner` (any `Agent`) in a fresh env.

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
    if shift is not None:
        check_shift(env_id, env_kwargs, shift, steps)

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


def check_shift(env_id: str, env_kwargs: dict[str, Any] | None, shift: tuple[int, dict[str, Any]], steps: int) -> None:
    """Refuse, before a run starts, a shift that would fail or do nothing mid-run: a step outside the run,
    an attribute the env does not have, or a value it rejects (tried on a scratch env, reset and stepped)."""
    step, changes = shift
    if not 0 <= step < steps:
        raise BadInput(f"--shift step {step} is outside the run's steps 0..{steps - 1}")
    if not changes:
        raise BadInput('--shift changes nothing: give attributes to set, like {"jammer": "reactive"}')
    scratch = make_env(env_id, env_kwargs)
    try:
        base = scratch.unwrapped
        for key, value in changes.items():
            if key.startswith("_") or not hasattr(base, key) or callable(getattr(base, key)):
                raise BadInput(f"--shift: {env_id} has no setting {key!r}")
            setattr(base, key, value)
        scratch.reset(seed=0)
        for _ in range(10):
            scratch.step(scratch.action_space.sample())
    except BadInput:
        raise
    except Exception as e:  # whatever the env raises for a value it cannot take
        raise BadInput(f"--shift {changes}: {env_id} cannot run with it ({e})") from None
    finally:
        scratch.close()


def stream_cartpole(learner: Agent, steps: int, seed: int, **kwargs: Any) -> StreamRun:
    """The reference protocol: CartPole-v1, limit 10,000, raw time feature."""
    return run_stream(learner, "CartPole-v1", steps, seed, time_limit=CARTPOLE_LIMIT, time_feature=True, **kwargs)


def write_adaptation(
    learner: StreamQ,
    env_id: str,
    env_kwargs: dict[str, Any],
    steps: int,
    seed: int,
    window: int,
    shift: tuple[int, dict[str, Any]] | None,
    out: Path,
) -> str:
    """Run `learner` for `steps`, write policy, state, adapt.json and curve.png to `out`; one-line summary."""
    t0 = time.perf_counter()
    run = run_stream(learner, env_id, steps, seed, env_kwargs, shift=shift)
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    points = curve(run, steps, window)
    learner.to_policy().save(out)
    save_state(learner, out)
    mode = learner.mode
    report = {
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "mode": mode,
        "steps": steps,
        "seed": seed,
        "shift": list(shift) if shift else None,
        "gamma": learner.gamma,
        "seconds": round(seconds, 2),
        "steps_per_second": round(steps / seconds, 1),
        "episodes": len(run.returns),
        "curve": points,
    }
    write_atomic(out / "adapt.json", json.dumps(report, indent=1) + "\n")
    plotted = plot(points, f"{env_id}: {mode} learner", out / "curve.png", shift[0] if shift else None)
    last = [v for v in (points["success_rate"] if run.successes else points["mean_return"]) if v is not None]
    tail = f"last window {last[-1]:.3f}" if last else "no finished episode"
    return (
        f"{out}: {mode} adaptation, {steps:,} steps in {seconds:.1f} s ({steps / seconds:,.0f} steps/s), "
        f"{len(run.returns)} episodes, {tail}" + ("" if plotted else " (no matplotlib: curve.png skipped)")
    )
