"""A real Mosquitto for link tests: a free loopback port, a log file, persistence that survives SIGKILL.

`bridge_to(port)` gives the config lines of a bridge to another broker (pass them as `extra`): the
fleet tests publish on one broker and watch on the other.

Started as root, mosquitto would drop to user `mosquitto` and fail to write a root-owned 0700 temp
dir while it keeps running; so it runs as `nobody` (via setpriv) in a world-writable dir of its
own. Mosquitto cannot listen on port 0, hence a port picked free first and a TCP poll until ready.
Start brokers from the test's main thread: the broker gets SIGKILL when the thread that started it ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

MISSING = "run .ci/system-deps (installs mosquitto)"


def binary() -> str:
    """The mosquitto executable, or a test failure naming the fix (never a skip)."""
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if found is None:
        pytest.fail(MISSING, pytrace=False)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bridge_to(port: int, topics: Sequence[str] = ("edgerl/# both 1",), name: str = "edge-to-core") -> list[str]:
    """Config lines bridging this broker to 127.0.0.1:port (MQTT 3.1.1; `topic PATTERN DIRECTION QOS` each).

    Give them last in `extra` (what follows `connection` configures the bridge). Retries after 1 s
    (Mosquitto's default back-off starts at 5 s); the bridge's state is a retained message on
    `$SYS/broker/connection/<name>/state` (1 = up) on both brokers.
    """
    lines = [f"connection {name}", f"address 127.0.0.1:{port}", "bridge_protocol_version mqttv311"]
    lines += [f"remote_clientid {name}", "restart_timeout 1 2", "notifications true", "cleansession false"]
    return lines + [f"topic {topic}" for topic in topics]


class Mosquitto:
    """One broker on 127.0.0.1:port; `kill()` + `start()` (or `restart()`) keeps the port and the store."""

    def __init__(self, port: int | None = None, *, persistence: bool = True, extra: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="edgerl-mosquitto-"))
        self.dir.chmod(0o777)  # written by `nobody` when the tests run as root
        self.log = self.dir / "mosquitto.log"
        self.conf = self.dir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", f"log_dest file {self.log}"]
        lines.append("set_tcp_nodelay true")  # else Nagle holds a frame ~40 ms behind an unacknowledged PUBACK
        lines += ["log_type error", "log_type warning", "log_type notice", "log_type information"]
        if persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.dir}/",
                "autosave_interval 1",
                "autosave_on_changes true",  # save after every change: a SIGKILL right after a PUBACK loses nothing
            ]
        lines += extra  # later lines win: e.g. "allow_anonymous false", or cafile/certfile/keyfile for TLS
        self.conf.write_text("\n".join(lines) + "\n")
        self.conf.chmod(0o644)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 5.0) -> Mosquitto:
        """Start and wait until the port accepts TCP connections."""
        command = [binary(), "-c", str(self.conf)]
        if shutil.which("setpriv"):  # --pdeathsig: a test process that dies takes its brokers along
            drop = ["--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.geteuid() == 0 else []
            command = ["setpriv", *drop, "--pdeathsig", "KILL", *command]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err.strip()} {self.log_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.01)
        self.kill()
        raise RuntimeError(f"mosquitto did not accept connections on port {self.port} within {timeout} s")

    def stop(self) -> None:
        """Graceful: SIGTERM (mosquitto saves its store on the way out)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """A crash: SIGKILL, nothing saved beyond the last autosave."""
        self._signal(signal.SIGKILL)

    def restart(self) -> Mosquitto:
        """Start again on the same port with the same persistence dir (stop first if running)."""
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
