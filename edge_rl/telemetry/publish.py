"""The telemetry client: one thread between the control loop and the broker.

The loop calls `sample`, `event` and `status`; each is an append to a bounded deque (atomic, no
lock the thread could hold) plus one byte on a non-blocking wake-up pipe, so the loop never waits
for the disk or the network (a full deque drops the item and counts it). Whatever goes wrong in
the thread ends telemetry, not the daemon: one `telemetry_failed` notice, and the loop goes on.

The thread numbers each message (`boot`, `seq`), writes it to the outbox, then publishes from the
outbox at QoS 1 with a bounded window in flight; a row leaves the outbox when its PUBACK arrives.
paho-mqtt is driven through its external-loop API (`loop_read`, `loop_write`, `loop_misc`) from a
`select` that also watches the wake-up pipe: no busy polling.

MQTT 3.1.1 (every broker speaks it, the embedded one only it) on a persistent session: a stable
client id and clean_session off, so the broker keeps the session's subscription (commands) and
paho resends what was in flight after a reconnect. Connecting again is ours, not paho's: jittered
exponential back-off, and a half-open connection (the broker silent while a PUBLISH waits for its
PUBACK longer than the keepalive) is dropped and reopened without waiting for two keepalives.

Presence: the will is a retained `offline` status; every connect publishes a retained `online`
status (bundle version, adaptation mode, boot); a clean stop publishes `offline` itself.
Commands arrive on `edgerl/<device>/cmd`: retained ones, other topics (some brokers deliver
retained messages of other subscriptions) and anything `schema.parse_command` refuses are answered
with a reason; valid ones wait in `commands` for the loop.
"""

from __future__ import annotations

import json
import os
import random
import select
import ssl
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_rl.errors import BadInput
from edge_rl.telemetry import schema
from edge_rl.telemetry.outbox import Outbox
from edge_rl.telemetry.process import cpu_seconds, jsonable, name_os_thread, rss_mb
from edge_rl.telemetry.settings import Settings

QUEUE = 10_000  # items from the loop not yet in the outbox
TAKE = 256  # items moved into the outbox per wake-up: the thread's bursts of Python work stay short
WINDOW = 64  # PUBLISHes in flight awaiting PUBACK
MISC_EVERY = 1.0  # seconds between paho's keepalive checks (loop_misc)
CLOSE_WAIT = 3.0  # seconds a clean stop spends publishing what is left
CONNECT_TIMEOUT = 2.0  # TCP and TLS handshake limit: a stop never waits long behind a dead broker
RECENT_IDS = 64  # command ids remembered: a QoS 1 duplicate of a command is not run twice


