"""A Gymnasium environment that behaves like hardware speaking protocol 1.0.

`EnvDevice` turns env steps into OBS messages and ACTIONs into env steps, with a device's rules:
an action outside the action space or none at all means the safe action (counted), and a new
episode starts by itself after a terminal step, its first OBS sent without waiting. Two ways to
use it: `edge-rl device ENV_ID --link URL` runs it as a separate device process over a real link (`deviceloop.serve`),
and `sim://ENV_ID?kwargs` (registered as an entry point of `firmware_bridge.links`) runs it
in-process, in lock step with the host, for tests and demos without hardware.
"""

from __future__ import annotations

import json
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edge_rl.gymenv import EnvError, make_env
from firmware_bridge.links.base import LinkError, LinkUrl, Role, Transport
from firmware_bridge.protocol import (
    Action,
    Capability,
    Config,
    Error,
    ErrorCode,
    ForeignHello,
    Heartbeat,
    Hello,
    Message,
    Obs,
    PeerState,
    Reset,
    encode,
)

CONFIG_KEYS = ("action_timeout_ms",)
REWARD_SCALE = "reward_scale"  # a shift key of the device itself: the reward it reports is the true one x this
MAX_WAIT_MS = 60_000.0  # longest period or action timeout: a device that waits longer is a stuck device
MAX_VALID_MS = 1000  # cap on an ACTION's validity whatever the host asks (as the C library's default)


@dataclass(frozen=True)
class Shift:
    """A change of the running env at an env step: attributes of the unwrapped env, or `reward_scale`.

    `reward_scale: -1` poisons the reward the device reports (a sign flip); the counters and the
    window statistics keep the true reward.
    """

    step: int
    changes: dict[str, Any]

    @classmethod
    def parse(cls, text: str) -> Shift:
        """'STEP:JSON', e.g. '5000:{"jammer": "reactive"}'."""
        head, sep, tail = text.partition(":")
        try:
            step, changes = int(head), json.loads(tail)
        except ValueError:
            step, changes = -1, None
        if not sep or step < 0 or not isinstance(changes, dict) or not changes:
            raise EnvError(f'shift {text!r}: expected STEP:JSON, e.g. 5000:{{"jammer": "reactive"}}')
        return cls(step, changes)


@dataclass
class Window:
    """Ground truth over the last `every` env steps: the true mean reward and success rate, safe steps."""

    reward: float = 0.0
    success: float = 0.0
    successes: int = 0  # steps whose info had a "success" entry
    safe: int = 0
    steps: int = 0


@dataclass
class DeviceCounters:
    steps: int = 0
    episodes: int = 0
    safe_steps: int = 0  # steps taken with the safe action: no valid ACTION in time, or the link not ready
    invalid_actions: int = 0  # ACTIONs naming an action the device does not have
    overruns: int = 0  # periodic mode: ticks missed because a step or the host took too long
    episode_return: float = 0.0
    returns_sum: float = 0.0


class EnvDevice:
    """An environment with a device's interface: reset and step return the OBS messages to send."""

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any] | None = None,
        device_id: str = "sim",
        seed: int | None = None,
        heartbeat_ms: int = 100,
        shifts: tuple[Shift, ...] = (),
        window: int = 0,
        on_window: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """`shifts` change the env mid-run; every `window` steps `on_window` gets the ground-truth statistics."""
        self.env = make_env(env_id, env_kwargs)
        for shift in shifts:
            unknown = [k for k in shift.changes if k != REWARD_SCALE and not hasattr(self.env.unwrapped, k)]
            if unknown:
                self.env.close()
                raise EnvError(f"shift at step {shift.step}: {env_id} has no attribute {unknown[0]!r}")
        self.shifts = sorted(shifts, key=lambda s: s.step)
        self.reward_scale = 1.0
        self.window_size, self.on_window, self.window = window, on_window, Window()
        shape = tuple(int(d) for d in self.env.observation_space.shape)
        self.safe_action = int(getattr(self.env.unwrapped, "safe_action", 0))
        self.n_actions = int(self.env.action_space.n)
        self.hello = Hello(
            device_id,
            shape,
            self.n_actions,
            self.safe_action,
            heartbeat_ms=heartbeat_ms,
            capabilities=Capability.RESET | Capability.CONFIG | Capability.DEADMAN,
        )
        try:  # refuse now, with one line, what could never go out as a frame
            encode(self.hello)
            encode(Obs(np.zeros(int(np.prod(shape)), np.float32)))
        except (ValueError, struct.error) as exc:
            self.env.close()
            raise EnvError(f"{env_id} cannot be a protocol 1.0 device: {exc}") from None
        self.action_timeout_ms = 200.0
        self.counters = DeviceCounters()
        self._seed = seed
        self._started = time.monotonic()

    def reset(self, seed: int | None = None) -> list[Obs]:
        """Start an episode; the first OBS carries reward 0."""
        seed = seed if seed is not None else self._seed
        self._seed = None  # seed the first episode only; later ones continue the env's own stream
        observation, _ = self.env.reset(seed=seed)
        self.counters.episode_return = 0.0
        return [self._obs(observation, 0.0, False, False)]

    def step(self, action: int | None) -> list[Obs]:
        """Apply `action` (None or invalid: the safe action); a terminal step adds the next episode's first OBS."""
        c = self.counters
        if action is not None and not 0 <= action < self.n_actions:
            c.invalid_actions += 1
            action = None
        if action is None:
            c.safe_steps += 1
            self.window.safe += 1
            action = self.safe_action
        while self.shifts and self.shifts[0].step <= c.steps:
            self._apply(self.shifts.pop(0))
        observation, reward, terminated, truncated, info = self.env.step(action)
        c.steps += 1
        c.episode_return += float(reward)
        self._account(float(reward), info)
        out = [self._obs(observation, float(reward) * self.reward_scale, bool(terminated), bool(truncated))]
        if terminated or truncated:
            c.episodes += 1
            c.returns_sum += c.episode_return
            out += self.reset()
        return out

    def _apply(self, shift: Shift) -> None:
        for key, value in shift.changes.items():
            if key == REWARD_SCALE:
                self.reward_scale = float(value)
            else:
                setattr(self.env.unwrapped, key, value)

    def _account(self, reward: float, info: dict[str, Any]) -> None:
        w = self.window
        w.reward += reward
        w.steps += 1
        if "success" in info:
            w.success += float(info["success"])
            w.successes += 1
        if self.window_size and w.steps >= self.window_size:
            if self.on_window is not None:
                self.on_window(
                    {
                        "step": self.counters.steps,
                        "mean_reward": w.reward / w.steps,
                        "success_rate": w.success / w.successes if w.successes else None,
                        "safe_steps": w.safe,
                        "reward_scale": self.reward_scale,
                    }
                )
            self.window = Window()

    def configure(self, msg: Config) -> Error | None:
        """Apply a CONFIG message; an unknown key or a bad value is answered with an ERROR."""
        if msg.key not in CONFIG_KEYS:
            return Error(ErrorCode.UNKNOWN_CONFIG, f"unknown config key {msg.key!r}"[:64])
        if not (np.isfinite(msg.value) and 0 < msg.value <= MAX_WAIT_MS):
            return Error(ErrorCode.BAD_CONFIG_VALUE, f"{msg.key} must be in (0, {MAX_WAIT_MS:g}]"[:64])
        setattr(self, msg.key, float(msg.value))
        return None

    def close(self) -> None:
        self.env.close()

    def _obs(self, observation: Any, reward: float, terminated: bool, truncated: bool) -> Obs:
        t_us = int((time.monotonic() - self._started) * 1e6) & 0xFFFFFFFF
        return Obs(np.asarray(observation, np.float32).reshape(-1), reward, terminated, truncated, t_us)


