"""Serial test fixtures: a socat pty pair that can be unplugged and plugged back under the same names."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest


class SocatPair:
    """Two linked ptys at `a` and `b`; `unplug()` kills socat (both ends see the cable go), `plug()` restores it."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("socat") is None:
            pytest.fail("socat is missing: run .ci/system-deps (installs socat)")
        self.a, self.b = directory / "ttyA", directory / "ttyB"
        self._process: subprocess.Popen | None = None
        self.plug()

    def plug(self) -> None:
        self._process = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while not (self.a.exists() and self.b.exists()):
            if time.monotonic() > deadline:
                raise RuntimeError("socat did not create its ptys within 5 s")
            time.sleep(0.005)

    def unplug(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=5)
            self._process = None
        for link in (self.a, self.b):
            link.unlink(missing_ok=True)

    def close(self) -> None:
        self.unplug()
