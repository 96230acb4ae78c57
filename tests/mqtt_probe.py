"""A paho-mqtt 2.x client for broker tests (MQTT 3.1.1, CallbackAPIVersion.VERSION2): every wait is bounded.

`connect()` returns the CONNACK's reason code; messages land in a queue that `expect()` and `quiet()` read;
`subscribe()` returns the SUBACK's codes; `kill()` drops the TCP connection without DISCONNECT (the broker
then sends the will).
"""

from __future__ import annotations

import queue
import ssl
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

# MQTT 3.1.1 CONNACK return codes 0, 4 and 5, as paho 2 maps them onto MQTT 5 reason codes
ACCEPTED, BAD_CREDENTIALS, NOT_AUTHORIZED = 0, 0x86, 0x87


class Probe:
    def __init__(
        self,
        port: int,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        clean_session: bool = True,
        will: tuple[str, bytes] | None = None,
        ca: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host, self.port = host, port
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=clean_session
        )
        self.client.reconnect_delay_set(0.2, 0.5)
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.stray: queue.Queue[mqtt.MQTTMessage] = queue.Queue()  # messages outside every routed filter
        self._connacks: queue.Queue[tuple[mqtt.ReasonCode, bool]] = queue.Queue()
        self._subacks: dict[int, list[mqtt.ReasonCode]] = {}
        self.session_present = False
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, msg: self.stray.put(msg)
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self._subacks.__setitem__(mid, list(codes))

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, rc: mqtt.ReasonCode, props: object
    ) -> None:
        self._connacks.put((rc, flags.session_present))

    def connect(self, timeout: float = 5.0) -> int:
        """CONNECT and wait for the CONNACK: its code as paho reports it (ACCEPTED, BAD_CREDENTIALS, NOT_AUTHORIZED)."""
        self.client.connect(self.host, self.port, keepalive=10)
        self.client.loop_start()
        try:
            rc, self.session_present = self._connacks.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise AssertionError(f"no CONNACK within {timeout} s") from None
        if rc.is_failure:
            self.client.loop_stop()  # paho would retry a refused connect
        return rc.value

    def route(self, topic_filter: str) -> None:
        """Messages matching topic_filter go to `inbox`; everything else the broker sends goes to `stray`."""
        self.client.message_callback_add(topic_filter, lambda _c, _u, msg: self.inbox.put(msg))

    def subscribe(self, topic_filter: str, qos: int = 1, timeout: float = 5.0) -> list[int]:
        """SUBSCRIBE (routed to `inbox`) and wait for the SUBACK: its return codes (0-2 granted QoS, 128 refused)."""
        self.route(topic_filter)
        _, mid = self.client.subscribe(topic_filter, qos)
        deadline = time.monotonic() + timeout
        while mid not in self._subacks:
            assert time.monotonic() < deadline, f"no SUBACK for {topic_filter} within {timeout} s"
            time.sleep(0.005)
        return [code.value for code in self._subacks.pop(mid)]

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float = 5.0) -> None:
        """PUBLISH and, for QoS 1, wait for the PUBACK (a broker acknowledges a publish its ACL drops, too)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"no PUBACK for {topic} within {timeout} s"

    def expect(self, timeout: float = 5.0) -> mqtt.MQTTMessage:
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s") from None

    def drain(self) -> list[mqtt.MQTTMessage]:
        out = []
        while not self.inbox.empty():
            out.append(self.inbox.get_nowait())
        return out

    def close(self) -> None:
        """A clean end: DISCONNECT (no will), then stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def kill(self) -> None:
        """An unclean end: the TCP connection closes without DISCONNECT, as when the process or the network dies."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()