class SimTransport(Transport):
    """An EnvDevice in the host's process: each ACTION steps the env at once (lock step, no wall clock)."""

    def __init__(self, device: EnvDevice) -> None:
        self.device = device
        self.describe = f"sim:{device.hello.device_id}"
        self._out: deque[Message] = deque()
        self._seq = 0
        self._last_obs: int | None = None
        self._stale = 0
        self._received = 0

    def open(self) -> None:
        self._out.clear()
        self._last_obs = None

    def send(self, msg: Message) -> int:
        seq, self._received = self._received, (self._received + 1) & 0xFFFF
        self._react(msg)
        return seq

    def _react(self, msg: Message) -> None:
        """What the device does with one message from the host."""
        if isinstance(msg, Hello):
            if msg.reply_requested:
                self._queue(replace(self.device.hello, reply_requested=False))
            if self._last_obs is None:
                self._queue(*self.device.reset())
        elif isinstance(msg, Action):
            if msg.answers != self._last_obs:
                self._stale += 1  # answers an older OBS: a device never applies it to a newer state
                return
            self._queue(*self.device.step(msg.action))
        elif isinstance(msg, Heartbeat):
            self._queue(Heartbeat(PeerState.READY))
        elif isinstance(msg, Reset):
            self._queue(*self.device.reset(msg.seed))
        elif isinstance(msg, Config):
            error = self.device.configure(msg)
            if error is not None:
                self._queue(error)

    def receive(self, timeout: float) -> list[Message | ForeignHello]:
        if not self._out:
            time.sleep(timeout)  # nothing happens in a simulation until the host acts
            return []
        out = list(self._out)
        self._out.clear()
        return out

    def close(self) -> None:
        self._out.clear()

    def counters(self) -> dict[str, int]:
        c = self.device.counters
        return {
            "steps": c.steps,
            "episodes": c.episodes,
            "safe_steps": c.safe_steps,
            "invalid_actions": c.invalid_actions,
            "stale_actions": self._stale,
        }

    def _queue(self, *msgs: Message) -> None:
        for msg in msgs:
            msg = replace(msg, seq=self._seq)
            self._seq = (self._seq + 1) & 0xFFFF
            if isinstance(msg, Obs):
                self._last_obs = msg.seq
            self._out.append(msg)


def open_transport(url: LinkUrl, local: Hello, role: Role) -> SimTransport:
    """`sim://ENV_ID?key=value&seed=N&shift=STEP:JSON;STEP:JSON`: the env's kwargs from the query (values as JSON).

    `shift` changes the running env at env steps (see `Shift`), e.g. `shift=5000:{"jammer":"reactive"}`.
    """
    if role != "host":
        raise LinkError("sim:// runs the device in-process: open it as the host")
    env_id = (url.netloc + url.path).lstrip("/")
    if not env_id:
        raise LinkError(f"{url.url!r} names no environment (e.g. sim://CartPole-v1 or sim://edge_rl/AntiJam-v0)")
    options = dict(url.options)
    shifts = options.pop("shift", "")
    kwargs: dict[str, Any] = {k: _value(v) for k, v in options.items()}
    seed = kwargs.pop("seed", None)
    if seed is not None and not (isinstance(seed, int) and seed >= 0):
        raise LinkError(f"sim:// seed must be an integer >= 0, got {seed!r}")
    try:
        parsed = tuple(Shift.parse(text) for text in shifts.split(";") if text)
        device = EnvDevice(env_id, kwargs, device_id=env_id, seed=seed, heartbeat_ms=local.heartbeat_ms, shifts=parsed)
    except ValueError as exc:  # EnvError is a ValueError: one line, never a traceback
        raise LinkError(str(exc)) from None
    return SimTransport(device)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word, e.g. jammer=sweeping
