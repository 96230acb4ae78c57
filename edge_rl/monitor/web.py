"""`--web PORT`: the fleet table and learning curves in a browser, live over server-sent events.

Three routes on a threaded stdlib HTTP server: `/` (one self-contained page, `webpage`, with the
newest rendering inside), `/events?from=RUN.VERSION` (text/event-stream; a reconnecting browser's
Last-Event-ID says the same) and `/fleet.json` (the `--json` summary, taken under the monitor's
lock at most every `INTERVAL_S`, like a Prometheus scrape). The monitor's own thread calls `tick()`
after each batch of messages; while a browser streams, at most every `INTERVAL_S` it renders each
device's row with the terminal table's code (`view.cells`: same columns, same alarms) into
`Frames`, which remembers the version at which each row last changed. Every browser has its own
handler thread that sleeps on `Frames` and sends the rows changed since the version it last sent,
so a slow browser skips versions instead of queueing them, a vanished one times out in its own
thread, and neither the MQTT thread nor the monitor's thread ever waits for a socket.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from edge_rl.errors import BadInput
from edge_rl.monitor.fleet import Device, Fleet
from edge_rl.monitor.grid import safe
from edge_rl.monitor.view import COLUMNS, caption, cells, shares
from edge_rl.monitor.webpage import CSP, page

INTERVAL_S = 0.5  # rows are re-rendered at most this often (the terminal table's refresh)
KEEPALIVE_S = 15.0  # an idle stream gets a comment this often: a browser that left is noticed
SEND_TIMEOUT_S = 10.0  # a browser that stops reading is dropped after this long, in its own thread
STREAM_SNDBUF = 32 << 10  # a stream's kernel send buffer (else autotuned to MBs: a slow browser's lag unbounded)
MAX_STREAMS = 32  # concurrent /events streams; more are told `busy` and retry later
MAX_CONNECTIONS = 64  # concurrent connections (each a thread); more are closed at once
BUSY_RETRY_MS = 10_000  # when a browser told `busy` tries again
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")  # Host names a loopback-bound view answers (DNS rebinding)
SEEN = [name for name, _ in COLUMNS].index("seen")


def percent(shares_: list[float | None]) -> list[int | None]:
    """Sparkline heights 0-100 for the page (integers: a third of the bytes of the values)."""
    return [None if s is None else round(100 * s) for s in shares_]


def row_json(fleet: Fleet, device: Device, now: float) -> tuple[str, str]:
    """One device's row for the page, and its `seen` text apart: the cells' text and style, and the sparklines
    (success rate on 0-1, return on its own range) as heights 0-100, scaled here as in the terminal. `seen`
    changes every second: sent apart, with every message (a few bytes per device), a row goes out again only
    when something else in it changed. Text is `grid.safe` as in the terminal: no bidi overrides in the page."""
    texts = cells(fleet, device, now, curves=False)
    seen, texts[SEEN] = texts[SEEN][0], ("", "")
    success = percent(shares([p.success_rate for p in device.spark], 0.0, 1.0))
    returns = percent(shares([p.return_mean for p in device.spark]))
    row = {"c": [safe(t) for t, _ in texts], "s": [s for _, s in texts], "succ": success, "ret": returns}
    return json.dumps(row, separators=(",", ":")), seen


def host_name(host: str) -> str:
    """A Host header without its port: `[::1]:80` -> `[::1]`, `localhost:80` -> `localhost`."""
    host = host.strip().lower()
    return host[: host.find("]") + 1] if host.startswith("[") else host.partition(":")[0]


def is_loopback(bind: str) -> bool:
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return bind == "localhost"


class Frames:
    """The newest rendering: each row with the version at which it last changed, and the header fields."""

    def __init__(self) -> None:
        self.run = secrets.token_hex(4)  # this process's renderings: a page of an earlier monitor starts afresh
        self.cond = threading.Condition()
        self.version = 0
        self.rows: dict[str, tuple[int, str]] = {}  # device -> (version it last changed, row JSON)
        self.head = "{}"
        self.closed = False
        self._built: dict[int, bytes] = {}  # from-version -> message, for the current version

    def publish(self, head: dict[str, Any], rows: dict[str, str]) -> None:
        with self.cond:
            self.version += 1
            for name, row in rows.items():
                if self.rows.get(name, (0, None))[1] != row:
                    self.rows[name] = (self.version, row)
            self.head = json.dumps(head, separators=(",", ":"))
            self._built.clear()
            self.cond.notify_all()

    def since(self, version: int, timeout: float) -> tuple[int, bytes | None]:
        """Wait for a version newer than `version`; (newest version, the rows changed since as one message),
        (version, None) on a timeout, or (-1, None) once closed."""
        with self.cond:
            self.cond.wait_for(lambda: self.closed or self.version > version, timeout)
            if self.closed:
                return -1, None
            if self.version <= version:
                return version, None
            message = self._built.get(version)
            if message is None:
                changed = ",".join(f"{json.dumps(n)}:{row}" for n, (v, row) in self.rows.items() if v > version)
                ref = f'"{self.run}.{self.version}"'
                message = f'{{"id":{ref},"version":{self.version},"head":{self.head},"rows":{{{changed}}}}}'.encode()
                self._built[version] = message
            return self.version, message

    def start(self, ref: str) -> int:
        """The version a stream resumes from: `ref` is RUN.VERSION a page or a reconnecting browser sends; 0 for
        anything else (a fresh page, an earlier monitor's page, garbage: `²` is a digit to isdigit, not to int)."""
        run, _, version = ref.partition(".")
        if run != self.run or not (version.isascii() and version.isdigit() and len(version) <= 12):
            return 0
        return int(version) if int(version) <= self.version else 0

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class Server(ThreadingHTTPServer):
    """At most MAX_CONNECTIONS handler threads (one more connection is closed at once: idle or trickling
    clients cannot pile up threads), and a failed request is one stderr line, never a traceback over the
    operator's live table; a client that left (reset, broken pipe, timeout) is not worth a line at all."""

    daemon_threads = True
    request_queue_size = MAX_CONNECTIONS  # listen backlog (default 5: a burst of connections waits 1 s for a SYN retry)

    def __init__(self, address: tuple[str, int], view: WebView) -> None:
        super().__init__(address, Handler)
        self.view = view
        self.connections = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: its slot is free again
            self.connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError | TimeoutError):
            print(f"edge-rl monitor: web: {error!r}", file=sys.stderr)


