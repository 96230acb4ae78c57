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


class ObservationNormalizer:
    """x_hat = (x - mean) / sqrt(var + 1e-8), updated with x first; the last `raw_tail` features pass raw."""

    def __init__(self, size: int, raw_tail: int = 0) -> None:
        self.size, self.raw_tail = size, raw_tail
        n = size - raw_tail
        self.stats = Welford((n,))
        self._delta, self._step, self._centred = (np.empty(n) for _ in range(3))
        self._out = np.empty(size)  # float64: a ufunc writing float32 from float64 inputs takes a slow path
        self._head, self._tail = self._out[:n], self._out[n:]
        self._inv_count, self._inv_dof = np.zeros(()), np.zeros(())  # 0-d: cheaper in a ufunc than a float
        self._eps = np.array(EPS)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Count `obs` (a float64 vector of `size` features) once and return it normalised (float32).

        The Welford update written out on preallocated buffers, so that x - mean(new) serves both
        the M2 update and the output: this runs on every control step.
        """
        n, stats = self.size - self.raw_tail, self.stats
        head = obs[:n] if self.raw_tail else obs
        delta, step, centred, std = self._delta, self._step, self._centred, self._head
        stats.count += 1
        np.subtract(head, stats.mean, delta)
        self._inv_count[()] = 1.0 / stats.count
        np.add(stats.mean, np.multiply(delta, self._inv_count, step), stats.mean)
        np.subtract(head, stats.mean, centred)
        np.add(stats.m2, np.multiply(delta, centred, step), stats.m2)
        if stats.count >= 2:
            self._inv_dof[()] = 1.0 / (stats.count - 1)
            np.sqrt(np.add(np.multiply(stats.m2, self._inv_dof, std), self._eps, std), std)
            np.divide(centred, std, std)
        else:
            np.divide(centred, math.sqrt(1.0 + EPS), std)
        if self.raw_tail:
            self._tail[:] = obs[n:]
        return self._out.astype(np.float32)


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
