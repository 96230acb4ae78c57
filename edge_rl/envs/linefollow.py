"""LineFollow-v0: a differential-drive robot follows a curvy closed line.

The robot only sees a bar of reflectance sensors just ahead of its axle and can
pick one of five steering commands at constant speed. Curvature changes along
the track (and between resets), so a fixed gain is either sluggish in tight
turns or twitchy on straights; wheel wear (the shift knob) slows one wheel so
the meaning of "straight" drifts over a device's life.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

EPISODE_STEPS = 400  # 20 s at 20 Hz, about one lap
DT = 0.05  # control period [s]
WHEEL_BASE = 0.12  # [m]
SENSOR_AHEAD = 0.06  # sensor bar distance ahead of the axle [m]
SENSOR_Y = np.array([0.04, 0.02, 0.0, -0.02, -0.04])  # lateral sensor offsets, left first [m]
LINE_SIGMA = 0.01  # reflectance footprint of the line [m]
STEER = (0.4, 0.15, 0.0, -0.15, -0.4)  # wheel-speed differential u: v_r = v(1+u), v_l = v(1-u)
MOTOR_TAU = 0.1  # first-order lag of the wheel-speed differential [s]
TRACK_RADIUS = 1.0  # mean radius of the closed track [m]
TRACK_AMPLITUDE = 0.08  # max relative amplitude of each radial harmonic (k = 2, 3, 4)
_GRID = 1024  # curvature table resolution


class LineFollowEnv(gym.Env):
    """Line following in track (Frenet) coordinates; `wear` is the shift knob.

    The track is a random star-shaped closed curve r(theta) = R(1 + sum_k a_k cos(k theta + phi_k)),
    driven in a random direction. Only its curvature profile kappa(s) matters for
    the dynamics, so the robot state is (arc length s, lateral error e > 0 = left
    of the line, heading error psi); no nearest-point search is needed per step.
    `wear` scales the right wheel's speed by (1 - wear), so "straight" curves right.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    action_names: tuple[str, ...] = ("hard_left", "left", "straight", "right", "hard_right")
    safe_action: int = 2  # go straight

    def __init__(
        self,
        wear: float = 0.0,
        speed: float = 0.5,
        sensor_noise: float = 0.05,
        lateral_limit: float = 0.08,
        success_tol: float = 0.01,
        lateral_cost: float = 2.0,
        off_track_penalty: float = 5.0,
    ) -> None:
        if not 0.0 <= wear < 1.0:
            raise ValueError(f"wear must be in [0, 1), got {wear}")
        if speed <= 0 or lateral_limit <= 0 or min(sensor_noise, success_tol, lateral_cost, off_track_penalty) < 0:
            raise ValueError("speed and lateral_limit must be > 0, the other parameters >= 0")
        self.wear = wear
        self.speed = speed
        self.sensor_noise = sensor_noise
        self.lateral_limit = lateral_limit
        self.success_tol = success_tol
        self.lateral_cost = lateral_cost
        self.off_track_penalty = off_track_penalty

        n_sensors, n_actions = len(SENSOR_Y), len(STEER)
        # [sensors now (left..right), sensors one step ago, one-hot previous action]
        self.observation_space = spaces.Box(0.0, 1.0, shape=(2 * n_sensors + n_actions,), dtype=np.float32)
        self.action_space = spaces.Discrete(n_actions)
        self._eye = np.eye(n_actions, dtype=np.float32)
        self._kappa = np.zeros(_GRID)
        self._inv_ds = 1.0
        self._s = self._e = self._psi = self._u = 0.0
        self._prev = self.safe_action
        self._last = np.zeros(n_sensors, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        self._make_track()
        self._s = float(rng.uniform(0.0, _GRID / self._inv_ds))
        self._e = float(rng.uniform(-0.01, 0.01))
        self._psi = float(rng.uniform(-0.1, 0.1))
        self._u = 0.0
        self._prev = self.safe_action
        self._last = self._sense()
        return self._obs(self._last), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = int(action)
        if not 0 <= a < len(STEER):
            raise ValueError(f"action {action} outside [0, {len(STEER)})")
        self._u += (STEER[a] - self._u) * min(DT / MOTOR_TAU, 1.0)
        u = self._u
        v_right = self.speed * (1.0 + u) * (1.0 - self.wear)
        v_left = self.speed * (1.0 - u)
        v = 0.5 * (v_right + v_left)
        omega = (v_right - v_left) / WHEEL_BASE
        kappa = self._kappa[int(self._s * self._inv_ds) % _GRID]
        s_dot = v * math.cos(self._psi) / (1.0 - kappa * self._e)
        self._s += s_dot * DT
        self._e += v * math.sin(self._psi) * DT
        self._psi += (omega - kappa * s_dot) * DT

        off_track = abs(self._e) > self.lateral_limit or abs(self._psi) > 0.5 * math.pi
        if off_track:
            reward = -self.off_track_penalty
        else:  # progress normalised to 1 per step at nominal speed, minus lateral error
            reward = s_dot / self.speed - self.lateral_cost * abs(self._e) / self.lateral_limit
        self._prev = a
        sensors = self._sense()
        obs = self._obs(sensors)
        self._last = sensors
        info = {"success": not off_track and abs(self._e) <= self.success_tol}
        return obs, reward, off_track, False, info

    def _make_track(self) -> None:
        """Sample a closed track and tabulate its signed curvature against arc length."""
        rng = self.np_random
        k = np.arange(2, 5)[:, None]
        amp = rng.uniform(0.0, TRACK_AMPLITUDE, (3, 1))
        phase = rng.uniform(0.0, 2 * math.pi, (3, 1))
        theta = np.linspace(0.0, 2 * math.pi, _GRID, endpoint=False)
        arg = k * theta + phase
        r = TRACK_RADIUS * (1.0 + (amp * np.cos(arg)).sum(0))
        r1 = TRACK_RADIUS * (-k * amp * np.sin(arg)).sum(0)
        r2 = TRACK_RADIUS * (-k * k * amp * np.cos(arg)).sum(0)
        kappa = (r * r + 2 * r1 * r1 - r * r2) / (r * r + r1 * r1) ** 1.5
        ds = np.sqrt(r * r + r1 * r1) * (2 * math.pi / _GRID)
        s = np.concatenate(([0.0], np.cumsum(ds)[:-1]))
        length = float(ds.sum())
        grid = np.linspace(0.0, length, _GRID, endpoint=False)
        direction = 1.0 if rng.random() < 0.5 else -1.0  # clockwise laps mirror the curvature
        self._kappa = direction * np.interp(grid, s, kappa, period=length)
        self._inv_ds = _GRID / length

    def _sense(self) -> np.ndarray:
        """Noisy reflectance (1 = line under the sensor) of the sensor bar."""
        c, sn = math.cos(self._psi), math.sin(self._psi)
        kappa = self._kappa[int(self._s * self._inv_ds) % _GRID]
        # where the line crosses the bar, in bar coordinates (left positive), to second order
        q = (0.5 * kappa * (SENSOR_AHEAD * c) ** 2 - self._e - SENSOR_AHEAD * sn) / max(c, 1e-3)
        x = (SENSOR_Y - q) * (1.0 / LINE_SIGMA)
        reading = np.exp(-0.5 * x * x) + self.sensor_noise * self.np_random.standard_normal(len(SENSOR_Y))
        return np.clip(reading, 0.0, 1.0).astype(np.float32)

    def _obs(self, sensors: np.ndarray) -> np.ndarray:
        return np.concatenate((sensors, self._last, self._eye[self._prev]))
