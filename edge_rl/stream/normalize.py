"""Streaming statistics of stream Q(lambda) (Elsayed et al. 2024): observation normaliser and reward scaler.

Both are Welford accumulators with the sample variance (n - 1), variance 1 while fewer than two
samples, never reset and never frozen: they are part of the model (a restarted daemon that lost
them would act differently). Statistics are kept in float64.
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-8


class Welford:
    """Running mean and sample variance of vectors (or scalars, shape ())."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.count = 0
        self.mean = np.zeros(shape, np.float64)
        self.m2 = np.zeros(shape, np.float64)

    def update(self, x: np.ndarray | float) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean = self.mean + delta / self.count
        self.m2 = self.m2 + delta * (x - self.mean)

    @property
    def var(self) -> np.ndarray:
        return self.m2 / (self.count - 1) if self.count >= 2 else np.ones_like(self.m2)


class ObservationNormalizer:
    """x_hat = (x - mean) / sqrt(var + 1e-8), updated with x first; the last `raw_tail` features pass raw."""

    def __init__(self, size: int, raw_tail: int = 0) -> None:
        self.size, self.raw_tail = size, raw_tail
        self.stats = Welford((size - raw_tail,))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Count `obs` once and return it normalised (float32).

        The Welford update written out so that x - mean(new) serves both the M2 update and the
        output: this runs on every control step.
        """
        x = np.asarray(obs, np.float64).ravel()
        n = self.size - self.raw_tail
        head = x[:n] if self.raw_tail else x
        stats = self.stats
        stats.count += 1
        delta = head - stats.mean
        stats.mean += delta * (1.0 / stats.count)
        centred = head - stats.mean
        stats.m2 += delta * centred
        if stats.count >= 2:
            centred /= np.sqrt(stats.m2 * (1.0 / (stats.count - 1)) + EPS)
        else:
            centred /= np.sqrt(1.0 + EPS)
        if not self.raw_tail:
            return centred.astype(np.float32)
        out = np.empty(self.size, np.float32)
        out[:n] = centred
        out[n:] = x[n:]
        return out


class RewardScaler:
    """r / sqrt(Var(u) + 1e-8) with u_t = gamma (1 - d_t) u_{t-1} + r_t; no mean subtraction, no clipping."""

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma
        self.u = 0.0
        self.stats = Welford()

    def __call__(self, reward: float, done: bool) -> float:
        self.u = self.gamma * (1.0 - float(done)) * self.u + reward
        self.stats.update(self.u)
        return reward / math.sqrt(float(self.stats.var) + EPS)
