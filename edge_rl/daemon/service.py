"""Being a service: systemd's notify protocol and the signals an operator sends.

`Notifier` speaks sd_notify by hand (a datagram to `$NOTIFY_SOCKET`, a path or an abstract
`@name`): READY=1 once the bundle is verified and the link is up, WATCHDOG=1 from the control
loop itself after an on-time iteration, at most every half `WATCHDOG_USEC` (a stalled loop stops
the pings, so systemd restarts it: never a timer thread), STOPPING=1 on the way out. Without
`$NOTIFY_SOCKET` it does nothing. Sending never blocks the loop and a failure is counted, not raised.

`Signals` turns SIGTERM/SIGINT into a stop request and SIGHUP into a reload request, both
handled by the loop between steps.
"""

from __future__ import annotations

import os
import signal
import socket


class Notifier:
    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.socket: socket.socket | None = None
        if self.address:
            self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.socket.setblocking(False)
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.ping_every = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else 0.0
        self.next_ping = 0.0
        self.failures = 0
        self.pings = 0

    def notify(self, state: str) -> None:
        if self.socket is None:
            return
        try:
            self.socket.sendto(state.encode(), self.address)
        except OSError:
            self.failures += 1

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def alive(self, now: float) -> None:
        """From the control loop after an on-time step: a watchdog ping if one is due."""
        if self.ping_every and now >= self.next_ping:
            self.next_ping = now + self.ping_every
            self.pings += 1
            self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None


class Signals:
    """Stop and reload requests, set by signal handlers and taken by the loop."""

    def __init__(self) -> None:
        self.stop: int | None = None
        self.reload = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._reload)

    def _stop(self, signum: int, frame: object) -> None:
        self.stop = signum

    def _reload(self, signum: int, frame: object) -> None:
        self.reload = True
