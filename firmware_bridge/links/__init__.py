"""Links: one URL opens a protocol session over serial, MQTT, a replayed recording or a registered scheme."""

from .base import EndOfStream, IncompatiblePeer, LinkDown, LinkError, LinkUrl, Transport
from .registry import open_link, register_scheme
from .session import Link, State

__all__ = [
    "EndOfStream",
    "IncompatiblePeer",
    "Link",
    "LinkDown",
    "LinkError",
    "LinkUrl",
    "State",
    "Transport",
    "open_link",
    "register_scheme",
]