class Publisher:
    """Telemetry for one daemon boot: hand it samples, events and status; it does the rest in its thread."""

    def __init__(self, settings: Settings, boot: str, status: dict[str, Any], outbox_path: Path | None) -> None:
        self.settings, self.boot = settings, boot
        self.topics = schema.topics(settings.device)
        self.queue_dropped = 0  # items the loop could not queue (the thread stalled for QUEUE items)
        self.commands: deque[schema.Command | schema.Refusal] = deque(maxlen=64)  # for the loop to apply or answer
        self.notices: deque[tuple[str, dict[str, Any]]] = deque(maxlen=256)  # state changes for the event log
        self.counters = {"connects": 0, "disconnects": 0, "refused": 0, "published": 0, "acked": 0, "half_open": 0}
        self.connected = False
        self.alive = True  # False once the thread has ended (stopped, or failed: see notices)
        self._status = dict(status)
        self._items: deque[tuple[str, Any, float, float] | None] = deque()
        self._recent_ids: deque[str] = deque(maxlen=RECENT_IDS)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._outbox_path = outbox_path
        self._thread = threading.Thread(target=self._run, name="edge-rl-telemetry", daemon=True)
        self._thread.start()

    # -- the control loop's side: never blocks ----------------------------------------------------
    def sample(self, fields: dict[str, Any]) -> None:
        """A sample; the process's CPU time is read now, at the interval's end (not when the thread gets to it)."""
        self._put(("sample", {**fields, "_cpu": cpu_seconds()}, time.monotonic(), time.time()))

    def event(self, record: dict[str, Any]) -> None:
        self._put(("event", record, record.get("mono", time.monotonic()), record.get("wall", time.time())))

    def status(self, **fields: Any) -> None:
        """Change the retained status (e.g. a new bundle version); published now or on the next connect."""
        self._put(("status", fields, time.monotonic(), time.time()))

    def _put(self, item: tuple[str, Any, float, float] | None) -> None:
        if not self.alive or (item is not None and len(self._items) >= QUEUE):
            self.queue_dropped += 1
            return
        self._items.append(item)
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass  # the pipe is full of wake-ups already (the thread is awake), or closed (it ended)

    def close(self) -> None:
        """Publish what is left (bounded), say `offline`, disconnect; the outbox keeps whatever did not go."""
        self._put(None)
        self._thread.join(CONNECT_TIMEOUT + CLOSE_WAIT + 3.0)
        self.alive = False
        if not self._thread.is_alive():  # a thread stuck in a system call keeps its pipe until the process ends
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)

    # -- the thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        name_os_thread(b"edgerl-telemetry")
        try:
            self._serve()
        except Exception as e:  # telemetry ends, the daemon does not: say so once, drop what comes later
            self.alive = False
            self.notices.append(("telemetry_failed", {"error": f"{type(e).__name__}: {e}"[:300]}))

    def _serve(self) -> None:
        s = self.settings
        self.outbox = Outbox(self._outbox_path, s.outbox_bytes)
        self._outbox_notes()
        self.seq = 0
        self.cursor = self.outbox.first_id()  # rows up to here are handed to paho
        self.inflight: dict[int, tuple[int, float]] = {}  # mid -> (row id, published at)
        self.acked: list[int] = []
        self.state = "down"  # down | connecting | up
        self.next_attempt, self.delay, self.attempt_started = 0.0, s.reconnect_s[0], 0.0
        self.last_misc = 0.0
        self.cpu_mark = (time.monotonic(), cpu_seconds())
        self.client = self._client()
        stopping = False
        while not stopping:
            stopping = self._take(self._wait())
            self._outbox_notes()
            self._network()
        self._finish()

    def _outbox_notes(self) -> None:
        while self.outbox.notes:
            self.notices.append(("telemetry_outbox", {"detail": self.outbox.notes.pop(0)}))

    def _client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"edgerl-{s.device}-telemetry",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set(ca_certs=s.ca, certfile=s.certfile, keyfile=s.keyfile, cert_reqs=ssl.CERT_REQUIRED)
        client.connect_timeout = min(float(s.keepalive_s), CONNECT_TIMEOUT)
        client.max_inflight_messages_set(WINDOW)
        client.suppress_exceptions = False  # our callbacks catch what they expect; anything else ends telemetry
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.connect_async(s.host, s.port, s.keepalive_s)  # only stores where to; `reconnect` connects
        return client

    def _wait(self) -> float:
        """How long the thread may sleep: until the next keepalive check or the next connection attempt."""
        now = time.monotonic()
        if self.state == "down":
            return max(0.0, min(self.next_attempt - now, MISC_EVERY))
        return max(0.0, min(self.last_misc + MISC_EVERY - now, MISC_EVERY))

    def _take(self, wait: float) -> bool:
        """Sleep until woken (or `wait`), then move everything queued into the outbox; True when told to stop."""
        sock = self.client.socket() if self.state != "down" else None
        readers = [self._wake_r] + ([sock] if sock is not None else [])
        writers = [sock] if sock is not None and self.client.want_write() else []
        try:
            readable, writable, _ = select.select(readers, writers, [], wait)
        except (OSError, ValueError):  # the socket closed under us: the network step notices
            readable, writable = [], []
        if self._wake_r in readable:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        if sock is not None and sock in writable:
            self.client.loop_write()
        if sock is not None and sock in readable:
            self.client.loop_read()
            while self.state != "down" and getattr(self.client.socket(), "pending", lambda: 0)():
                self.client.loop_read()  # TLS: records already decrypted wait in the SSL buffer, not the socket
        rows: list[tuple[bytes, bool]] = []
        stop = False
        for _ in range(TAKE):
            try:
                item = self._items.popleft()
            except IndexError:
                break
            if item is None:
                stop = True
                break
            kind, body, mono, wall = item
            if kind == "status":
                self._status.update(body)
                if self.state == "up":
                    self._publish_status("online")
                continue
            rows.append((self._message(kind, body, mono, wall), kind == "event"))
        self.outbox.add(rows)
        if self._items and not stop:
            os.write(self._wake_w, b"\0")  # more to take: the next select returns at once
        return stop

    def _message(self, kind: str, body: dict[str, Any], mono: float, wall: float) -> bytes:
        self.seq += 1
        head = {"v": schema.VERSION, "device": self.settings.device, "boot": self.boot, "seq": self.seq, "kind": kind}
        head.update(wall=round(wall, 6), mono=round(mono, 6))
        if kind == "sample":
            cpu = body.pop("_cpu")
            head.update(body)
            head.update(self._process_figures(mono, cpu))
        else:
            data = {k: v for k, v in body.items() if k not in ("seq", "boot", "mono", "wall", "kind")}
            head.update(event=body.get("kind", "?"), data={"event_seq": body.get("seq"), **data})
        encoded = json.dumps(jsonable(head), separators=(",", ":"), allow_nan=False).encode()
        if len(encoded) > schema.MAX_MESSAGE_BYTES:  # a broker would take it and drop it: an unexplained gap
            head["data" if kind == "event" else "returns"] = {"truncated_bytes": len(encoded)}
            encoded = json.dumps(jsonable(head), separators=(",", ":"), allow_nan=False).encode()
        return encoded

    def _process_figures(self, mono: float, cpu: float) -> dict[str, Any]:
        """RSS, CPU share since the previous sample, and this client's own counters (read here, not in the loop)."""
        then, cpu_then = self.cpu_mark
        self.cpu_mark = (mono, cpu)
        elapsed = mono - then
        return {
            "rss_mb": rss_mb(),
            "cpu_pct": round(100.0 * (cpu - cpu_then) / elapsed, 2) if elapsed > 0 else None,
            "mqtt": {
                **self.counters,
                "connected": self.state == "up",
                "outbox_rows": self.outbox.rows,
                "outbox_bytes": self.outbox.bytes,
                "dropped_samples": self.outbox.dropped_samples,
                "dropped_events": self.outbox.dropped_events,
                "outbox_on_disk": self.outbox.on_disk,
                "queue_dropped": self.queue_dropped,
            },
        }

    # -- the connection -----------------------------------------------------------------------------
    def _network(self) -> None:
        now = time.monotonic()
        if self.state == "down":
            if now >= self.next_attempt:
                self._connect(now)
            return
        if self.state == "connecting" and now - self.attempt_started > self.settings.keepalive_s:
            self._lost("no CONNACK within the keepalive", now)
            return
        if now - self.last_misc >= MISC_EVERY:
            self.last_misc = now
            self.client.loop_misc()  # keepalive pings, and paho's own timeout of a silent broker
        if self.state == "up":
            self._settle_acks()
            oldest = min((t for _, t in self.inflight.values()), default=now)
            if now - oldest > self.settings.keepalive_s:
                self.counters["half_open"] += 1
                self._lost(f"no PUBACK for {now - oldest:.1f} s", now)
                return
            self._publish_pending(now)

    def _connect(self, now: float) -> None:
        s = self.settings
        self.client.will_set(self.topics.status, self._status_body("offline"), qos=1, retain=True)  # as of now
        try:
            self.client.reconnect()
        except (OSError, ValueError) as e:
            self._schedule(time.monotonic())
            self._notice_down(f"cannot connect to {s.url}: {e}")
            return
        self.state = "connecting"
        self.attempt_started = self.last_misc = time.monotonic()  # the CONNACK's clock starts after the handshake

    def _schedule(self, now: float) -> None:
        lo, hi = self.settings.reconnect_s
        self.next_attempt = now + self.delay * random.uniform(0.5, 1.5)
        self.delay = min(max(self.delay * 2, lo), hi)

    def _lost(self, reason: str, now: float) -> None:
        """Give the connection up (the next attempt reopens the socket; paho resends what was in flight)."""
        was_up = self.state == "up"
        self.state = "down"
        self.connected = False
        if was_up:  # the first attempt after a loss is immediate; failures back off from there
            self.counters["disconnects"] += 1
            self.next_attempt = now
        else:
            self._schedule(now)
        self._notice_down(reason)

    def _notice_down(self, reason: str) -> None:
        if getattr(self, "_down_reason", None) != reason.split(":")[0]:
            self._down_reason = reason.split(":")[0]
            self.notices.append(("telemetry_down", {"reason": reason[:200]}))

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        now = time.monotonic()
        if reason.is_failure:
            self.counters["refused"] += 1
            self.state = "down"
            self._schedule(now)
            self._notice_down(f"refused by {self.settings.url}: {reason}")
            return
        self.state, self.connected = "up", True
        self.counters["connects"] += 1
        self.delay = self.settings.reconnect_s[0]
        self._down_reason = None
        for mid, (row, _) in self.inflight.items():  # paho resends these: their PUBACK clock starts now
            self.inflight[mid] = (row, now)
        if not flags.session_present:  # the broker kept our subscription otherwise (and would resend retained ones)
            client.subscribe(self.topics.cmd, qos=1)
        self._publish_status("online")
        self.notices.append(("telemetry_up", {"broker": self.settings.url, "session_present": flags.session_present}))

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self.state != "down":
            self._lost(f"disconnected: {reason}", time.monotonic())

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        self.acked.append(mid)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic != self.topics.cmd or not message.payload:
            return  # not ours (a broker passing on another subscription's retained message), or a retained one cleared
        if message.retain:
            self.commands.append(schema.Refusal("a retained command is never run (it would run on every subscribe)"))
            return
        try:
            command = schema.parse_command(message.payload)
        except BadInput as e:
            self.commands.append(schema.Refusal(str(e)))
            return
        if command.id and command.id in self._recent_ids:
            refusal = schema.Refusal(f"command id {command.id!r} was already run (a duplicate delivery)")
            self.commands.append(replace(refusal, name=command.name, id=command.id))
            return
        if command.id:
            self._recent_ids.append(command.id)
        self.commands.append(command)

    def _settle_acks(self) -> None:
        rows = [self.inflight.pop(mid)[0] for mid in self.acked if mid in self.inflight]
        self.acked.clear()
        self.counters["acked"] += len(rows)
        for start in range(0, len(rows), 500):
            self.outbox.remove(rows[start : start + 500])

    def _publish_pending(self, now: float) -> None:
        room = WINDOW - len(self.inflight)
        if room <= 0:
            return
        for row, body in self.outbox.pending(self.cursor, room):
            info = self.client.publish(self.topics.telemetry, body, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
                break
            self.inflight[info.mid] = (row, now)
            self.cursor = self.outbox.in_flight_upto = row
            self.counters["published"] += 1

    def _publish_status(self, state: str) -> mqtt.MQTTMessageInfo:
        return self.client.publish(self.topics.status, self._status_body(state), qos=1, retain=True)

    def _status_body(self, state: str) -> bytes:
        body = {"v": schema.VERSION, "kind": "status", "device": self.settings.device, "boot": self.boot}
        body.update(state=state, wall=round(time.time(), 6), mono=round(time.monotonic(), 6), **self._status)
        return json.dumps(jsonable(body), separators=(",", ":")).encode()

    def _finish(self) -> None:
        """A clean stop: publish what is left for a few seconds, then `offline`, then DISCONNECT."""
        deadline = time.monotonic() + CLOSE_WAIT
        while self.state == "up" and (self.outbox.rows or self.inflight) and time.monotonic() < deadline:
            self._network()
            self._take(0.05)
        if self.state == "up":
            info = self._publish_status("offline")
            while not info.is_published() and self.state == "up" and time.monotonic() < deadline + 1.0:
                self._take(0.05)
            self.client.disconnect()
            self.client.loop_write()
        self.outbox.close()
