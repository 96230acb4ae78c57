"""Hover-v0: hold a drone at a target altitude with a handful of thrust levels.

Discrete thrust (as on an ESC driven by a tiny MCU), quadratic drag, OU wind
gusts and noisy baro/velocity estimates make a scripted PD controller chatter
and drift; battery sag (the shift knob) slowly weakens every thrust level
without being observed, so a fixed policy gradually sinks.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

EPISODE_STEPS = 300  # 15 s at 20 Hz
DT = 0.05  # control period [s]
G = 9.81  # gravity [m/s^2]
DRAG = 0.3  # quadratic drag coefficient [1/m]
WIND_THETA = 0.5  # OU mean reversion rate of the vertical gust [1/s]
Z_MAX = 8.0  # ceiling of the allowed envelope [m]
CRASH_SPEED = 2.0  # ground contact faster than this [m/s] is a crash
ERR_SCALE = 2.0  # altitude error [m] at which the tracking reward reaches 0
V_LIM = 10.0  # clip of the velocity estimate [m/s]
THRUST = (0.0, 0.6, 1.0, 1.4, 2.0)  # thrust levels in multiples of g (full battery)
_LOOKAHEAD = 10  # oracle horizon [steps]


class HoverEnv(gym.Env):
    """Vertical altitude hold; `battery_sag` is the shift knob.

    Thrust of level a at step t is THRUST[a] * g * (1 - battery_sag * min(t / 300, 1)),
    i.e. at the end of a default episode every level has lost `battery_sag` of
    its force. The battery state is never observed.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    action_names: tuple[str, ...] = ("off", "low", "hover", "high", "max")
    safe_action: int = 2  # nominal hover thrust

    def __init__(
        self,
        battery_sag: float = 0.0,
        gust: float = 1.0,
        baro_noise: float = 0.1,
        vel_noise: float = 0.1,
        tolerance: float = 0.25,
        target_range: tuple[float, float] = (1.5, 4.5),
        start_range: tuple[float, float] = (1.0, 5.0),
        thrust_change_cost: float = 0.02,
        crash_penalty: float = 10.0,
    ) -> None:
        for name, (lo, hi) in (("target_range", target_range), ("start_range", start_range)):
            if not 0.0 < lo <= hi < Z_MAX:
                raise ValueError(f"{name} must satisfy 0 < low <= high < {Z_MAX}, got {(lo, hi)}")
        if min(battery_sag, gust, baro_noise, vel_noise, tolerance, thrust_change_cost, crash_penalty) < 0:
            raise ValueError("HoverEnv parameters must be non-negative")
        self.battery_sag = battery_sag
        self.gust = gust
        self.baro_noise = baro_noise
        self.vel_noise = vel_noise
        self.tolerance = tolerance
        self.target_range = target_range
        self.start_range = start_range
        self.thrust_change_cost = thrust_change_cost
        self.crash_penalty = crash_penalty

        n = len(THRUST)
        # [baro altitude, velocity estimate, target, target - baro altitude, one-hot previous level]
        low = np.array([-1.0, -V_LIM, 0.0, -Z_MAX - 1.0] + [0.0] * n, dtype=np.float32)
        high = np.array([Z_MAX + 1.0, V_LIM, Z_MAX, Z_MAX + 1.0] + [1.0] * n, dtype=np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Discrete(n)
        self._eye = np.eye(n, dtype=np.float32)
        self._z = self._v = self._wind = self._target = 0.0
        self._prev = self.safe_action
        self._t = 0

    def battery_factor(self) -> float:
        """Fraction of nominal thrust available at the current step."""
        return 1.0 - self.battery_sag * min(self._t / EPISODE_STEPS, 1.0)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        self._target = float(rng.uniform(*self.target_range))
        self._z = float(rng.uniform(*self.start_range))
        self._v = 0.0
        self._wind = float(rng.normal(0.0, self.gust / math.sqrt(2 * WIND_THETA)))  # stationary OU
        self._prev = self.safe_action
        self._t = 0
        return self._obs(*rng.standard_normal(2).tolist()), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = int(action)
        if not 0 <= a < len(THRUST):
            raise ValueError(f"action {action} outside [0, {len(THRUST)})")
        n_wind, n_baro, n_vel = self.np_random.standard_normal(3).tolist()
        acc = G * (THRUST[a] * self.battery_factor() - 1.0) - DRAG * self._v * abs(self._v) + self._wind
        self._v += acc * DT  # semi-implicit Euler
        self._z += self._v * DT
        self._wind += -WIND_THETA * self._wind * DT + self.gust * math.sqrt(DT) * n_wind
        crashed = self._z > Z_MAX  # left the envelope
        if self._z <= 0.0:
            crashed = self._v < -CRASH_SPEED  # hard ground contact; otherwise it just sits
            self._z, self._v = 0.0, max(self._v, 0.0)
        err = abs(self._z - self._target)
        if crashed:
            reward = -self.crash_penalty
        else:
            reward = 1.0 - min(err / ERR_SCALE, 1.0) - self.thrust_change_cost * abs(a - self._prev)
        self._prev = a
        self._t += 1
        info = {"success": not crashed and err <= self.tolerance}
        return self._obs(n_baro, n_vel), reward, crashed, False, info

    def oracle_action(self) -> int:
        """Privileged reference controller: true state, wind and battery, no noise.

        Brute-force lookahead: try every (first level, then held level) pair for
        0.5 s assuming the current wind persists, and take the best first level.
        It is only used to compute a best-return reference, never at act time by
        a device.
        """
        n = len(THRUST)
        first, hold = np.divmod(np.arange(n * n), n)
        accel = G * (np.asarray(THRUST) * self.battery_factor() - 1.0) + self._wind
        z = np.full(n * n, self._z)
        v = np.full(n * n, self._v)
        ret = -self.thrust_change_cost * (np.abs(first - self._prev) + np.abs(hold - first))
        for h in range(_LOOKAHEAD):
            v += (accel[first if h == 0 else hold] - DRAG * v * np.abs(v)) * DT
            z += v * DT
            ret += 1.0 - np.minimum(np.abs(z - self._target) / ERR_SCALE, 1.0)
            ret -= self.crash_penalty * ((z > Z_MAX) | ((z <= 0.0) & (v < -CRASH_SPEED)))
        return int(first[np.argmax(ret)])

    def _obs(self, n_baro: float, n_vel: float) -> np.ndarray:
        z_meas = min(max(self._z + self.baro_noise * n_baro, -1.0), Z_MAX + 1.0)
        obs = np.empty(4 + len(THRUST), dtype=np.float32)
        obs[0] = z_meas
        obs[1] = min(max(self._v + self.vel_noise * n_vel, -V_LIM), V_LIM)
        obs[2] = self._target
        obs[3] = self._target - z_meas
        obs[4:] = self._eye[self._prev]
        return obs
