"""`--web PORT`: the fleet table and learning curves in a browser, live over server-sent events.

Three routes on a threaded stdlib HTTP server: `/` (one self-contained page, `webpage`, with the
newest rendering inside), `/events?from=RUN.VERSION` (text/event-stream; a reconnecting browser's
Last-Event-ID says the same) and `/fleet.json` (the `--json` summary, read under the monitor's
lock like a Prometheus scrape). The monitor's own thread calls `tick()` after each batch of
messages; at most every `INTERVAL_S` it renders each device's row with the terminal table's code
(`view.cells`: same columns, same alarms) into `Frames`, which remembers the version at which each
row last changed. Every browser has its own handler thread that sleeps on `Frames` and sends the
rows changed since the version it last sent, so a slow browser skips versions instead of queueing
them, a vanished one times out in its own thread, and neither the MQTT thread nor the monitor's
thread ever waits for a socket.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from edge_rl.errors import BadInput
from edge_rl.monitor.fleet import Device, Fleet
from edge_rl.monitor.view import COLUMNS, caption, cells, shares
from edge_rl.monitor.webpage import CSP, page

INTERVAL_S = 0.5  # rows are re-rendered at most this often (the terminal table's refresh)
KEEPALIVE_S = 15.0  # an idle stream gets a comment this often: a browser that left is noticed
SEND_TIMEOUT_S = 10.0  # a browser that stops reading is dropped after this long, in its own thread
MAX_STREAMS = 32  # concurrent /events streams; more get 503
SEEN = [name for name, _ in COLUMNS].index("seen")


def percent(shares_: list[float | None]) -> list[int | None]:
    """Sparkline heights 0-100 for the page (integers: a third of the bytes of the values)."""
    return [None if s is None else round(100 * s) for s in shares_]


def row_json(fleet: Fleet, device: Device, now: float) -> tuple[str, str]:
    """One device's row for the page, and its `seen` text apart: the cells' text and style, and the sparklines
    (success rate on 0-1, return on its own range) as heights 0-100, scaled here as in the terminal. `seen`
    changes every second: sent apart, with every message (a few bytes per device), a row goes out again only
    when something else in it changed."""
    texts = cells(fleet, device, now, curves=False)
    seen, texts[SEEN] = texts[SEEN][0], ("", "")
    success = percent(shares([p.success_rate for p in device.spark], 0.0, 1.0))
    returns = percent(shares([p.return_mean for p in device.spark]))
    row = {"c": [t for t, _ in texts], "s": [s for _, s in texts], "succ": success, "ret": returns}
    return json.dumps(row, separators=(",", ":")), seen


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
        anything else (a fresh page, an earlier monitor's page, garbage)."""
        run, _, version = ref.partition(".")
        if run != self.run or not version.isdigit():
            return 0
        return int(version) if int(version) <= self.version else 0

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


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
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)
        self._rendered = -INTERVAL_S
        try:
            self.server = ThreadingHTTPServer((bind, port), _handler(self))
        except (OSError, OverflowError) as e:
            raise BadInput(f"--web {bind}:{port}: cannot listen: {getattr(e, 'strerror', None) or e}") from None
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self.url = f"http://{bind}:{self.port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, name="edge-rl-web", daemon=True)
        self.thread.start()

    def tick(self) -> None:
        """Render the rows (called from the monitor's thread after each batch; does nothing more often than
        INTERVAL_S)."""
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
        with self.lock:
            summary = self.fleet.summary(self.clock())
        return json.dumps(summary, separators=(",", ":")).encode()

    def close(self) -> None:
        self.frames.close()
        self.server.shutdown()
        self.server.server_close()


def _handler(view: WebView) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = SEND_TIMEOUT_S  # the socket's: a browser that stops reading fails the write, not the monitor
        server_version = "edge-rl-monitor"

        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            if path == "/":
                self._send(200, "text/html; charset=utf-8", page(view.frames.since(0, 0)[1]))
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

        def _events(self, version: int) -> None:
            if not view.streams.acquire(blocking=False):
                self._send(503, "text/plain; charset=utf-8", f"at most {MAX_STREAMS} live views\n".encode())
                return
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
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
            except OSError:  # the browser left (reset, broken pipe) or stopped reading (timeout)
                return
            finally:
                view.streams.release()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no line per request on the monitor's terminal

    return Handler
