"""Small policies shaped like the trained ones, shared by the export, bundle and runtime tests."""

from __future__ import annotations

import functools
from itertools import pairwise
from pathlib import Path

import numpy as np

from edge_rl.layers import Activation, Dense
from edge_rl.policy import ActionSpec, ObservationSpec, Policy
from edge_rl.rollout import collect_states
from quantize.convert import default_plan, quantize_policy
from quantize.equalize import equalize_ranges

ENVS = {
    "cartpole": ("CartPole-v1", {}, 40.0),  # Q offsets of the trained policies' magnitude
    "antijam": ("edge_rl/AntiJam-v0", {"jammer": "sweeping"}, 95.0),
}
PRECISIONS = ("fp32", "int8", "1bit")


def mlp(env: str, hidden: tuple[int, ...], seed: int) -> tuple[Policy, np.ndarray]:
    """A random ReLU MLP shaped for `env`, normalised on its states, Q-values around the trained ones' size."""
    env_id, kwargs, offset = ENVS[env]
    rng = np.random.default_rng(seed)
    probe = collect_states(lambda o: rng.integers(0, 2, len(o)), env_id, 3000, seed, 1.0, kwargs)
    n_actions = 2 if env == "cartpole" else 8
    sizes = [probe.shape[1], *hidden, n_actions]
    layers: list = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        last = i == len(sizes) - 2
        layers.append(Dense(rng.normal(size=(b, a)) / np.sqrt(a), rng.normal(size=b) * 0.1 + (offset if last else 0)))
        if not last:
            layers.append(Activation("relu"))
    spec = ObservationSpec(
        probe.shape[1:],
        np.full(probe.shape[1:], -np.inf),
        np.full(probe.shape[1:], np.inf),
        probe.mean(0),
        probe.var(0) + 1e-6,
    )
    policy = Policy(spec, ActionSpec(n_actions, safe=1), layers, {"env_id": env_id, "env_kwargs": kwargs, "seed": seed})
    return policy, probe


def make(env: str, precision: str) -> Policy:
    """fp32 48x48, int8 48x48 (equalised, bias-corrected PTQ) or 1-bit 64x64x64 hidden layers."""
    if precision == "1bit":
        policy, states = mlp(env, (64, 64, 64), 1)
        return quantize_policy(policy, states, default_plan(4, "1bit"))
    policy, states = mlp(env, (48, 48), 0)
    if precision == "int8":
        plan = default_plan(3, "int8")
        return quantize_policy(equalize_ranges(policy, states, plan), states, plan, correct_bias=True)
    return policy


@functools.cache
def case_for(env: str, precision: str) -> tuple[str, Policy, np.ndarray]:
    """The policy and 10k held-out states it visits (epsilon 0.2, seeds from 77)."""
    policy = make(env, precision)
    env_id, kwargs, _ = ENVS[env]
    return env, policy, collect_states(policy.act, env_id, 10_000, 77, 0.2, kwargs)


def antijam_teacher(seed: int, directory: Path) -> Policy:
    """A DQN trained on the sweeping jammer (25k steps, 64x64), int8 post-training quantized (needs torch)."""
    from edge_rl.train.config import resolve_config
    from edge_rl.train.dqn import train_dqn

    kwargs = {"jammer": "sweeping"}
    cfg = resolve_config("edge_rl/AntiJam-v0", env_kwargs=kwargs, seed=seed, steps=25_000, hidden=(64, 64))
    policy, _ = train_dqn(cfg, directory, progress=False)
    states = collect_states(policy.act, "edge_rl/AntiJam-v0", 3000, 0, 0.1, kwargs)
    plan = default_plan(3, "int8")
    return quantize_policy(equalize_ranges(policy, states, plan), states, plan, correct_bias=True)
