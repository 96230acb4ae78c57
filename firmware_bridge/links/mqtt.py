"""MQTT transport (paho-mqtt 2.x, MQTT v5): one device's frames on `edgerl/<device>/link/obs|action|status|cmd`.

`mqtt://[user[:password]@]host[:port]/DEVICE?keepalive=10&qos=1` (`mqtts://` adds TLS, port 8883).
Device -> host: OBS on `obs`, everything else (HELLO, HEARTBEAT, ERROR) on `status`; host -> device:
ACTION on `action`, everything else on `cmd`. One frame per PUBLISH. MQTT orders messages only
within a topic, so every topic has its own sequence numbers and decoder, and a HELLO (the peer may
have restarted its counters) restarts the tracking of the peer's other topic too.

Delivery: QoS 1 on a persistent session (clean_start=False, session expiry of hours, a stable
client id), so paho's queue and the broker's session bridge a broker restart or an outage. The
device's will is a retained OFFLINE heartbeat on `status`; every connect overwrites it with a
retained HELLO (presence for hosts that subscribe later), and close() publishes the will on purpose
(DISCONNECT reason 4), so a retained `status` always says whether the device is there.

Disconnects are handled by paho, not by the session: after open() succeeds, receive() never raises
LinkDown. paho's network thread reconnects (exponential backoff, jittered per attempt: paho has no
jitter of its own) and resumes the session with its queue; a Link that closed and reopened the
transport would throw that queue and the session away. The Link still notices an outage, by the
peer's silence: it goes LOST, refuses ACTIONs and re-handshakes when frames flow again; the
counters (disconnects, broker_reconnects) say why. Only the first connection is the Link's: open()
raises LinkDown while the broker is unreachable and the Link retries with its own backoff.

HELLO and HEARTBEAT are dropped, not queued, while disconnected: the Link repeats them every period
and a backlog of stale proofs of life helps nobody. Incoming frames wait in bounded queues: the
device's ACTIONs latest-wins (only the newest setpoint matters), the rest drop-oldest, both counted.
"""

from __future__ import annotations

import math
import os
import random
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass, replace
from urllib.parse import unquote, urlsplit

from ..protocol import (
    DELIMITER,
    Action,
    Config,
    ForeignHello,
    FrameDecoder,
    Heartbeat,
    Hello,
    Message,
    Obs,
    PeerState,
    Reset,
    encode,
)
from ..protocol.sequence import SequenceTracker
from .base import LinkDown, LinkError, LinkUrl, Role, Transport, number

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode
    from paho.mqtt.subscribeoptions import SubscribeOptions
except ImportError:  # the `bridge` extra is not installed: say so when an mqtt:// URL is opened
    mqtt = None  # type: ignore[assignment]

OPTIONS = tuple("keepalive qos session_expiry ca certfile keyfile password_env tls_insecure queue client_id".split())
CONTROL_EXPIRY_S = 10  # RESET and CONFIG older than this are dropped by the broker
BACKOFF = (0.5, 20.0)  # first and largest reconnect delay in seconds, each times a random 0.5-1.5
FATAL = {0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C}  # CONNACK refusals a retry cannot fix (version, id, credentials, ban)
COUNTERS = tuple(
    "published publish_dropped liveness_dropped queue_overwritten rx_dropped disconnects broker_reconnects "
    "session_present".split()
)


@dataclass(frozen=True)
class Settings:
    """Everything an mqtt:// URL says, checked."""

    host: str
    port: int
    device: str
    client_id: str
    keepalive: int = 10
    qos: int = 1
    session_expiry: int = 6 * 3600
    queue: int = 1000
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca: str | None = None
    certfile: str | None = None
    keyfile: str | None = None


