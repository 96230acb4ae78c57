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
    """Running mean and sample variance of Python floats (shape (), the reward scaler) or of vectors."""

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


def normalise_step(x: Any, mean: Any, m2: Any, count: int, eps: float = EPS) -> tuple[Any, Any, Any]:
    """One Welford update with x (count includes it) and x normalised by the updated statistics.

    The same expression serves Python floats and numpy arrays: `ObservationNormalizer` runs it
    per feature on floats for small observations and once on arrays for large ones.
    """
    delta = x - mean
    mean = mean + delta / count
    centred = x - mean
    m2 = m2 + delta * centred
    var = m2 / (count - 1) if count >= 2 else 1.0
    return mean, m2, centred / (var + eps) ** 0.5


class ObservationNormalizer:
    """x_hat = (x - mean) / sqrt(var + eps), updated with x first; the last `raw_tail` features pass raw.

    Stream Q(lambda) normalises with eps 1e-8 and no clipping. A learner adapting a deployed
    policy takes the policy's eps and clip instead, so it sees an input exactly as the deployed
    policy does, also when a shifted environment sends values far outside the training range.

    Up to `SCALAR_FEATURES` normalised features the statistics are lists of Python floats and the
    update runs per feature: a numpy call costs ~0.4 us whatever its size, a float operation
    ~0.02 us, and this runs every control step. `stats` is a snapshot in arrays either way.
    """

    SCALAR_FEATURES = 16

    def __init__(self, size: int, raw_tail: int = 0, clip: float | None = None, eps: float = EPS) -> None:
        if (clip is not None and not clip > 0) or not eps > 0:
            raise BadInput(f"normaliser clip must be > 0 (or None) and eps > 0, got {clip} and {eps}")
        self.size, self.raw_tail, self.clip, self.eps = size, raw_tail, clip, eps
        self.load(0, np.zeros(size - raw_tail), np.zeros(size - raw_tail))

    @property
    def stats(self) -> Welford:
        """A copy of the running statistics (count, mean and m2 as float64 arrays; `var` derived)."""
        snapshot = Welford((self.size - self.raw_tail,))
        snapshot.count, snapshot.mean[:], snapshot.m2[:] = self.count, self._mean, self._m2
        return snapshot

    def load(self, count: int, mean: np.ndarray, m2: np.ndarray) -> None:
        """Continue from `count` samples with these per-feature means and sums of squared deviations."""
        n = self.size - self.raw_tail
        mean, m2 = np.asarray(mean, np.float64).ravel(), np.asarray(m2, np.float64).ravel()
        if mean.shape != (n,) or m2.shape != (n,):
            raise BadInput(f"normaliser statistics need {n} features, got {mean.size} and {m2.size}")
        if count < 0 or not (np.isfinite(mean).all() and np.isfinite(m2).all() and (m2 >= 0).all()):
            raise BadInput("normaliser statistics must be finite, with a count >= 0 and m2 >= 0")
        self.count = int(count)
        small = n <= self.SCALAR_FEATURES
        self._mean, self._m2 = (mean.tolist(), m2.tolist()) if small else (mean.copy(), m2.copy())

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Count `obs` (a float64 vector of `size` features) once and return it normalised (float32).

        Refuses NaN and infinity before anything changes: this is the first place that reads
        every feature.
        """
        n, means, m2s, eps = self.size - self.raw_tail, self._mean, self._m2, self.eps
        if isinstance(means, list):
            values = obs.tolist()
            if not math.isfinite(sum(values)):  # any NaN or infinity makes the sum NaN or infinite
                raise BadInput("observation contains NaN or infinity")
            self.count = count = self.count + 1
            for i in range(n):
                means[i], m2s[i], values[i] = normalise_step(values[i], means[i], m2s[i], count, eps)
            out = np.array(values, np.float32)  # the raw tail passes as it came
        else:
            if not math.isfinite(obs.dot(obs)):
                raise BadInput("observation contains NaN or infinity")
            self.count += 1
            out = obs.astype(np.float32)
            self._mean, self._m2, out[:n] = normalise_step(obs[:n], means, m2s, self.count, eps)
        return out if self.clip is None else self._clipped(out)  # no call on the unclipped hot path

    def apply(self, obs: np.ndarray) -> np.ndarray:
        """`obs` normalised by the current statistics, without counting it (for looking, not learning)."""
        stats, n = self.stats, self.size - self.raw_tail
        out = np.asarray(obs, np.float64).astype(np.float32)
        out[:n] = (obs[:n] - stats.mean) / np.sqrt(stats.var + self.eps)
        return self._clipped(out)

    def _clipped(self, out: np.ndarray) -> np.ndarray:
        """`out` with its normalised features clipped to +-clip in place (a no-op without a clip)."""
        if self.clip is not None:
            n = self.size - self.raw_tail
            np.clip(out[:n], -self.clip, self.clip, out[:n])
        return out


class RewardScaler:
    """r / sqrt(Var(u) + 1e-8) with u_t = gamma (1 - d_t) u_{t-1} + r_t; no mean subtraction, no clipping."""

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma
        self.u = 0.0
        self.stats = Welford()

    def load(self, u: float, count: int, mean: float, m2: float) -> None:
        """Continue from a saved discounted return `u` and its Welford statistics."""
        values = [float(u), float(mean), float(m2)]
        if not (all(math.isfinite(v) for v in values) and int(count) >= 0 and values[2] >= 0):
            raise BadInput("reward scaler state must be finite, with a count >= 0 and m2 >= 0")
        self.u = values[0]
        self.stats = Welford()
        self.stats.count, self.stats.mean, self.stats.m2 = int(count), values[1], values[2]

    def __call__(self, reward: float, done: bool) -> float:
        self.u = reward if done else self.gamma * self.u + reward
        self.stats.update(self.u)
        return reward / math.sqrt(self.stats.var + EPS)