class WebView:
    """The HTTP server (its own threads) and the renderer the monitor's thread ticks."""

    def __init__(
        self,
        fleet: Fleet,
        lock: threading.Lock,
        port: int,
        bind: str,
        status: Callable[[], str] = lambda: "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fleet, self.lock, self.status, self.clock = fleet, lock, status, clock
        self.frames = Frames()
        self.loopback = is_loopback(bind)
        self.streams = 0  # open /events streams, under _streams_lock
        self._streams_lock = threading.Lock()
        self._rendering = threading.Lock()  # the monitor's tick or a page request, one at a time
        self._rendered = -INTERVAL_S
        self._summary_lock = threading.Lock()
        self._summary = (-INTERVAL_S, b"")  # (monotonic time, /fleet.json body)
        try:
            self.server = Server((bind, port), self)
        except (OSError, OverflowError) as e:
            raise BadInput(f"--web {bind}:{port}: cannot listen: {getattr(e, 'strerror', None) or e}") from None
        self.port: int = self.server.server_address[1]
        self.url = f"http://{bind}:{self.port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, name="edge-rl-web", daemon=True)
        self.thread.start()

    def tick(self) -> None:
        """Render the rows for the open streams (from the monitor's thread after each batch): nothing while no
        browser streams (200 rows take ~30 ms under the monitor's lock), nothing while a page request renders."""
        if self.streams and self._rendering.acquire(blocking=False):
            try:
                self._render()
            finally:
                self._rendering.release()

    def fresh(self) -> bytes | None:
        """The newest rendering for a page request, rendered now if older than INTERVAL_S (no stream may have
        been open to keep it fresh)."""
        with self._rendering:
            self._render()
        return self.frames.since(0, 0)[1]

    def _render(self) -> None:
        if time.monotonic() - self._rendered < INTERVAL_S:
            return
        self._rendered = time.monotonic()
        now = self.clock()
        with self.lock:
            rendered = {name: row_json(self.fleet, d, now) for name, d in self.fleet.devices.items()}
            text = caption(self.fleet)
        status = self.status()
        head = {
            "title": f"edge-rl fleet · {status}" if status else "edge-rl fleet",
            "caption": text,
            "now": round(now, 3),
            "columns": [name for name, _ in COLUMNS],
            "justify": [justify for _, justify in COLUMNS],
            "seen": {name: seen for name, (_, seen) in rendered.items()},
        }
        self.frames.publish(head, {name: row for name, (row, _) in rendered.items()})

    def summary(self) -> bytes:
        """/fleet.json: one summary per INTERVAL_S however often it is asked for (the monitor's lock is shared)."""
        with self._summary_lock:
            at, body = self._summary
            if time.monotonic() - at >= INTERVAL_S:
                with self.lock:
                    summary = self.fleet.summary(self.clock())
                body = json.dumps(summary, separators=(",", ":")).encode()
                self._summary = (time.monotonic(), body)
            return body

    def join_stream(self) -> bool:
        """Take a stream slot, unless all MAX_STREAMS are taken."""
        with self._streams_lock:
            if self.streams >= MAX_STREAMS:
                return False
            self.streams += 1
            return True

    def leave_stream(self) -> None:
        with self._streams_lock:
            self.streams -= 1

    def close(self) -> None:
        self.frames.close()
        self.server.shutdown()
        self.server.server_close()


class Handler(BaseHTTPRequestHandler):
    """One connection's requests, in its own thread; the view is the server's."""

    server_version = "edge-rl-monitor"
    server: Server

    def setup(self) -> None:
        self.timeout = SEND_TIMEOUT_S  # the socket's: a browser that stops reading fails the write, not the monitor
        super().setup()

    def do_GET(self) -> None:
        try:
            self._route()
        except OSError:  # the browser left (reset, broken pipe) or stopped reading (timeout)
            self.close_connection = True

    def _route(self) -> None:
        view, (path, _, query) = self.server.view, self.path.partition("?")
        if view.loopback and host_name(self.headers.get("Host", "")) not in LOOPBACK_HOSTS:
            # a hostile page whose name was rebound to 127.0.0.1 would otherwise read the fleet
            self._send(421, "text/plain; charset=utf-8", b"misdirected: use http://127.0.0.1:PORT/\n")
        elif path == "/":
            self._send(200, "text/html; charset=utf-8", page(view.fresh()))
        elif path == "/fleet.json":
            self._send(200, "application/json", view.summary())
        elif path == "/events":  # a reconnecting browser says what it has in Last-Event-ID
            ref = self.headers.get("Last-Event-ID") or parse_qs(query).get("from", [""])[0]
            self._events(view.frames.start(ref))
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try / , /events or /fleet.json\n")

    def _send(self, code: int, kind: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(body)

    def _stream_head(self) -> None:
        """200 text/event-stream, unbuffered by proxies (nginx honours X-Accel-Buffering)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()

    def _events(self, version: int) -> None:
        view = self.server.view
        if not view.join_stream():  # a 503 would close EventSource for good: 200, `busy`, and a later retry
            self.close_connection = True
            self._stream_head()
            self.wfile.write(f"retry: {BUSY_RETRY_MS}\nevent: busy\ndata: {MAX_STREAMS}\n\n".encode())
            return
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
            self._stream_head()
            self.wfile.write(b"retry: 2000\n\n")  # the browser reconnects after 2 s when the monitor restarts
            while True:
                version, message = view.frames.since(version, KEEPALIVE_S)
                if version < 0:
                    return
                if message is None:
                    self.wfile.write(b": keepalive\n\n")
                else:
                    ref = f"{view.frames.run}.{version}".encode()
                    self.wfile.write(b"id: " + ref + b"\ndata: " + message + b"\n\n")
        finally:
            self.close_connection = True
            view.leave_stream()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line per request on the monitor's terminal
