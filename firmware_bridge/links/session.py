"""The protocol session a control loop talks to: `Link`, on top of one Transport.

It owns everything a control loop must not get wrong: the versioned handshake, heartbeats both
ways (sent only from the working loop), link-loss detection on monotonic clocks, reconnection
with backoff and jitter, and the rule that no ACTION is sent before a compatible peer said HELLO.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

import numpy as np

from ..protocol import Action, Error, ErrorCode, ForeignHello, Heartbeat, Hello, Message, Obs, PeerState
from .base import IncompatiblePeer, LinkDown, LinkError, Role, Transport
from .recording import Recorder


class State(str, Enum):
    """Where the session is; only READY lets an ACTION through."""

    CONNECTING = "connecting"  # transport open, HELLO sent, no compatible HELLO yet
    READY = "ready"
    LOST = "lost"  # peer quiet for `misses` heartbeat periods, or the transport dropped
    INCOMPATIBLE = "incompatible"
    CLOSED = "closed"


class LinkEvent(str):
    """A state change, described (it is that text), with the state it led to and when (monotonic seconds)."""

    state: State
    t: float

    def __new__(cls, text: str, state: State, t: float) -> LinkEvent:
        event = super().__new__(cls, text)
        event.state, event.t = state, t
        return event


@dataclass
class SessionCounters:
    """What the session did about the peer's health."""

    losses: int = 0
    reconnects: int = 0
    handshakes: int = 0
    heartbeats_sent: int = 0
    heartbeats_received: int = 0
    refused_sends: int = 0  # ACTIONs the session refused because the peer was not ready
    before_handshake: int = 0  # application messages dropped before a compatible HELLO
    wrong_shape: int = 0  # OBS whose size differs from the shape the peer announced
    rearms: int = 0  # HELLOs sent because a ready device said it holds its safe action


