"""What every transport builds on: the Transport interface, link URLs and the link errors.

A link is a session (session.py) on top of a Transport. The transport moves messages (framing,
topics, ports); the session owns what a control loop must not get wrong. Transports are found by
URL scheme (registry.py), pyserial's `serial_for_url` being the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from ..protocol import ForeignHello, Message

Role = Literal["host", "device"]


class LinkError(Exception):
    """A link problem worth one line to a person (bad URL, refused option, incompatible peer)."""


class LinkDown(LinkError):
    """The transport lost its connection; the session reconnects."""


class EndOfStream(LinkError):
    """A finite source (a replayed session) has nothing more to give."""


class IncompatiblePeer(LinkError):
    """The peer speaks another protocol version or schema, or describes another device: never actuate."""


@dataclass(frozen=True)
class LinkUrl:
    """A parsed link URL: scheme, the transport's target and its query options."""

    url: str
    scheme: str
    netloc: str
    path: str
    options: dict[str, str]

    @classmethod
    def parse(cls, url: str) -> LinkUrl:
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise LinkError(f"link URL {url!r} does not parse: {exc}") from None
        if not parts.scheme:
            raise LinkError(f"link URL {url!r} has no scheme (e.g. serial:///dev/ttyUSB0, mqtt://host/device)")
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        return cls(url, parts.scheme.lower(), parts.netloc, parts.path, options)

    def take(self, known: Iterable[str]) -> dict[str, str]:
        """The options of `known` names; anything else is a typo worth refusing."""
        known = set(known)
        unknown = sorted(set(self.options) - known)
        if unknown:
            expected = ", ".join(sorted(known)) or "none"
            raise LinkError(f"unknown option {unknown[0]!r} for {self.scheme}:// links (expected: {expected})")
        return dict(self.options)


def number(options: dict[str, str], name: str, default: float, low: float, high: float) -> float:
    """A numeric URL option within [low, high], or one clear LinkError."""
    raw = options.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise LinkError(f"option {name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise LinkError(f"option {name}={raw} out of range [{low:g}, {high:g}]")
    return value


class Transport(ABC):
    """Moves whole messages to and from one peer; knows nothing of sessions."""

    describe: str = "transport"

    @abstractmethod
    def open(self) -> None:
        """Connect; raise LinkDown when the peer or port is not reachable now."""

    @abstractmethod
    def send(self, msg: Message) -> int:
        """Frame and write one message; return the sequence number it got; raise LinkDown on a lost connection.

        The transport numbers frames because it knows its ordered streams: one byte stream for a
        serial port, one per topic for MQTT (which orders messages only within a topic).
        """

    @abstractmethod
    def receive(self, timeout: float) -> list[Message | ForeignHello]:
        """Messages that arrive within `timeout` seconds (maybe none); raise LinkDown or EndOfStream."""

    @abstractmethod
    def close(self) -> None:
        """Release the port or connection; safe to call twice."""

    def counters(self) -> dict[str, int]:
        """Framing and delivery counters (decoder drops, queue overflows, write timeouts)."""
        return {}
