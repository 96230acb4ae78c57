"""Keep one known line of a native library off stderr, without losing anything else written there.

LiteRT's C++ logger prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." straight to
file descriptor 2 on the first XNNPACK interpreter of a process; no setting turns it off. Users
should not read it on every command, but a real error printed in the same moment must survive: so
fd 2 is pointed at an anonymous in-memory file for that moment, and every other line is written
back afterwards. Linux only (`memfd_create`); elsewhere the line is simply left alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def dropping(marker: bytes) -> Iterator[None]:
    """Within the block, native writes to fd 2 are held back; afterwards all lines without `marker` are written."""
    try:
        held = os.memfd_create("edge-rl-stderr")
        saved = os.dup(2)
    except (AttributeError, OSError):  # no memfd, or no stderr at all: nothing to filter
        yield
        return
    sys.stderr.flush()
    os.dup2(held, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.lseek(held, 0, os.SEEK_SET)
        with os.fdopen(held, "rb") as f:
            kept = b"".join(line for line in f.read().splitlines(keepends=True) if marker not in line)
        if kept:
            os.write(2, kept)
