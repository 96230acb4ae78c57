"""Serial-number arithmetic (RFC 1982) on 16-bit sequence numbers: gaps, duplicates, reorders."""

from __future__ import annotations

from typing import Protocol

HALF = 1 << 15
MOD = 1 << 16


class _Counts(Protocol):
    seq_gaps: int
    duplicates: int
    reorders: int


class SequenceTracker:
    """Follows one direction's sequence numbers; delivers only frames newer than the last one.

    A frame `d` ahead of the last (0 < d < 2**15) is new and `d - 1` frames went missing; `d == 0`
    is a duplicate; anything else is older than what was delivered (a reorder) and is dropped,
    because an old setpoint must never override a newer one.
    """

    def __init__(self, counts: _Counts) -> None:
        self._counts = counts
        self._last: int | None = None

    def restart(self, seq: int) -> None:
        """The peer started a new numbering (its HELLO carries the first number)."""
        self._last = seq & 0xFFFF

    def accept(self, seq: int) -> bool:
        """Record `seq`; True when the frame is newer than everything delivered so far."""
        if self._last is None:
            self._last = seq
            return True
        ahead = (seq - self._last) % MOD
        if ahead == 0:
            self._counts.duplicates += 1
            return False
        if ahead >= HALF:
            self._counts.reorders += 1
            return False
        self._counts.seq_gaps += ahead - 1
        self._last = seq
        return True
