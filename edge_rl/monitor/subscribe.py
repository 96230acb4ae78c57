"""The MQTT side of the monitor: paho's network thread subscribes and hands messages over a queue.

MQTT 3.1.1 (the embedded amqtt broker speaks nothing newer). With `--client-id` the session is
persistent (clean_session=False, QoS 1 subscription): the broker queues telemetry while the
monitor is away and delivers it when the same id connects again; without one, a random id and a
clean session. paho retries the first connection too (connect_async + loop_start), so a broker
that is not up yet is a status line, not an error. The callbacks only enqueue: all accounting
happens in the monitor's own thread, on `Fleet`.
"""

from __future__ import annotations

import queue
import re
import secrets
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_rl.errors import BadInput
from edge_rl.telemetry import schema

DEFAULT_USERNAME = "edge-rl-monitor"  # amqtt queues for offline clients only when they log in with some name
CLIENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
INBOX_LIMIT = 100_000  # messages waiting for the monitor's thread; beyond this they are dropped and counted
RECONNECT = (1, 10)  # paho's reconnect delay: first and largest, seconds


@dataclass(frozen=True)
class Broker:
    """Where and how to connect, checked before any thread starts."""

    host: str
    port: int
    tls: bool
    username: str = DEFAULT_USERNAME
    password: str | None = None
    ca: Path | None = None
    client_id: str | None = None  # None: a random id and a clean session
    keepalive: int = 10

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_url(url: str) -> tuple[str, int, bool, str | None]:
    """mqtt://host[:port] or mqtts://host[:port] (optionally user@) -> host, port, tls, user; else BadInput."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise BadInput(f"broker URL {url!r} does not parse: {e}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise BadInput(f"broker URL {url!r}: use mqtt://host:port or mqtts://host:port")
    if not parts.hostname:
        raise BadInput(f"broker URL {url!r} names no host")
    if parts.password is not None:
        raise BadInput("a password in the broker URL would show in `ps`: put it in a variable and pass --password-env")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BadInput(f"broker URL {url!r}: only mqtt://host:port (pick one device with --device)")
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise BadInput(f"broker URL {url!r}: bad host name") from None
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (8883 if tls else 1883), tls, parts.username


def subscriptions(device: str | None) -> list[str]:
    """The topic filters for every device, or for one."""
    level = schema.check_device(device) if device is not None else "+"
    return [f"{schema.ROOT}/{level}/telemetry", f"{schema.ROOT}/{level}/status"]


class Subscriber:
    """paho's network thread: connect (and keep reconnecting), subscribe on every connect, enqueue messages."""

    def __init__(self, broker: Broker, topics: list[str], inbox: queue.Queue[tuple[str, bytes, float]]) -> None:
        self.broker, self.topics, self.inbox = broker, topics, inbox
        self.status = "connecting"
        self.attempts = 0
        self.connects = 0
        self.session_present = False
        self.dropped = 0  # messages refused because the inbox was full
        self.stopping = False
        self.subscribed = threading.Event()  # set at the first SUBACK: from here on nothing published is missed
        self._lock = threading.Lock()
        persistent = broker.client_id is not None
        client_id = broker.client_id or f"edge-rl-monitor-{secrets.token_hex(4)}"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not persistent,
            protocol=mqtt.MQTTv311,
        )
        self.client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            try:
                self.client.tls_set(ca_certs=str(broker.ca) if broker.ca else None)
            except (ssl.SSLError, OSError, ValueError) as e:
                reason = getattr(e, "strerror", None) or e
                raise BadInput(f"--ca {broker.ca}: cannot use it for TLS: {reason}") from None
        self.client.reconnect_delay_set(*RECONNECT)
        self.client.connect_timeout = 3.0
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message  # set before connecting: a resumed session delivers at once

    def start(self) -> None:
        self.client.connect_async(self.broker.host, self.broker.port, self.broker.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly (a persistent session stays on the broker) and end the network thread."""
        self.stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def connected(self) -> bool:
        return self.client.is_connected()

    def _set(self, status: str) -> None:
        with self._lock:
            self.status = status

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.attempts += 1
            self._set(f"refused by the broker: {reason} (retrying)")
            return
        self.connects += 1
        self.session_present = bool(flags.session_present)
        client.subscribe([(topic, 1) for topic in self.topics])  # on resume too: harmless; a lost session needs it
        resumed = " (session resumed)" if self.session_present else ""
        self._set(f"connected{resumed}")

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [r for r in reasons if r.is_failure]
        if refused:
            self._set(f"subscription refused: {refused[0]} (check the broker's ACL for {self.topics[0]})")
        else:
            self.subscribed.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self.attempts += 1
        self._set("broker unreachable (retrying)")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._set("disconnected (monitor stopped)" if self.stopping else f"disconnected: {reason} (reconnecting)")

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = "?"  # not a topic we subscribed to: the fleet ignores it
        try:
            self.inbox.put_nowait((topic, bytes(message.payload), time.time()))
        except queue.Full:
            self.dropped += 1


def new_inbox() -> queue.Queue[tuple[str, bytes, float]]:
    return queue.Queue(maxsize=INBOX_LIMIT)
