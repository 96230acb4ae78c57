"""Wire protocol and links (serial, MQTT, replay; `sim://` comes from edge_rl) between the daemon and the hardware.

This package never imports `edge_rl`: the firmware side of the protocol must stand alone.
`open_link(url, hello)` is the entry point; `protocol` holds the frames and messages.
"""

from .links import IncompatiblePeer, Link, LinkError, open_link, register_scheme

__all__ = ["IncompatiblePeer", "Link", "LinkError", "open_link", "register_scheme"]
