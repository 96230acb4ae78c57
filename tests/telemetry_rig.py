"""Telemetry test parts: a persistent-session subscriber that records everything, daemon configs and processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[1]
DEVICE = [sys.executable, "-m", "edge_rl.cli", "device", "edge_rl/AntiJam-v0"]
MONITOR = [sys.executable, "-m", "edge_rl.cli", "monitor"]


class Watcher:
    """Subscribes to `edgerl/#` with a stable client id (the broker queues for it while it is away)."""

    def __init__(self, port: int, client_id: str = "test-watcher", topic: str = "edgerl/#") -> None:
        self.port, self.topic = port, topic
        self.messages: list[tuple[str, bool, dict[str, Any], float]] = []  # (topic, retained, doc, received)
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, protocol=mqtt.MQTTv311
        )
        self.client.username_pw_set("edge-rl-monitor")
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.topic, qos=1)

    def start(self) -> Watcher:
        self.client.connect("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            doc = {"raw": msg.payload}
        with self.lock:
            self.messages.append((msg.topic, msg.retain, doc, time.monotonic()))

    def docs(self, kind: str | None = None, boot: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            found = [d for _, _, d, _ in self.messages]
        return [d for d in found if (kind is None or d.get("kind") == kind) and (boot is None or d.get("boot") == boot)]

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [d for d in self.docs("event") if name is None or d["event"] == name]

    def seqs(self, boot: str) -> set[int]:
        return {d["seq"] for d in self.docs(boot=boot) if d.get("kind") in ("sample", "event")}

    def statuses(self) -> list[tuple[bool, dict[str, Any], float]]:
        with self.lock:
            return [(r, d, t) for topic, r, d, t in self.messages if topic.endswith("/status")]

    def wait(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while not (result := condition()):
            assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
            time.sleep(0.02)
        return result


def write_config(path: Path, url: str, control: dict[str, Any] | None = None, **telemetry: Any) -> Path:
    """A daemon config with a [telemetry] section (and a generous deadline: a loaded CI box never misses it)."""
    lines = ["[control]", *(f"{k} = {json.dumps(v)}" for k, v in {"deadline_ms": 5000, **(control or {})}.items())]
    lines += ["[telemetry]", f'url = "{url}"', *(f"{k} = {json.dumps(v)}" for k, v in telemetry.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cmd(bundle: Path, link: str, state: Path, config: Path, *args: str) -> list[str]:
    run = [sys.executable, "-m", "edge_rl.cli", "run", str(bundle), "--link", link]
    return [*run, "--state-dir", str(state), "--config", str(config), *args]


def start(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def boot_of(watcher: Watcher, timeout: float = 30.0) -> str:
    """The boot id of the first online status seen."""
    return watcher.wait(
        lambda: next((d["boot"] for r, d, _ in watcher.statuses() if d.get("state") == "online"), None),
        timeout,
        "an online status",
    )
