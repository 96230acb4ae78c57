"""The C device simulator and library, built once per session with the sanitizers, and its log format.

Shared by the firmware tests and the daemon's tests that drive `edge-rl run` against the C device.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware_bridge" / "firmware"
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")
CFLAGS = ("-std=c99", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-g", *SANITIZE)
SANITIZER_REPORTS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:")


def compile_c(*args: str | Path, compiler: str = "cc") -> None:
    result = subprocess.run([compiler, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def assert_clean(returncode: int | None, stderr: str) -> None:
    """Exit status 0 and no sanitizer report."""
    assert not any(mark in stderr for mark in SANITIZER_REPORTS), stderr
    assert returncode == 0, stderr


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test driver and the AntiJam simulator, strict C99 with the sanitizers."""
    out = tmp_path_factory.mktemp("firmware")
    lib = FIRMWARE / "edgerl.c"
    compile_c(*CFLAGS, "-o", out / "driver", FIRMWARE / "tests" / "driver.c", lib)
    compile_c(*CFLAGS, "-o", out / "antijam_device", FIRMWARE / "sim" / "antijam_device.c", lib, "-lm")
    return out


LOG_LINE = re.compile(r"t=(\d+\.\d+) (.*)")
SLOT = re.compile(r"slot=(\d+) action=(\d+) reason=(\S+)")
POLICY = {"policy", "host-fallback"}


def read_log(path: Path) -> list[tuple[float, str]]:
    if not path.exists():
        return []
    matches = (LOG_LINE.fullmatch(line) for line in path.read_text().splitlines())
    return [(float(m[1]), m[2]) for m in matches if m]


def slots(log: list[tuple[float, str]]) -> list[tuple[float, int, str]]:
    """(time, action, reason) of every applied action."""
    return [(t, int(m[2]), m[3]) for t, text in log if (m := SLOT.match(text))]


def exit_counters(log: list[tuple[float, str]]) -> dict[str, str]:
    (text,) = [text for _, text in log if text.startswith("exit ")]
    return dict(item.split("=", 1) for item in text.split()[1:])
