"""Crash-safe file writes: a reader sees the old file or the new one, never half of either.

The temporary file is created with the mode a plain `open()` would give (0666 less the umask,
so 0644 usually): files written for others to read (a policy, a bundle) must be readable by the
unprivileged daemon that runs them. Secrets (private keys) are written elsewhere, 0600.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write to a temp file in the same directory, fsync it, then rename over `path`."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
