"""Teacher-forced runs of on-device head learning: a recorded observation stream and the numpy reference.

Shared by the host-compiled learner tests (`test_headq.py`) and the Cortex-M tests under QEMU.
A `Frame` is what a device sends: the first observation of an episode with reward 0, then each
step's next observation with its reward and flags (a terminal one is not answered).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from edge_rl.gymenv import make_env
from edge_rl.policy import Policy
from edge_rl.stream.adapt import from_policy


class Frame(NamedTuple):
    obs: np.ndarray  # float32
    reward: float  # a float32 value, as the wire carries it
    terminated: bool
    truncated: bool

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


def record(policy: Policy, n: int, seed: int, explore: float = 0.3) -> list[Frame]:
    """`n` frames of the policy's own environment, acting epsilon-greedily (the actions taken are not kept)."""
    env = make_env(policy.metadata["env_id"], policy.metadata.get("env_kwargs") or {})
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    frames = [Frame(np.asarray(obs, np.float32), 0.0, False, False)]
    while len(frames) < n:
        action = int(rng.integers(policy.action.n)) if rng.random() < explore else int(policy.act(obs))
        obs, reward, terminated, truncated, _ = env.step(action)
        frames.append(Frame(np.asarray(obs, np.float32), float(np.float32(reward)), terminated, truncated))
        if terminated or truncated:
            obs, _ = env.reset()
            frames.append(Frame(np.asarray(obs, np.float32), 0.0, False, False))
    return frames[:n]


class Reference(NamedTuple):
    greedy: list[int]  # the numpy learner's greedy action on each answered frame, before its update
    ties: list[bool]  # whether its two best Q-values were within 1e-6 of max |Q| there (rounding decides)
    theta: np.ndarray  # the final head, one row [W | b] per action


def reference(policy: Policy, frames: list[Frame], actions: list[int]) -> Reference:
    """The numpy head learner fed the device's actions.

    The device acts before it learns, so its greedy action on a frame is the numpy learner's on the
    head as it was before that frame's update; the update is `observe` then `behave` with the
    device's action.
    """
    learner = from_policy(policy, "head")
    greedy, ties, taken, pending = [], [], iter(actions), False
    for frame in frames:
        if not frame.done:
            q = learner.q_values(frame.obs)
            top = np.sort(q)[::-1]
            greedy.append(int(np.argmax(q)))
            ties.append(len(q) > 1 and top[0] - top[1] <= 1e-6 * np.abs(q).max())
        if pending:
            learner.observe(frame.reward, frame.obs, frame.terminated, frame.truncated)
        if not frame.done:
            learner.behave(frame.obs, next(taken))
        pending = not frame.done
    return Reference(greedy, ties, learner.net.theta.reshape(learner.n_actions, -1).copy())


# The bound is 1e-4 of max |theta|; measured 2e-8 to 2.5e-7 (x86 under three OpenBLAS kernel
# sets, and soft float on the Cortex-M3), so the tests hold 1e-6: a float32 TD target or a lost
# rounding step shows up, the order of a float32 sum does not.
TOLERANCE = 1e-6


