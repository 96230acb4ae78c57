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
            "return_mean": sum(self.recent_returns) / len(self.recent_returns) if self.recent_returns else None,
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
    """p50 and p99 by linear interpolation on the sorted values (np.percentile costs ~100 us a call here)."""
    n = len(values)
    if not n:
        return {f"{name}_p50_us": None, f"{name}_p99_us": None}
    ordered = np.sort(values)
    return {f"{name}_p{int(q * 100)}_us": round(_at(ordered, q * (n - 1)), 1) for q in (0.5, 0.99)}


def _at(ordered: np.ndarray, position: float) -> float:
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def ring_since(ring: np.ndarray, start: int, end: int) -> np.ndarray:
    """Items start..end-1 of a ring indexed by a running count (at most the ring's length, the newest)."""
    size = len(ring)
    start = max(start, end - size)
    idx = np.arange(start, end) % size
    return ring[idx]
