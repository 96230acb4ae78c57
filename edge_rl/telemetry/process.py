"""What telemetry says about the daemon's process, and how it makes any value plain JSON.

Kept apart from the MQTT client (`publish`): CPU time and resident memory read cheaply from the
kernel, the OS-level thread name `top -H` shows, and the conversion that turns numpy values and
non-finite floats into what every JSON reader accepts.
"""

from __future__ import annotations

import ctypes
import math
import os
from typing import Any


def jsonable(value: Any) -> Any:
    """Plain JSON: numpy scalars as numbers, non-finite floats as null, anything else unknown as text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy scalar or array
        return jsonable(value.tolist())
    return str(value)


def name_os_thread(name: bytes) -> None:
    """The name `top -H` and /proc/<pid>/task/*/comm show for this thread (Linux; elsewhere nothing)."""
    try:
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def cpu_seconds() -> float:
    """User plus system CPU time of the whole process (every thread), seconds."""
    t = os.times()
    return t.user + t.system


def rss_mb() -> float | None:
    """Resident memory now, MiB (None where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None
