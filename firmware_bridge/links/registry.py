"""`open_link(url)`: transports found by URL scheme, built in or registered (also by entry point).

`edge_rl` adds `sim://` through the `firmware_bridge.links` entry-point group, so this package
never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from importlib import import_module
from importlib.metadata import entry_points

from ..protocol import Hello
from .base import LinkError, LinkUrl, Role, Transport, number
from .recording import Recorder, RecordingError
from .session import Link

ENTRY_POINT_GROUP = "firmware_bridge.links"
TransportFactory = Callable[[LinkUrl, Hello, Role], Transport]
_BUILTIN = {
    "serial": "firmware_bridge.links.serial_port",
    "socket": "firmware_bridge.links.serial_port",
    "loop": "firmware_bridge.links.serial_port",
    "rfc2217": "firmware_bridge.links.serial_port",
    "mqtt": "firmware_bridge.links.mqtt",
    "mqtts": "firmware_bridge.links.mqtt",
    "replay": "firmware_bridge.links.replay",
}
_registry: dict[str, TransportFactory] = {}
SESSION_OPTIONS = ("misses", "record")


def register_scheme(scheme: str, factory: TransportFactory) -> None:
    """Make `scheme://...` URLs open transports built by `factory(url, local_hello, role)`."""
    _registry[scheme.lower()] = factory


def _factory(scheme: str) -> TransportFactory:
    if scheme in _registry:
        return _registry[scheme]
    if scheme in _BUILTIN:
        return import_module(_BUILTIN[scheme]).open_transport
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == scheme:
            factory = entry.load()
            register_scheme(scheme, factory)
            return factory
    known = sorted({*_BUILTIN, *_registry, *(e.name for e in entry_points(group=ENTRY_POINT_GROUP))})
    raise LinkError(f"unknown link scheme {scheme!r}:// (known: {', '.join(known)})")


def open_link(url: str, local: Hello, role: Role = "host") -> Link:
    """Open `url` as `role` and start the handshake; `local` is this side's HELLO.

    Session options in the query string apply to every scheme: `misses` (heartbeat periods of
    silence before the link counts as lost, default 3) and `record=FILE.jsonl` (keep a replayable
    log of every message). The heartbeat period is `local.heartbeat_ms`.
    """
    parsed = LinkUrl.parse(url)
    session = {k: v for k, v in parsed.options.items() if k in SESSION_OPTIONS}
    parsed = replace(parsed, options={k: v for k, v in parsed.options.items() if k not in SESSION_OPTIONS})
    misses = number(session, "misses", 3, 1, 1000)
    if misses != int(misses):
        raise LinkError(f"option misses={session['misses']} is not a whole number")
    transport = _factory(parsed.scheme)(parsed, local, role)
    recorder = None
    if "record" in session:
        try:
            recorder = Recorder(session["record"])
        except RecordingError as exc:
            raise LinkError(str(exc)) from None
    return Link(transport, local, role, misses=int(misses), recorder=recorder)
