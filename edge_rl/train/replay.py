"""Numpy ring replay buffer that stores n-step transitions ready for the TD target.

Each stored row is (obs, action, R, next_obs, discount) where R is the discounted sum of up to n
rewards and `discount` is gamma^k for the k steps actually taken, or 0 when the episode
terminated inside them. The learner's target is then simply R + discount * Q(next_obs), which
keeps the update step free of n-step bookkeeping. Truncation (time limits) is not termination:
such a transition still bootstraps from the true final observation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np


class ReplayBuffer:
    """Fixed-capacity ring of n-step transitions; sampling is uniform."""

    def __init__(self, capacity: int, obs_dim: int, rng: np.random.Generator) -> None:
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros((capacity, 1), np.int64)
        self.ret = np.zeros((capacity, 1), np.float32)
        self.discount = np.zeros((capacity, 1), np.float32)
        self.size = 0
        self._pos = 0
        self._rng = rng

    def add(self, obs: np.ndarray, action: int, ret: float, next_obs: np.ndarray, discount: float) -> None:
        i = self._pos
        self.obs[i], self.action[i], self.ret[i], self.next_obs[i], self.discount[i] = (
            obs,
            action,
            ret,
            next_obs,
            discount,
        )
        self._pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch: int) -> tuple[np.ndarray, ...]:
        idx = self._rng.integers(0, self.size, batch)
        return self.obs[idx], self.action[idx], self.ret[idx], self.next_obs[idx], self.discount[idx]

    def normalize_in_place(self, normalize: Callable[[np.ndarray], np.ndarray]) -> None:
        """Apply a frozen observation normalisation to everything stored so far."""
        for arr in (self.obs, self.next_obs):
            arr[: self.size] = normalize(arr[: self.size])


class NStepWriter:
    """Turns one environment's 1-step stream into n-step rows for a ReplayBuffer."""

    def __init__(self, buffer: ReplayBuffer, n: int, gamma: float) -> None:
        self.buffer, self.n, self.gamma = buffer, n, gamma
        self._pending: deque[tuple[np.ndarray, int, float]] = deque()

    def push(
        self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminated: bool, truncated: bool
    ) -> None:
        self._pending.append((obs, action, reward))
        if terminated or truncated:
            while self._pending:
                self._emit(next_obs, terminated)
        elif len(self._pending) == self.n:
            self._emit(next_obs, False)

    def _emit(self, next_obs: np.ndarray, terminated: bool) -> None:
        ret, discount = 0.0, 1.0
        for _, _, r in self._pending:
            ret += discount * r
            discount *= self.gamma
        obs, action, _ = self._pending.popleft()
        self.buffer.add(obs, action, ret, next_obs, 0.0 if terminated else discount)

    def map_obs(self, fn) -> None:
        """Re-express pending observations, e.g. when normalisation is frozen mid-stream."""
        self._pending = deque((fn(o), a, r) for o, a, r in self._pending)
