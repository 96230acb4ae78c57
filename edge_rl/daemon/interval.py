"""The figures of one telemetry interval: rewards, successes, episode returns, learning cost, step timings.

The loop feeds it after each ACTION is out (a few additions per step); `take()` at the sample
time turns the interval into the sample's fields and starts the next. Timings come from the
loop's own rings (OBS arrival times, OBS -> ACTION latencies), so nothing is measured twice.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

MAX_RETURNS = 32  # episode returns listed per sample
RETURN_MEAN_OVER = 20  # episodes in `return_mean`


class Interval:
    def __init__(self, success_reward: float) -> None:
        self.success_reward = success_reward
        self.episode_return = 0.0
        self.recent_returns: deque[float] = deque(maxlen=RETURN_MEAN_OVER)
        self._clear()

    def _clear(self) -> None:
        self.transitions = self.successes = self.updates = 0
        self.reward_sum = self.learn_s = self.td_abs = 0.0
        self.returns: list[float] = []

    def transition(self, reward: float) -> None:
        self.transitions += 1
        self.reward_sum += reward
        self.successes += reward >= self.success_reward
        self.episode_return += reward

    def episode_end(self) -> None:
        self.returns.append(self.episode_return)
        self.recent_returns.append(self.episode_return)
        self.episode_return = 0.0

    def learned(self, seconds: float, td_error: float | None) -> None:
        if td_error is not None:
            self.updates += 1
            self.learn_s += seconds
            self.td_abs += abs(td_error)

    def take(self, arrivals: np.ndarray, latencies: np.ndarray) -> dict[str, Any]:
        """This interval's fields (arrival times and latencies in seconds, oldest first); then a fresh interval."""
        n, u = self.transitions, self.updates
        periods = np.diff(arrivals) * 1e6
        fields = {
            "returns": [round(r, 6) for r in self.returns[-MAX_RETURNS:]],
            "return_mean": float(np.mean(self.recent_returns)) if self.recent_returns else None,
            "reward_mean": self.reward_sum / n if n else None,
            "success_rate": self.successes / n if n else None,
            **_percentiles("period", periods),
            **_percentiles("act", latencies * 1e6),
            "learn_us": 1e6 * self.learn_s / u if u else None,
            "td_error": self.td_abs / u if u else None,
        }
        self._clear()
        return fields


def _percentiles(name: str, values: np.ndarray) -> dict[str, float | None]:
    if not len(values):
        return {f"{name}_p50_us": None, f"{name}_p99_us": None}
    p50, p99 = np.percentile(values, (50, 99))
    return {f"{name}_p50_us": round(float(p50), 1), f"{name}_p99_us": round(float(p99), 1)}


def ring_since(ring: np.ndarray, start: int, end: int) -> np.ndarray:
    """Items start..end-1 of a ring indexed by a running count (at most the ring's length, the newest)."""
    size = len(ring)
    start = max(start, end - size)
    idx = np.arange(start, end) % size
    return ring[idx]
