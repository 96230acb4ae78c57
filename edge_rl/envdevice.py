"""A Gymnasium environment that behaves like hardware speaking protocol 1.0.

`EnvDevice` turns env steps into OBS messages and ACTIONs into env steps, with a device's rules:
an action outside the action space or none at all means the safe action (counted), and a new
episode starts by itself after a terminal step, its first OBS sent without waiting. Two ways to
use it: `edge-rl device ENV_ID --link URL` runs it as a separate device process over a real link,
and `sim://ENV_ID?kwargs` (registered as an entry point of `firmware_bridge.links`) runs it
in-process, in lock step with the host, for tests and demos without hardware.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edge_rl.gymenv import make_env
from firmware_bridge.links.base import Link, LinkError, LinkUrl, Role, Transport
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
)

CONFIG_KEYS = ("action_timeout_ms",)


@dataclass
class DeviceCounters:
    steps: int = 0
    episodes: int = 0
    safe_steps: int = 0  # steps taken with the safe action: no valid ACTION in time, or the link not ready
    invalid_actions: int = 0  # ACTIONs naming an action the device does not have
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
    ) -> None:
        self.env = make_env(env_id, env_kwargs)
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
            action = self.safe_action
        observation, reward, terminated, truncated, _ = self.env.step(action)
        c.steps += 1
        c.episode_return += float(reward)
        out = [self._obs(observation, float(reward), bool(terminated), bool(truncated))]
        if terminated or truncated:
            c.episodes += 1
            c.returns_sum += c.episode_return
            out += self.reset()
        return out

    def configure(self, msg: Config) -> Error | None:
        """Apply a CONFIG message; an unknown key or a bad value is answered with an ERROR."""
        if msg.key not in CONFIG_KEYS:
            return Error(ErrorCode.UNKNOWN_CONFIG, f"unknown config key {msg.key!r}"[:64])
        if not np.isfinite(msg.value) or msg.value <= 0:
            return Error(ErrorCode.BAD_CONFIG_VALUE, f"{msg.key} must be > 0"[:64])
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
    """`sim://ENV_ID?key=value&seed=N`: the env's constructor kwargs from the query (numbers parsed as JSON)."""
    if role != "host":
        raise LinkError("sim:// runs the device in-process: open it as the host")
    env_id = (url.netloc + url.path).lstrip("/")
    if not env_id:
        raise LinkError(f"{url.url!r} names no environment (e.g. sim://CartPole-v1 or sim://edge_rl/AntiJam-v0)")
    kwargs: dict[str, Any] = {k: _value(v) for k, v in url.options.items()}
    seed = kwargs.pop("seed", None)
    if seed is not None and not (isinstance(seed, int) and seed >= 0):
        raise LinkError(f"sim:// seed must be an integer >= 0, got {seed!r}")
    try:
        device = EnvDevice(env_id, kwargs, device_id=env_id, seed=seed, heartbeat_ms=local.heartbeat_ms)
    except ValueError as exc:  # EnvError is a ValueError: one line, never a traceback
        raise LinkError(str(exc)) from None
    return SimTransport(device)


def _value(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word, e.g. jammer=sweeping


def serve(
    device: EnvDevice, link: Link, steps: int = 0, period_ms: float = 0.0, stop: Callable[[], bool] = lambda: False
) -> None:
    """Run `device` over `link` as its hardware would, for `steps` env steps (0: until `stop()`).

    Lock step (`period_ms` 0): after each OBS wait for the ACTION answering it, at most
    `device.action_timeout_ms`, then step with it or with the safe action. Periodic (`period_ms`
    > 0): step every period with the newest ACTION still within its validity time, else the safe
    action. Either way nothing is applied while the link is not ready (the deadman), and after
    a loss the device acts on ACTIONs again only once the host has said HELLO again.
    """
    pending = device.reset()
    in_force: tuple[int, float] | None = None  # periodic mode: (action, monotonic expiry)
    next_tick = time.monotonic()
    while not stop() and (not steps or device.counters.steps < steps):
        answer_to = None
        for obs in pending:
            answer_to = link.send(obs)  # a terminal OBS is followed by the next episode's first: answer that one
        next_tick = next_tick + period_ms / 1000 if period_ms else time.monotonic() + device.action_timeout_ms / 1000
        action, pending = None, []
        while not pending:
            msg = link.recv(max(next_tick - time.monotonic(), 0.0))
            if msg is None:
                break
            if isinstance(msg, Action):
                if period_ms:
                    in_force = (msg.action, time.monotonic() + msg.valid_ms / 1000)
                elif msg.answers == answer_to:
                    action = msg.action
                    break
            elif isinstance(msg, Reset):
                pending = device.reset(msg.seed)
            elif isinstance(msg, Config):
                error = device.configure(msg)
                if error is not None:
                    link.send(error)
        if pending:
            continue  # a RESET started a new episode: send its first OBS, step nothing
        if period_ms and in_force is not None and time.monotonic() < in_force[1]:
            action = in_force[0]
        pending = device.step(action if link.ready else None)
