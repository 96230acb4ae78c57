"""Classic scripted controllers: the bar a learned policy has to clear.

Each factory is called once per episode with the unwrapped env, may read its
static configuration (n_channels, history, ...) and returns a policy that sees
observations only. `PRIVILEGED` holds reference controllers that read the true
simulator state; they give best-return references and are never baselines.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from edge_rl.envs.antijam import FLOOR_POWER, JAM_POWER
from edge_rl.envs.hover import THRUST, G

Policy = Callable[[np.ndarray], int]
Factory = Callable[[gym.Env], Policy]

_JAM_THRESHOLD = 0.5 * (FLOOR_POWER + JAM_POWER)  # sensed power above this = jammed


def _policy_rng(env: gym.Env) -> np.random.Generator:
    """Baseline randomness derived from the env seed without consuming env draws
    (a far-jumped copy of the env's PCG64 stream)."""
    return np.random.Generator(env.np_random.bit_generator.jumped())


# --- AntiJam ---------------------------------------------------------------------------------


def _split_antijam(env: gym.Env, obs: np.ndarray) -> tuple[np.ndarray, int]:
    n, k = env.n_channels, env.history
    return obs[: n * k].reshape(k, n), int(np.argmax(obs[n * k :]))


def antijam_fixed(env: gym.Env) -> Policy:
    """Never hop: stay on the channel the radio starts on (no anti-jamming at all)."""
    return lambda obs: _split_antijam(env, obs)[1]


def antijam_random_hop(env: gym.Env) -> Policy:
    """Blind frequency hopping: a fresh uniformly random channel every slot."""
    rng = _policy_rng(env)
    return lambda obs: int(rng.integers(env.n_channels))


def antijam_sense_avoid(env: gym.Env) -> Policy:
    """Stay while the current channel is clean; once jammed, hop to the channel
    with the lowest mean sensed power over the scan window."""

    def policy(obs: np.ndarray) -> int:
        frames, current = _split_antijam(env, obs)
        if frames[0, current] < _JAM_THRESHOLD:
            return current
        power = frames.mean(axis=0)
        power[current] = np.inf
        return int(np.argmin(power))

    return policy


def antijam_afh(env: gym.Env) -> Policy:
    """Adaptive frequency hopping (Bluetooth-AFH style): hop every slot to a random
    channel among those sensed clean in the latest scan."""
    rng = _policy_rng(env)

    def policy(obs: np.ndarray) -> int:
        frames, _ = _split_antijam(env, obs)
        clean = np.flatnonzero(frames[0] < _JAM_THRESHOLD)
        return int(rng.choice(clean)) if clean.size else int(rng.integers(env.n_channels))

    return policy


# --- Hover -----------------------------------------------------------------------------------


def hover_bang_bang(env: gym.Env) -> Policy:
    """Thermostat-style: "high" thrust below the target, "low" above it."""
    high, low = env.action_names.index("high"), env.action_names.index("low")
    return lambda obs: high if obs[3] > 0.0 else low


def hover_pd(env: gym.Env, kp: float = 12.0, kd: float = 4.0) -> Policy:
    """PD on (target - altitude, velocity) -> thrust, snapped to the nearest level.
    Gains picked by a small grid search on the nominal drone (battery_sag=0)."""
    levels = np.asarray(THRUST)

    def policy(obs: np.ndarray) -> int:
        thrust = 1.0 + (kp * float(obs[3]) - kd * float(obs[1])) / G
        return int(np.argmin(np.abs(levels - thrust)))

    return policy


# --- LineFollow ------------------------------------------------------------------------------

_LINE_SEEN = 0.3  # a sensor above this reflectance sees the line


def linefollow_bang_bang(env: gym.Env) -> Policy:
    """Steer toward the strongest sensor (sensor i -> action i, left to right);
    keep the last command while the line is lost."""
    n = len(env.action_names)

    def policy(obs: np.ndarray) -> int:
        sensors = obs[:n]
        if sensors.max() < _LINE_SEEN:
            return int(np.argmax(obs[-n:]))
        return int(np.argmax(sensors))

    return policy


def linefollow_proportional(env: gym.Env, kp: float = 1.5) -> Policy:
    """P control on the line centroid under the sensor bar, rounded to a steering level;
    keep the last command while the line is lost."""
    n = len(env.action_names)
    centre = (n - 1) / 2
    index = np.arange(n) - centre

    def policy(obs: np.ndarray) -> int:
        weight = np.maximum(obs[:n] - _LINE_SEEN, 0.0)
        if weight.sum() <= 0.0:
            return int(np.argmax(obs[-n:]))
        centroid = float(weight @ index / weight.sum())
        return int(np.clip(round(centre + kp * centroid), 0, n - 1))

    return policy


BASELINES: dict[str, dict[str, Factory]] = {
    "edge_rl/AntiJam-v0": {
        "fixed": antijam_fixed,
        "random_hop": antijam_random_hop,
        "sense_avoid": antijam_sense_avoid,
        "afh": antijam_afh,
    },
    "edge_rl/Hover-v0": {"bang_bang": hover_bang_bang, "pd": hover_pd},
    "edge_rl/LineFollow-v0": {"bang_bang": linefollow_bang_bang, "proportional": linefollow_proportional},
}

PRIVILEGED: dict[str, dict[str, Factory]] = {
    "edge_rl/Hover-v0": {"oracle": lambda env: lambda obs: env.oracle_action()},
}


def run_baseline(env_id: str, name: str, episodes: int, seed: int, **env_kwargs) -> dict:
    """Roll out a baseline (or privileged reference) for `episodes` episodes; episode i uses seed+i."""
    factories = {**BASELINES.get(env_id, {}), **PRIVILEGED.get(env_id, {})}
    if name not in factories:
        raise ValueError(f"unknown baseline {name!r} for {env_id}; expected one of {sorted(factories)}")
    env = gym.make(env_id, **env_kwargs)
    returns, successes, steps = [], 0, 0
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        policy = factories[name](env.unwrapped)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            total += float(reward)
            successes += bool(info["success"])
            steps += 1
            done = terminated or truncated
        returns.append(total)
    env.close()
    result = {
        "env_id": env_id,
        "baseline": name,
        "episodes": episodes,
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "success_rate": successes / max(steps, 1),
        "mean_length": steps / max(episodes, 1),
    }
    best = getattr(env.unwrapped, "best_success_rate", None)
    if best is not None:
        result["best_success_rate"] = best
    return result
