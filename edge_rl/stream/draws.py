"""The learner's action draws: one uniform per step, one integer only when exploring.

The stream is numpy's legacy `RandomState(seed)`: `uniform()` is its `random_sample()` and
`integer(n)` its `randint(n)`, so the action stream matches the reference's. The integer is
drawn from the bit generator directly (masked rejection on the raw 32-bit MT19937 output, what
`randint` does inside), because `randint`'s argument handling costs ~2 us: more than a
learning step spends on any one array operation.
"""

from __future__ import annotations

import numpy as np


class ActionDraws:
    def __init__(self, seed: int) -> None:
        self._bits = np.random.MT19937()
        self._bits.state = np.random.RandomState(seed).get_state(legacy=False)
        self._legacy = np.random.RandomState(self._bits)
        self.uniform = self._legacy.random_sample

    def integer(self, n: int) -> int:
        """Uniform in [0, n), exactly as `RandomState.randint(n)` draws it."""
        if n == 1:
            return 0  # randint draws nothing for a one-value range
        top = n - 1
        mask = (1 << top.bit_length()) - 1
        while True:
            value = int(self._bits.random_raw()) & mask
            if value <= top:
                return value

    def get_state(self) -> tuple:
        """The legacy state tuple ('MT19937', keys, pos, has_gauss, gauss)."""
        return self._legacy.get_state()

    def set_state(self, state: tuple) -> None:
        self._legacy.set_state(state)
