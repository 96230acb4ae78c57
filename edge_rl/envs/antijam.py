"""AntiJam-v0: pick a radio channel each slot while a jammer attacks the band.

The observation is what a cheap IoT radio can really see: a short spectral-scan
history (normalised jammer power per channel, noisy) plus its own current
channel. The classic scripted defences (stay, random hopping, hop-when-jammed)
cannot anticipate a sweeping or reactive jammer; a learned policy can, because
the next jammed band is a function of the observation.
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

JAMMERS = ("constant", "random", "sweeping", "reactive", "switching")
BASE_JAMMERS = JAMMERS[:4]  # the kinds a "switching" jammer cycles through
EPISODE_STEPS = 100
JAM_POWER = 0.9  # normalised sensed power of a jammed channel
FLOOR_POWER = 0.1  # normalised noise floor of a clean channel


class AntiJamEnv(gym.Env):
    """Channel selection against a jammer; `jammer` is the shift knob.

    Slot t: the agent picks channel a_t, the jammer picks a set of jammed
    channels J_t, the packet is delivered iff a_t not in J_t, and the radio then
    senses the power of every channel during slot t (the radio's own signal is
    excluded). The first observation already holds `history` sensed slots,
    because the jammer runs for `history` slots before the episode starts.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        n_channels: int = 8,
        history: int = 4,
        jammer: str = "sweeping",
        width: int = 3,
        sweep_width: int = 3,
        sweep_speed: int = 2,
        reactive_width: int = 3,
        reactive_delay: int = 1,
        switch_every: int = 25,
        hop_cost: float = 0.05,
        sense_noise: float = 0.05,
    ) -> None:
        if n_channels < 2:
            raise ValueError(f"n_channels must be >= 2, got {n_channels}")
        for name, value in (("width", width), ("sweep_width", sweep_width), ("reactive_width", reactive_width)):
            if not 1 <= value <= n_channels:
                raise ValueError(f"{name} must be in [1, n_channels={n_channels}], got {value}")
        for name, value in (("history", history), ("reactive_delay", reactive_delay), ("switch_every", switch_every)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if sweep_speed < 0 or hop_cost < 0 or sense_noise < 0:
            raise ValueError("sweep_speed, hop_cost and sense_noise must be >= 0")
        self.n_channels = n_channels
        self.history = history
        self.jammer = jammer  # validated by the property setter
        self.width = width
        self.sweep_width = sweep_width
        self.sweep_speed = sweep_speed
        self.reactive_width = reactive_width
        self.reactive_delay = reactive_delay
        self.switch_every = switch_every
        self.hop_cost = hop_cost
        self.sense_noise = sense_noise

        # newest sensed slot first, then older ones, then one-hot current channel
        self.observation_space = spaces.Box(0.0, 1.0, shape=((history + 1) * n_channels,), dtype=np.float32)
        self.action_space = spaces.Discrete(n_channels)
        self.action_names: tuple[str, ...] = tuple(f"ch{i}" for i in range(n_channels))

        self._channels = np.arange(n_channels)
        self._eye = np.eye(n_channels, dtype=np.float32)
        self._frames = np.zeros((history, n_channels), dtype=np.float32)
        self._used: deque[int] = deque(maxlen=reactive_delay)
        self._channel = 0
        self._t = 0
        self._const_start = 0
        self._sweep_pos = 0
        self._schedule = np.arange(len(BASE_JAMMERS))

    @property
    def jammer(self) -> str:
        """Jammer kind; may be reassigned between steps (takes effect next slot)."""
        return self._jammer

    @jammer.setter
    def jammer(self, kind: str) -> None:
        if kind not in JAMMERS:
            raise ValueError(f"unknown jammer {kind!r}; expected one of {JAMMERS}")
        self._jammer = kind

    safe_action: int = 0
    """Fallback = the home channel 0: a fixed index a device can hard-code (the policy IR needs one)."""

    @property
    def channel(self) -> int:
        """The channel the radio currently transmits on."""
        return self._channel

    @property
    def active_jammer(self) -> str:
        """The kind jamming the next slot (differs from `jammer` only for "switching")."""
        if self._jammer != "switching":
            return self._jammer
        return BASE_JAMMERS[self._schedule[(self._t // self.switch_every) % len(BASE_JAMMERS)]]

    @property
    def best_success_rate(self) -> float:
        """Optimal expected delivery rate for this configuration (see docs/envs.md)."""
        if self._jammer == "switching":
            # every cycle of 4 * switch_every slots spends switch_every slots on each
            # base kind; an upper bound, since a switch is only seen one slot later
            return float(np.mean([self._kind_best(k) for k in BASE_JAMMERS]))
        return self._kind_best(self._jammer)

    def _kind_best(self, kind: str) -> float:
        n = self.n_channels
        if kind == "random":  # unpredictable: every channel is clean w.p. (n - width) / n
            return 1.0 - self.width / n
        band = {"constant": self.width, "sweeping": self.sweep_width, "reactive": self.reactive_width}[kind]
        return 1.0 if band < n else 0.0  # a clean channel exists and is predictable

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        n = self.n_channels
        self._channel = int(rng.integers(n))
        self._const_start = int(rng.integers(n))
        self._sweep_pos = int(rng.integers(n))
        self._schedule = rng.permutation(len(BASE_JAMMERS))
        self._used = deque([self._channel] * self.reactive_delay, maxlen=self.reactive_delay)
        self._t = 0
        for _ in range(self.history):  # warm-up so the first observation is a full scan history
            self._sense(self._jam_mask(self.active_jammer))
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = int(action)
        if not 0 <= a < self.n_channels:
            raise ValueError(f"action {action} outside [0, {self.n_channels})")
        kind = self.active_jammer
        mask = self._jam_mask(kind)
        delivered = not mask[a]
        reward = float(delivered) - (self.hop_cost if a != self._channel else 0.0)
        self._sense(mask)
        self._used.append(a)
        self._channel = a
        self._t += 1
        return self._obs(), reward, False, False, {"success": delivered, "jammer": kind}

    def _band(self, start: int, width: int) -> np.ndarray:
        """Boolean mask of `width` contiguous channels from `start`, wrapping."""
        return (self._channels - start) % self.n_channels < width

    def _jam_mask(self, kind: str) -> np.ndarray:
        """Jammed channels of `kind` for the current slot; advances the sweep every slot."""
        if kind == "constant":
            mask = self._band(self._const_start, self.width)
        elif kind == "random":
            mask = np.zeros(self.n_channels, dtype=bool)
            mask[np.argsort(self.np_random.random(self.n_channels))[: self.width]] = True
        elif kind == "sweeping":
            mask = self._band(self._sweep_pos, self.sweep_width)
        else:  # reactive: centred on the channel used reactive_delay slots ago
            mask = self._band(self._used[0] - self.reactive_width // 2, self.reactive_width)
        # the sweeper keeps moving even while another kind is active ("switching")
        self._sweep_pos = (self._sweep_pos + self.sweep_speed) % self.n_channels
        return mask

    def _sense(self, mask: np.ndarray) -> None:
        """Push one noisy spectral scan of the slot into the history (newest first)."""
        frame = FLOOR_POWER + (JAM_POWER - FLOOR_POWER) * mask
        frame += self.sense_noise * self.np_random.standard_normal(self.n_channels)
        self._frames[1:] = self._frames[:-1]
        self._frames[0] = np.clip(frame, 0.0, 1.0)

    def _obs(self) -> np.ndarray:
        return np.concatenate((self._frames.ravel(), self._eye[self._channel]))