class Link:
    """A protocol session over one transport: call `recv` from the working loop, `send` to answer.

    Heartbeats are sent only from `recv`/`poll`, i.e. by the working loop itself: a stalled loop
    stops them, which is exactly what the peer must notice.
    """

    def __init__(
        self,
        transport: Transport,
        local: Hello,
        role: Role = "host",
        *,
        misses: int = 3,
        recorder: Recorder | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if misses < 1:
            raise LinkError(f"misses must be >= 1, got {misses}")
        self.transport = transport
        self.local = local
        self.role = role
        self.misses = misses
        self.period = max(local.heartbeat_ms, 1) / 1000.0
        self.peer: Hello | None = None
        self._silence_limit = misses * self.period  # seconds without a frame before the peer counts as lost
        self.state = State.CLOSED
        self.session = SessionCounters()
        self.events: deque[LinkEvent] = deque(maxlen=256)  # state changes for telemetry, newest last
        self._recorder = recorder
        self._clock = clock
        self._pending: deque[Message] = deque()
        self._last_rx = self._next_heartbeat = self._next_attempt = self._next_rearm = 0.0
        self._attempt = 0
        self._transport_open = False
        self._closed = False
        self._mismatch_line = ""  # set once the peer is incompatible: the state is final
        self._obs_size = 0  # elements in the peer's announced observation (0: not announced)
        self._connect()

    # -- the working loop's API -------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def recv(self, timeout: float) -> Message | None:
        """The next application message within `timeout` seconds, or None; runs the session meanwhile.

        Reads the transport at least once, even with `timeout` 0. Raises IncompatiblePeer, every
        time, once the peer turned out incompatible: that state is final.
        """
        if self._mismatch_line:
            raise IncompatiblePeer(self._mismatch_line)
        if self._closed:
            return None
        self.poll()
        if self._pending:
            return self._pending.popleft()
        deadline = self._clock() + max(timeout, 0.0)
        while True:
            now = self._clock()
            next_event = self._next_heartbeat if self._transport_open else self._next_attempt
            wait = max(min(deadline, next_event) - now, 0.0)
            if self._transport_open:
                try:
                    for msg in self.transport.receive(wait):
                        self._handle(msg)
                except LinkDown as exc:
                    self._drop_transport(str(exc))
            else:
                time.sleep(wait)
            if self._pending:
                return self._pending.popleft()
            self.poll()
            if self._clock() >= deadline:
                return None

    def send(self, msg: Message) -> int | None:
        """Send one message and return the sequence number it went out with, or None if it did not.

        An ACTION goes out only to a ready, compatible peer; the device answers an OBS by its number.
        """
        if isinstance(msg, Action):
            self._check_silence(self._clock())  # a stalled loop must not act on a peer that went quiet meanwhile
            if not self.ready:
                self.session.refused_sends += 1
                return None
        if not self._transport_open or self._closed:
            self.session.refused_sends += 1
            return None
        return self._write(msg)

    def poll(self) -> None:
        """Heartbeats, HELLO retries, loss detection and reconnection, without waiting."""
        if self._closed:
            return
        now = self._clock()
        if not self._transport_open:
            if now >= self._next_attempt:
                self._connect()
            return
        self._check_silence(now)
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.period
            if self.state is State.READY:
                self.session.heartbeats_sent += 1
                self._write(Heartbeat(PeerState.READY, _micros(now)))
            elif self.state is not State.INCOMPATIBLE:
                self._write(replace(self.local, reply_requested=True))  # ask (again) for the peer's HELLO
                self._write(Heartbeat(PeerState.SAFE, _micros(now)))

    def _check_silence(self, now: float) -> None:
        if self.state in (State.READY, State.CONNECTING) and self.peer is not None:
            if now - self._last_rx > self._silence_limit:
                self._lose(f"no frame from {self.peer.device_id!r} for {now - self._last_rx:.2f} s")

    def counters(self) -> dict[str, int]:
        """Session and transport counters in one flat mapping (for telemetry)."""
        return {**vars(self.session), **self.transport.counters()}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.transport.close()
            self._transport_open = False
            self._set_state(State.CLOSED, "closed")
            if self._recorder:
                self._recorder.close()

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the session ----------------------------------------------------------------------------
    def _handle(self, msg: Message | ForeignHello) -> None:
        self._last_rx = self._clock()
        self._attempt = 0  # frames flow: the next outage starts its backoff from the shortest delay
        if self._recorder:
            self._recorder.write("rx", msg)
        if isinstance(msg, ForeignHello):
            if msg.reply_requested:  # let the other version name ours in its own error line
                self._write(replace(self.local, reply_requested=False))
            self._incompatible(msg.version, "?")
        elif isinstance(msg, Hello):
            self._hello(msg)
        elif isinstance(msg, Heartbeat):
            self.session.heartbeats_received += 1
            if msg.state is PeerState.OFFLINE and self.state is State.READY:
                self._lose("the peer's will says it went offline")
            elif msg.state is PeerState.SAFE and self.state is State.READY and self.role == "host":
                self._rearm()
        elif isinstance(msg, Obs) and self._obs_size and msg.observation.size != self._obs_size:
            self.session.wrong_shape += 1  # not what the handshake promised: never handed to a policy
        elif self.ready or isinstance(msg, Error):
            self._pending.append(msg)
        else:
            self.session.before_handshake += 1

    def _rearm(self) -> None:
        """The device holds its safe action (its deadman tripped while this host was stalled, say) and
        waits for a fresh HELLO before it accepts a setpoint again: send one, at most once a period."""
        now = self._clock()
        if now >= self._next_rearm:
            self._next_rearm = now + self.period
            self.session.rearms += 1
            self.events.append(LinkEvent("the device holds its safe action: HELLO again", self.state, now))
            self._write(replace(self.local, reply_requested=False))

    def _hello(self, hello: Hello) -> None:
        if self.state is State.INCOMPATIBLE:
            return  # final: a later, compatible-looking HELLO does not undo a mismatch
        if hello.reply_requested:
            self._write(replace(self.local, reply_requested=False))
        mismatch = self._mismatch(hello)
        if mismatch:
            self._incompatible(hello.version, mismatch, hello.device_id)
            return
        self.peer = hello
        self._obs_size = int(np.prod(hello.obs_shape)) if hello.obs_shape else 0
        self._silence_limit = self.misses * max(hello.heartbeat_ms, self.local.heartbeat_ms, 1) / 1000.0
        if self.state is not State.READY:
            self.session.handshakes += 1
            self._set_state(State.READY, f"peer {hello.device_id!r} speaks {hello.version}")

    def _mismatch(self, hello: Hello) -> str:
        if (hello.major, hello.schema_hash) != (self.local.major, self.local.schema_hash):
            return "protocol"
        mine, theirs = self.local, hello
        if mine.obs_shape and theirs.obs_shape and mine.obs_shape != theirs.obs_shape:
            return f"observation shape {theirs.obs_shape} where {mine.obs_shape} is expected"
        if mine.n_actions and theirs.n_actions and mine.n_actions != theirs.n_actions:
            return f"{theirs.n_actions} actions where {mine.n_actions} are expected"
        return ""

    def _incompatible(self, version: str, what: str, peer_id: str = "") -> None:
        if self._mismatch_line:
            raise IncompatiblePeer(self._mismatch_line)
        self._set_state(State.INCOMPATIBLE, "incompatible peer")
        other = "device" if self.role == "host" else "host"
        name = f" {peer_id!r}" if peer_id else ""
        if what in ("protocol", "?"):
            line = f"protocol mismatch: this {self.role} speaks {self.local.version}, {other}{name} speaks {version}"
        else:
            line = f"{other}{name} does not match: {what}"
        self._mismatch_line = line
        self._write(Error(ErrorCode.INCOMPATIBLE, line[:64]))  # once: the state never changes again
        raise IncompatiblePeer(line)

    def _lose(self, reason: str) -> None:
        if self.state is State.INCOMPATIBLE:
            return
        self.session.losses += 1
        self._set_state(State.LOST, f"link lost: {reason}")

    def _connect(self) -> None:
        try:
            self.transport.open()
        except LinkDown as exc:
            self._schedule_retry(str(exc))
            return
        if self.state is not State.CLOSED or self._attempt:
            self.session.reconnects += 1
        self._transport_open = True
        now = self._clock()
        self._last_rx = now
        self._next_heartbeat = now  # HELLO at once
        if self.state not in (State.LOST, State.INCOMPATIBLE):
            self._set_state(State.CONNECTING, f"opened {self.transport.describe}")

    def _drop_transport(self, reason: str) -> None:
        self.transport.close()
        self._transport_open = False
        if self.state is not State.LOST:
            self._lose(reason)
        self._schedule_retry(reason)

    def _schedule_retry(self, reason: str) -> None:
        """Exponential backoff from 50 ms to 2 s, with +-50 % jitter so a fleet does not reconnect in step."""
        delay = min(0.05 * 2**self._attempt, 2.0) * random.uniform(0.5, 1.5)
        self._attempt += 1
        self._next_attempt = self._clock() + delay
        if self.state is State.CLOSED:
            self._set_state(State.LOST, f"cannot open {self.transport.describe}: {reason}")

    def _write(self, msg: Message) -> int | None:
        try:
            seq = self.transport.send(msg)
        except LinkDown as exc:
            self._drop_transport(str(exc))
            return None
        except ValueError as exc:  # a message that cannot be framed (too large, a field out of range)
            raise LinkError(f"cannot send {type(msg).__name__}: {exc}") from None
        if self._recorder:
            self._recorder.write("tx", replace(msg, seq=seq))
        return seq

    def _set_state(self, state: State, event: str) -> None:
        self.state = state
        self.events.append(LinkEvent(event, state, self._clock()))


def _micros(now: float) -> int:
    return int(now * 1e6) & 0xFFFFFFFF
