"""Fleet test parts: bridged brokers, a simulated fleet in a thread, `edge-rl monitor --web` as a process, and
the web view in-process (`MonitorThread`) with bare sockets to stall, reset or read exactly."""

from __future__ import annotations

import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_rl.monitor.fleet import Fleet
from edge_rl.monitor.simulate import SimDevice, Simulator
from edge_rl.monitor.subscribe import Broker
from edge_rl.monitor.web import WebView

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
    """SIGTERM, then its stdout; the monitor must end cleanly within `timeout`, with no traceback on stderr."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"edge-rl monitor did not end within {timeout} s of SIGTERM") from None
    assert proc.returncode == 0 and "Traceback" not in err, f"edge-rl monitor exited with {proc.returncode}: {err}"
    return out


def feed(fleet: Fleet, device: SimDevice, ticks: int) -> None:
    for _ in range(ticks):
        for topic, payload in device.tick():
            fleet.receive(topic, payload, time.time())


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


class MonitorThread:
    """The monitor's thread, in-process: every 0.1 s one sample per device into the fleet (so every row changes),
    then the web view's `tick()`; the longest tick is kept (one that waited for a socket would take
    SEND_TIMEOUT_S)."""

    def __init__(self, devices: int, port: int = 0) -> None:
        self.fleet, self.lock = Fleet(), threading.Lock()
        self.devices = [SimDevice(f"sim-{i:04d}", i, 10.0, events=0) for i in range(devices)]
        self.view = WebView(self.fleet, self.lock, port, "127.0.0.1")
        self.longest_tick = 0.0
        self.ticks = 0
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.halt.wait(0.1):
            with self.lock:
                for device in self.devices:
                    feed(self.fleet, device, 1)
            started = time.monotonic()
            self.view.tick()
            self.longest_tick = max(self.longest_tick, time.monotonic() - started)
            self.ticks += 1

    def close(self) -> None:
        self.halt.set()
        self.thread.join(10)
        self.view.close()


def raw_get(port: int, path: str, host: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    """A GET on a bare socket (to stall it, reset it or read the exact bytes); reads time out after 10 s."""
    s = socket.socket()
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return s


def reset(s: socket.socket) -> None:
    """Close with an RST, as a browser killed mid-stream."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def read_all(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data
