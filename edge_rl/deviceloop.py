"""The device's own loop: `EnvDevice` served over a link, in lock step with the host or on a period.

What `edge-rl device` runs: a simulated device with a device's timing rules (setpoints with a
validity, the safe action when none is valid or the link is not ready, missed ticks counted).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_rl.envdevice import MAX_VALID_MS, EnvDevice
from firmware_bridge.links.session import Link
from firmware_bridge.protocol import Action, Config, Obs, Reset


@dataclass
class Setpoint:
    """Periodic mode's action in force: valid until `expiry`, only for the episode and session it was sent in."""

    action: int | None = None
    expiry: float = 0.0
    episode_start: int = 0  # sequence number of the current episode's first OBS
    handshakes: int = 0

    def clear(self) -> None:
        self.action = None

    def offer(self, msg: Action) -> None:
        if (msg.answers - self.episode_start) % 65536 < 32768:  # answers an OBS of this episode
            self.action, self.expiry = msg.action, time.monotonic() + min(msg.valid_ms, MAX_VALID_MS) / 1000

    def current(self) -> int | None:
        return self.action if self.action is not None and time.monotonic() < self.expiry else None


def serve(
    device: EnvDevice, link: Link, steps: int = 0, period_ms: float = 0.0, stop: Callable[[], bool] = lambda: False
) -> None:
    """Run `device` over `link` as its hardware would, for `steps` env steps (0: until `stop()`).

    Lock step (`period_ms` 0): after each OBS wait for the ACTION answering it, at most
    `device.action_timeout_ms`, then step with it or with the safe action. Periodic (`period_ms`
    > 0): step every period with the newest ACTION still within its validity (capped at
    MAX_VALID_MS) that answers an OBS of the current episode, else the safe action; ticks missed
    while a step ran long are skipped and counted, never caught up in a burst. A setpoint never
    survives a link loss, a new handshake, a RESET or the end of its episode, and nothing but the
    safe action is applied while the link is not ready.
    """
    pending, new_episode = device.reset(), True
    setpoint = Setpoint(handshakes=link.session.handshakes)
    next_tick = time.monotonic()
    while not stop() and (not steps or device.counters.steps < steps):
        seqs = [link.send(obs) for obs in pending]
        answer_to = seqs[-1]  # a terminal OBS is followed by the next episode's first: answer that one
        if new_episode:
            setpoint.clear()
            setpoint.episode_start = answer_to if answer_to is not None else setpoint.episode_start
        now = time.monotonic()
        if period_ms:
            next_tick += period_ms / 1000
            if next_tick < now:
                device.counters.overruns += 1
                next_tick = now + period_ms / 1000
        else:
            next_tick = now + device.action_timeout_ms / 1000
        action, pending = _until_tick(device, link, next_tick, answer_to, setpoint if period_ms else None, stop)
        if pending or stop():
            new_episode = True
            continue  # a RESET started a new episode: send its first OBS, step nothing
        if period_ms:
            action = setpoint.current()
        pending = device.step(action if link.ready else None)
        new_episode = len(pending) > 1


def _until_tick(
    device: EnvDevice,
    link: Link,
    tick: float,
    answer_to: int | None,
    setpoint: Setpoint | None,
    stop: Callable[[], bool],
) -> tuple[int | None, list[Obs]]:
    """Handle the host's messages until `tick`: (the lock-step answer, or the OBS of a RESET's new episode)."""
    while not stop():
        msg = link.recv(min(max(tick - time.monotonic(), 0.0), 0.1))
        if setpoint is not None and (link.session.handshakes != setpoint.handshakes or not link.ready):
            setpoint.handshakes = link.session.handshakes
            setpoint.clear()  # a fresh session starts without a setpoint
        if isinstance(msg, Action):
            if setpoint is not None:
                setpoint.offer(msg)
            elif msg.answers == answer_to:
                return msg.action, []
        elif isinstance(msg, Reset):
            return None, device.reset(msg.seed)
        elif isinstance(msg, Config):
            error = device.configure(msg)
            if error is not None:
                link.send(error)
        if time.monotonic() >= tick:
            break
    return None, []
