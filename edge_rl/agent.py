"""What acts in a control loop: anything with `act` and `observe` (a learner, or a frozen policy).

The simulation loop (`edge_rl.stream.simulate`) and the device daemon drive an `Agent` one step
at a time: `act(obs)` picks the action for an observation, then `observe(reward, next_obs,
terminated, truncated)` reports what that action led to (a learner learns from it here, after the
action is sent, never before). A `FrozenAgent` acts greedily from a fixed policy and learns nothing:
the baseline every adaptation is judged against.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Agent(Protocol):
    def act(self, obs: np.ndarray) -> int:
        """The action for `obs` (one raw observation)."""
        ...

    def observe(self, reward: float, next_obs: np.ndarray, terminated: bool, truncated: bool) -> float | None:
        """What the last action led to; a learner returns its TD error, a frozen agent None."""
        ...


class FrozenAgent:
    """Greedy actions from `act` (a `Policy.act` or `Backend.act`), on float32 observations; never learns."""

    def __init__(self, act: Callable[[np.ndarray], int | np.ndarray]) -> None:
        self._act = act

    def act(self, obs: np.ndarray) -> int:
        return int(self._act(np.asarray(obs, np.float32)))

    def observe(self, reward: float, next_obs: np.ndarray, terminated: bool, truncated: bool) -> None:
        return None
