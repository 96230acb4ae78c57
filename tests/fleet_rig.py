"""Fleet test parts: bridged brokers, a simulated fleet in a thread, `edge-rl monitor --web` as a process."""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_rl.monitor.simulate import Simulator
from edge_rl.monitor.subscribe import Broker

ROOT = Path(__file__).resolve().parents[1]
MONITOR = [sys.executable, "-m", "edge_rl.cli", "monitor"]


def client(port: int, client_id: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def wait_for_bridge(port: int, name: str = "edge-to-core", timeout: float = 30.0) -> None:
    """Until the broker on `port` holds the bridge's retained state `1` (connected)."""
    up = threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.payload == b"1":
            up.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.on_message = on_message
    c.on_connect = lambda cl, _u, _f, _r, _p: cl.subscribe(f"$SYS/broker/connection/{name}/state", qos=1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        assert up.wait(timeout), f"the bridge {name} did not come up within {timeout} s"
    finally:
        c.disconnect()
        c.loop_stop()


def publish(port: int, messages: Iterable[tuple[str, bytes]], retain: bool = False) -> None:
    """Publish at QoS 1 and wait for every PUBACK."""
    c = client(port, f"test-publisher-{time.monotonic_ns()}")
    try:
        for info in [c.publish(t, p, qos=1, retain=retain) for t, p in messages]:
            info.wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


class SimulatedFleet:
    """A Simulator running in a thread until its duration ends or `stop()`."""

    def __init__(self, port: int, devices: int, duration: float | None, **kwargs: Any) -> None:
        self.sim = Simulator(Broker("127.0.0.1", port, False), devices, **kwargs)
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self.sim.run, args=(duration, self.halt), daemon=True)
        self.thread.start()

    @property
    def sent(self) -> int:
        return sum(d.sent for d in self.sim.devices)

    def join(self, timeout: float = 60.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the simulator did not finish within {timeout} s"

    def stop(self) -> None:
        self.halt.set()
        self.join()


def start_monitor(url: str, *args: str, timeout: float = 30.0) -> tuple[subprocess.Popen[str], str]:
    """`edge-rl monitor URL --web 0 ARGS` and the web view's URL (from its stderr line)."""
    proc = subprocess.Popen(
        [*MONITOR, url, "--web", "0", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline, seen = time.monotonic() + timeout, ""
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        if select.select([proc.stderr], [], [], 0.2)[0]:
            line = proc.stderr.readline()
            seen += line
            found = re.search(r"web view on (http://\S+)", line)
            if found:
                return proc, found.group(1)
            if not line:
                break
    stop(proc)
    raise AssertionError(f"edge-rl monitor --web printed no URL within {timeout} s: {seen!r}")


def stop(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """SIGTERM, then its stdout; the monitor must end cleanly within `timeout`."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"edge-rl monitor did not end within {timeout} s of SIGTERM") from None
    assert proc.returncode == 0, f"edge-rl monitor exited with {proc.returncode}"
    return out
