"""Streaming statistics of stream Q(lambda) (Elsayed et al. 2024): observation normaliser and reward scaler.

Both are Welford accumulators with the sample variance (n - 1), variance 1 while fewer than two
samples, never reset and never frozen: they are part of the model (a restarted daemon that lost
them would act differently). Statistics are kept in float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edge_rl.errors import BadInput

EPS = 1e-8


class Welford:
    """Running mean and sample variance of vectors, or of Python floats for shape () (the reward scaler)."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.count = 0
        self.mean: np.ndarray | float = np.zeros(shape, np.float64) if shape else 0.0
        self.m2: np.ndarray | float = np.zeros(shape, np.float64) if shape else 0.0

    def update(self, x: np.ndarray | float) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean = self.mean + delta / self.count
        self.m2 = self.m2 + delta * (x - self.mean)

    @property
    def var(self) -> np.ndarray | float:
        if self.count >= 2:
            return self.m2 / (self.count - 1)
        return np.ones_like(self.m2) if isinstance(self.m2, np.ndarray) else 1.0


def normalise_step(x: Any, mean: Any, m2: Any, count: int) -> tuple[Any, Any, Any]:
    """One Welford update with x (count includes it) and x normalised by the updated statistics.

    The same expression serves Python floats and numpy arrays: `ObservationNormalizer` runs it
    per feature on floats for small observations and once on arrays for large ones.
    """
    delta = x - mean
    mean = mean + delta / count
    centred = x - mean
    m2 = m2 + delta * centred
    var = m2 / (count - 1) if count >= 2 else 1.0
    return mean, m2, centred / (var + EPS) ** 0.5


class ObservationNormalizer:
    """x_hat = (x - mean) / sqrt(var + 1e-8), updated with x first; the last `raw_tail` features pass raw.

    Up to `SCALAR_FEATURES` normalised features the update runs on Python floats: a numpy call
    costs ~0.4 us whatever its size, a float operation ~0.02 us, and this runs every control step.
    """

    SCALAR_FEATURES = 16

    def __init__(self, size: int, raw_tail: int = 0) -> None:
        self.size, self.raw_tail = size, raw_tail
        self.stats = Welford((size - raw_tail,))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Count `obs` (a float64 vector of `size` features) once and return it normalised (float32).

        Refuses NaN and infinity before anything changes: this is the first place that reads
        every feature.
        """
        n, stats = self.size - self.raw_tail, self.stats
        if n <= self.SCALAR_FEATURES:
            values = obs.tolist()
            if not math.isfinite(sum(values)):  # any NaN or infinity makes the sum NaN or infinite
                raise BadInput("observation contains NaN or infinity")
            stats.count += 1
            means, m2s = stats.mean.tolist(), stats.m2.tolist()
            for i in range(n):
                means[i], m2s[i], values[i] = normalise_step(values[i], means[i], m2s[i], stats.count)
            stats.mean[:], stats.m2[:] = means, m2s
            return np.array(values, np.float32)  # the raw tail passes as it came
        if not math.isfinite(obs.dot(obs)):
            raise BadInput("observation contains NaN or infinity")
        stats.count += 1
        out = obs.astype(np.float32)
        stats.mean, stats.m2, out[:n] = normalise_step(obs[:n], stats.mean, stats.m2, stats.count)
        return out


class RewardScaler:
    """r / sqrt(Var(u) + 1e-8) with u_t = gamma (1 - d_t) u_{t-1} + r_t; no mean subtraction, no clipping."""

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma
        self.u = 0.0
        self.stats = Welford()

    def __call__(self, reward: float, done: bool) -> float:
        self.u = reward if done else self.gamma * self.u + reward
        self.stats.update(self.u)
        return reward / math.sqrt(self.stats.var + EPS)
