"""A loopback TCP proxy that passes traffic, black-holes it (no RST, nothing delivered) or refuses it, on cue.

The half-open network of S8: a client whose packets vanish sees no error at all, only silence,
which is what a NAT timeout or a dead access point does. REFUSE closes every new connection at
once (a broker that is not there yet, while the test prepares its side). One thread accepts, two threads per
connection pump bytes; in black-hole mode they keep reading (so the sender's buffers never fill
and nothing signals it) and drop what they read.
"""

from __future__ import annotations

import socket
import threading

PASS, BLACKHOLE, REFUSE = "pass", "blackhole", "refuse"


class ChaosProxy:
    """127.0.0.1:`port` -> 127.0.0.1:`upstream`; set `mode` to PASS, BLACKHOLE or REFUSE at any time."""

    def __init__(self, upstream: int, mode: str = PASS) -> None:
        self.upstream = upstream
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="chaos-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.mode == REFUSE:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
            except OSError:
                client.close()  # upstream down: the client sees the connection close (as if the broker were gone)
                continue
            self.connections += 1
            self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self.mode == PASS:
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        for s in self._sockets:
            s.close()
