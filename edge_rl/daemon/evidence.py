"""The gate's evidence: reward per step over recent episodes, and a Page-Hinkley test for a drop in it.

Kept apart from the decisions (`gate`): these are plain statistics, fed one reward at a time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

Z_CLIP = 5.0  # one outlying episode (a crash) moves the drift statistic at most this much


@dataclass
class DriftMonitor:
    """One-sided Page-Hinkley test for a drop in the acting policy's reward per step, episode by episode.

    It is fed the mean reward of each closed segment (an episode, or a `trial_steps` piece of a
    stream without episodes): rewards within an episode are not stationary (a drone's take-off,
    a battery that sags), their means are comparable. The first `warmup` segments after a
    (re)start set the reference mean and spread (floored at 5 % of the mean's magnitude: a very
    steady policy must not alarm on a small wobble); after that each segment adds its
    standardised shortfall (clipped to +-Z_CLIP) minus `delta` to a sum floored at zero; the sum
    crossing `threshold` is an alarm.
    """

    delta: float
    threshold: float
    warmup: int
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    statistic: float = 0.0

    def update(self, value: float) -> bool:
        """Feed one segment's mean reward; True when the drop is significant (then the monitor restarts)."""
        if self.n < self.warmup:
            self.n += 1
            d = value - self.mean
            self.mean += d / self.n
            self.m2 += d * (value - self.mean)
            return False
        std = max(math.sqrt(self.m2 / max(self.n - 1, 1)), 0.05 * abs(self.mean), 1e-6)
        z = min(max((self.mean - value) / std, -Z_CLIP), Z_CLIP)
        self.statistic = max(0.0, self.statistic + z - self.delta)
        if self.statistic > self.threshold:
            self.restart()
            return True
        return False

    def restart(self) -> None:
        self.n, self.mean, self.m2, self.statistic = 0, 0.0, 0.0, 0.0


@dataclass
class Segments:
    """Reward per step over recent whole episodes (or `max_len`-step pieces of a stream without them)."""

    max_len: int
    keep: int  # steps of closed segments kept
    closed: deque[tuple[float, int, float]] = field(default_factory=deque)  # (sum, steps, sum of squares)
    total: float = 0.0
    length: int = 0
    squares: float = 0.0

    def add(self, reward: float, done: bool) -> bool:
        """Count one step; True if it closed a segment."""
        self.total += reward
        self.squares += reward * reward
        self.length += 1
        if not (done or self.length >= self.max_len):
            return False
        self.closed.append((self.total, self.length, self.squares))
        self.total, self.length, self.squares = 0.0, 0, 0.0
        while self.steps() - self.closed[0][1] >= self.keep:
            self.closed.popleft()
        return True

    def steps(self, partial: bool = False) -> int:
        return sum(n for _, n, _ in self.closed) + (self.length if partial else 0)

    def mean(self, partial: bool = False) -> float:
        """Reward per step over the closed segments (and the open one, with `partial`)."""
        n = self.steps(partial)
        return (sum(r for r, _, _ in self.closed) + (self.total if partial else 0.0)) / n if n else float("nan")

    def std(self) -> float:
        """Standard deviation of one step's reward over the closed segments."""
        n = self.steps()
        return math.sqrt(max(sum(q for _, _, q in self.closed) / n - self.mean() ** 2, 0.0)) if n else 0.0

    def last(self) -> float:
        total, n, _ = self.closed[-1]
        return total / n

    def clear(self) -> None:
        self.closed.clear()
        self.total, self.length, self.squares = 0.0, 0, 0.0