class MqttTransport(Transport):
    """Two topics out, two topics in, for one device; paho's network thread does the I/O."""

    def __init__(self, settings: Settings, local: Hello, role: Role) -> None:
        s = self.settings = settings
        self.local, self.role = local, role
        self.describe = f"{'mqtts' if s.tls else 'mqtt'}://{s.host}:{s.port}/{s.device} ({role})"
        base = f"edgerl/{s.device}/link/"
        device = role == "device"
        self._data_type = Obs if device else Action
        self._data_out, self._ctl_out = (base + "obs", base + "status") if device else (base + "action", base + "cmd")
        self._ctl_in, self._data_in = (base + "cmd", base + "action") if device else (base + "status", base + "obs")
        self._seq = {self._data_out: 0, self._ctl_out: 0}
        self._decoders = {self._ctl_in: FrameDecoder(), self._data_in: FrameDecoder(), "retained": FrameDecoder()}
        self._latest_wins = device  # a device applies only the newest setpoint
        self._inbox: dict[str, deque[Message | ForeignHello]] = {
            self._ctl_in: deque(maxlen=s.queue),
            self._data_in: deque(maxlen=1 if device else s.queue),
        }
        self._arrived = threading.Condition()
        self._publish_lock = threading.Lock()  # send() and the reconnect HELLO share the numbering
        self._connack = threading.Event()
        self._refusal: ReasonCode | None = None
        self._attempt = 0
        self._started = self._closing = False
        self.connected = False
        self.n = dict.fromkeys(COUNTERS, 0)
        self.retry_delays: deque[float] = deque(maxlen=64)  # planned reconnect delays, newest last
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id, protocol=mqtt.MQTTv5)
        client.max_queued_messages_set(s.queue)
        client.connect_timeout = float(min(s.keepalive, 5))
        if s.username is not None or s.password is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            try:
                client.tls_set(ca_certs=s.ca, certfile=s.certfile, keyfile=s.keyfile)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise LinkError(f"{self.describe}: TLS setup failed: {_reason(exc)}") from None
        if self.role == "device":
            offline = encode(Heartbeat(PeerState.OFFLINE, unsequenced=True))
            client.will_set(self._ctl_out, offline, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = lambda client, userdata: self._plan_retry()
        client.on_disconnect = self._on_disconnect
        client.on_socket_open = _no_delay
        client.on_message = self._on_message
        return client

    # -- Transport ----------------------------------------------------------------------------------
    def open(self) -> None:
        s, client = self.settings, self._client
        self._connack.clear()
        self._refusal = None
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry
        try:
            client.connect(s.host, s.port, s.keepalive, clean_start=False, properties=props)
        except (UnicodeError, ValueError) as exc:  # a host name that cannot be encoded: configuration
            raise LinkError(f"{self.describe}: bad broker host: {_reason(exc)}") from None
        except ssl.SSLError as exc:  # a certificate problem is configuration, not an outage
            raise LinkError(f"{self.describe}: TLS handshake failed: {_reason(exc)}") from None
        except OSError as exc:
            raise LinkDown(f"broker unreachable: {_reason(exc)}") from None  # the Link names the transport
        client.loop_start()
        self._started = True
        answered = self._connack.wait(client.connect_timeout)
        if answered and self._refusal is None:
            return
        self.close()
        if self._refusal is None:
            raise LinkDown(f"no CONNACK from the broker within {client.connect_timeout:g} s")
        if self._refusal.value in FATAL:
            raise LinkError(f"{self.describe}: the broker refused the connection: {self._refusal}")
        raise LinkDown(f"the broker refused the connection: {self._refusal}")

    def send(self, msg: Message) -> int:
        if isinstance(msg, (Hello, Heartbeat)) and not self.connected:
            self.n["liveness_dropped"] += 1  # the Link repeats these every period; no number used
            return self._seq[self._ctl_out]
        return self._publish(msg)

    def receive(self, timeout: float) -> list[Message | ForeignHello]:
        with self._arrived:
            self._arrived.wait_for(lambda: any(self._inbox.values()), max(timeout, 0.0))
            out = [msg for inbox in self._inbox.values() for msg in inbox]  # control topic first: HELLO before data
            for inbox in self._inbox.values():
                inbox.clear()
        return out

    def close(self) -> None:
        if not self._started:
            return
        self._closing = True
        if self.role == "device" and self.connected:  # announce OFFLINE: a graceful DISCONNECT drops the will
            self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
        else:
            self._client.disconnect()
        self._client.loop_stop()
        self._started = self._closing = self.connected = False

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for decoder in self._decoders.values():
            for key, value in decoder.counters.as_dict().items():
                total[key] = total.get(key, 0) + value
        return {**total, **self.n}

    # -- paho's thread --------------------------------------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, _: object, flags: mqtt.ConnectFlags, reason: ReasonCode, *__: object
    ) -> None:
        if reason.is_failure:
            self._refusal = reason
            self._plan_retry()
        else:
            self.n["session_present"] += int(flags.session_present)
            self.n["broker_reconnects"] += int(self._connack.is_set())
            self._attempt = 0
            self.connected = True
            options = SubscribeOptions(qos=self.settings.qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
            client.subscribe([(self._ctl_in, options), (self._data_in, options)])
            if self.role == "device":  # presence: overwrite the retained OFFLINE will
                self._publish(replace(self.local, reply_requested=True), retain=True)
        self._connack.set()

    def _on_disconnect(self, *_: object) -> None:
        if self.connected and not self._closing:  # paho may report one loss twice
            self.n["disconnects"] += 1
            self._plan_retry()
        self.connected = False

    def _plan_retry(self) -> None:
        """paho's backoff has no jitter: choose each delay here so a fleet does not reconnect in step."""
        first, largest = BACKOFF
        delay = min(first * 2 ** min(self._attempt, 16), largest) * random.uniform(0.5, 1.5)
        self._attempt += 1
        self.retry_delays.append(delay)
        self._client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]  # paho sleeps in float seconds

    def _on_message(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        inbox = self._inbox.get(message.topic)
        if inbox is None:
            return
        decoder = self._decoders["retained" if message.retain else message.topic]  # stale copies: own numbering
        msgs = decoder.feed(message.payload + DELIMITER)  # a torn payload never spills into the next one
        with self._arrived:
            for msg in msgs:
                if isinstance(msg, Hello):
                    for other in self._decoders.values():
                        if other is not decoder:
                            other.sequence = SequenceTracker(other.counters)
                if len(inbox) == inbox.maxlen:
                    self.n["queue_overwritten" if inbox.maxlen == 1 and self._latest_wins else "rx_dropped"] += 1
                inbox.append(msg)
            if msgs:
                self._arrived.notify_all()

    def _publish(self, msg: Message, retain: bool = False) -> int:
        topic = self._data_out if isinstance(msg, self._data_type) else self._ctl_out
        props = None
        expiry = None if retain else self._expiry(msg)
        if expiry is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = expiry
        qos = self.settings.qos
        with self._publish_lock:
            seq = self._seq[topic]
            frame = encode(msg, seq)
            self._seq[topic] = (seq + 1) & 0xFFFF  # a dropped frame still uses its number: a counted gap
            rc = self._client.publish(topic, frame, qos, retain, props).rc
            queued = rc == mqtt.MQTT_ERR_SUCCESS or (rc == mqtt.MQTT_ERR_NO_CONN and qos > 0)
            self.n["published" if queued else "publish_dropped"] += 1
        return seq

    def _expiry(self, msg: Message) -> int | None:
        """Seconds a broker may hold `msg` for an absent peer (MQTT 5 counts whole seconds).

        A setpoint outlives its validity in no queue; proofs of life are stale after a few
        heartbeats; a RESET or CONFIG queued for hours must not replay on a device that returns.
        """
        if isinstance(msg, Action):
            return max(1, math.ceil(msg.valid_ms / 1000))
        if isinstance(msg, (Hello, Heartbeat)):
            return max(1, math.ceil(3 * self.local.heartbeat_ms / 1000))
        if isinstance(msg, (Reset, Config)):
            return CONTROL_EXPIRY_S
        return None


def _no_delay(_client: object, _userdata: object, sock: socket.socket) -> None:
    """Frames are small and latency-bound: Nagle would hold each back ~40 ms for the previous ACK."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not a TCP socket (a proxy, a test double): latency only


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__


def _integer(options: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    value = number(options, name, default, low, high)
    if value != int(value):
        raise LinkError(f"option {name}={options[name]} is not a whole number")
    return int(value)


def _tls_file(options: dict[str, str], name: str, tls: bool) -> str | None:
    path = options.get(name)
    if path is None:
        return None
    if not tls:
        raise LinkError(f"option {name} needs an mqtts:// URL")
    if not (os.path.isfile(path) and os.access(path, os.R_OK)):
        raise LinkError(f"option {name}={path}: no such readable file")
    return path


def open_transport(url: LinkUrl, local: Hello, role: Role) -> MqttTransport:
    """`mqtt[s]://[user[:password]@]host[:port]/DEVICE?keepalive=S&qos=0|1&session_expiry=S&queue=N&...`."""
    if mqtt is None:
        raise LinkError("mqtt:// links need paho-mqtt >= 2 (pip install 'edge-rl[bridge]')")
    options = url.take(OPTIONS)
    if "tls_insecure" in options:
        raise LinkError(
            "tls_insecure is refused: without certificate and host name checks anyone on the path can pose as the "
            "broker (give ca=FILE for a private CA instead)"
        )
    tls = url.scheme == "mqtts"
    parts = urlsplit(url.url)
    try:
        host, port = parts.hostname, parts.port
        if port is None:
            port = 8883 if tls else 1883
        elif not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise LinkError(f"{url.scheme}:// link: the port is not a number in 1-65535") from None
    device = url.path.strip("/")
    if not host or not device or set(device) & set("/+#"):
        raise LinkError(f"{url.scheme}:// link needs a broker host and one device id (e.g. mqtt://broker:1883/dev1)")
    password = unquote(parts.password) if parts.password is not None else None
    if "password_env" in options:
        if password is not None:
            raise LinkError("give the password in the URL or in password_env, not both")
        password = os.environ.get(options["password_env"])
        if password is None:
            raise LinkError(f"password_env={options['password_env']}: no such environment variable")
    certfile, keyfile = _tls_file(options, "certfile", tls), _tls_file(options, "keyfile", tls)
    if keyfile and not certfile:
        raise LinkError("option keyfile needs certfile (the client certificate it belongs to)")
    settings = Settings(
        host=host,
        port=port,
        device=device,
        client_id=options.get("client_id") or f"edgerl-{device}-{role}",
        keepalive=_integer(options, "keepalive", 10, 1, 65535),
        qos=_integer(options, "qos", 1, 0, 1),
        session_expiry=_integer(options, "session_expiry", 6 * 3600, 0, 0xFFFFFFFF),
        queue=_integer(options, "queue", 1000, 1, 1_000_000),
        username=unquote(parts.username) if parts.username is not None else None,
        password=password,
        tls=tls,
        ca=_tls_file(options, "ca", tls),
        certfile=certfile,
        keyfile=keyfile,
    )
    return MqttTransport(settings, local, role)