def assert_equivalent(
    policy: Policy, frames: list[Frame], actions: list[int], theta: np.ndarray, epsilon: float | None = 0.0
) -> float:
    """The device learnt as the numpy head learner: returns max |d theta| / max |theta|.

    `epsilon` is the device's exploration: 0 (its actions are the greedy ones, float32 ties aside),
    a fixed rate, or None for the header's schedule; exploring, the share of non-greedy actions
    must be what the rate predicts (within 4.5 standard deviations).
    """
    ref = reference(policy, frames, actions)
    assert len(actions) == len(ref.greedy) == sum(not f.done for f in frames)
    differ = [i for i, (a, g) in enumerate(zip(actions, ref.greedy, strict=True)) if a != g]
    if epsilon == 0.0:
        assert all(ref.ties[i] for i in differ), f"actions differ at {[i for i in differ if not ref.ties[i]]}"
        assert len(differ) <= len(actions) // 100, f"{len(differ)} ties decided differently"
    else:  # a random action is another than the greedy one with probability (n - 1) / n
        learner = from_policy(policy, "head")
        t = np.arange(1, len(actions) + 1)
        schedule = learner.eps_start + (learner.eps_end - learner.eps_start) * t / learner.eps_decay_steps
        rate = np.full(len(t), epsilon) if epsilon is not None else np.maximum(schedule, learner.eps_end)
        p = float(rate.mean()) * (policy.action.n - 1) / policy.action.n
        spread = 4.5 * np.sqrt(p * (1 - p) / len(actions)) + 0.01  # + float32 ties
        assert abs(len(differ) / len(actions) - p) <= spread, (len(differ) / len(actions), p)
    start = from_policy(policy, "head").net.theta.astype(np.float64)
    scale = float(np.abs(ref.theta).max())
    err = float(np.abs(np.asarray(theta, np.float64).ravel() - ref.theta.ravel()).max())
    moved = float(np.abs(ref.theta.ravel() - start).max())
    assert moved > 1e4 * err, f"the head barely learnt ({moved:.3g}) next to the difference {err:.3g}"
    assert err <= TOLERANCE * scale, f"max |d theta| {err:.3g} is {err / scale:.2g} of max |theta| {scale:.3g}"
    return err / scale


class Controller(Protocol):
    """Whatever answers a device's OBS: `firmware_bridge.qemu.Plant` (the MCU) or a numpy stand-in."""

    def act(
        self, observation: np.ndarray, reward: float = 0.0, terminated: bool = False, truncated: bool = False
    ) -> tuple[int, bool] | None: ...


class Frozen:
    """The exported policy without learning: what the MCU answers with `learn` 0 (tests/test_cortex_m.py)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def act(
        self, observation: np.ndarray, reward: float = 0.0, terminated: bool = False, truncated: bool = False
    ) -> tuple[int, bool] | None:
        return None if terminated or truncated else (int(self.policy.act(observation)), False)


def teacher_forced(controller: Controller, frames: list[Frame]) -> list[int]:
    """Send the recorded frames; the actions the controller answered (not applied to anything)."""
    answers = [controller.act(f.obs, f.reward, f.terminated, f.truncated) for f in frames]
    return [answer[0] for answer in answers if answer is not None]


def jammer_switch(controller: Controller, steps: int, switch_at: int, seed: int, then: str = "reactive") -> np.ndarray:
    """Success (0/1) per slot of AntiJam under the controller; the sweeping jammer turns `then` at `switch_at`."""
    env = make_env("edge_rl/AntiJam-v0", {"jammer": "sweeping"})
    obs, _ = env.reset(seed=seed)
    reward, terminated, truncated = 0.0, False, False
    success = np.zeros(steps)
    for t in range(steps):
        if t == switch_at:
            env.unwrapped.jammer = then
        answer = controller.act(np.asarray(obs, np.float32), reward, terminated, truncated)
        if answer is None:  # a terminal OBS: the next episode's first follows
            obs, _ = env.reset()
            reward, terminated, truncated = 0.0, False, False
            answer = controller.act(np.asarray(obs, np.float32))
        obs, reward, terminated, truncated, info = env.step(answer[0])
        reward = float(np.float32(reward))
        success[t] = info["success"]
    return success


def jammer_switch_on_the_mcu(elf: Path, steps: int, switch_at: int, seed: int) -> np.ndarray:
    """`jammer_switch` with the firmware `elf` learning its head under QEMU (exploration draws seed + 1)."""
    from firmware_bridge.qemu import Plant, boot

    with boot(elf) as machine:
        plant = Plant(machine.port(0))
        plant.hello()
        plant.configure("seed", float(seed + 1))
        plant.configure("learn", 1.0)
        success = jammer_switch(plant, steps, switch_at, seed)
    assert not plant.errors, plant.errors
    return success
