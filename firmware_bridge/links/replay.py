"""`replay://FILE.jsonl`: plays back what a link received in a recorded session (see recording.py).

Messages come back in order, optionally at the recorded pace (`?speed=1`; default 0 = as fast as
asked), then EndOfStream. Lines that do not parse are counted and skipped, never raised.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from ..protocol import ForeignHello, Hello, Message
from .base import EndOfStream, LinkError, LinkUrl, Role, Transport, number
from .recording import from_record


class ReplayTransport(Transport):
    """Gives back the received ("rx") messages of a recording; what is sent to it is counted only."""

    def __init__(self, path: Path, speed: float) -> None:
        self.path, self.speed = path, speed
        self.describe = f"replay of {path}"
        self.sent = self.bad_lines = 0
        self._records: list[tuple[float, Message]] = []
        self._index = 0
        self._start = 0.0

    def open(self) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:  # a recording does not appear later: no point retrying
            raise LinkError(f"cannot replay {self.path}: {exc.strerror}") from None
        self._records = []
        for line in lines:
            try:
                record = json.loads(line)
                if record.get("dir") == "rx":
                    self._records.append((float(record["t"]), from_record(record)))
            except (ValueError, TypeError, KeyError, AttributeError, struct.error):
                self.bad_lines += 1
        self._index = 0
        self._start = time.monotonic()

    def send(self, msg: Message) -> int:
        self.sent += 1
        return (self.sent - 1) & 0xFFFF

    def receive(self, timeout: float) -> list[Message | ForeignHello]:
        if self._index >= len(self._records):
            raise EndOfStream(f"{self.path}: end of the recorded session")
        t, msg = self._records[self._index]
        if self.speed > 0:
            due = self._start + t / self.speed - time.monotonic()
            if due > timeout:
                time.sleep(max(timeout, 0.0))
                return []
            time.sleep(max(due, 0.0))
        self._index += 1
        return [msg]

    def close(self) -> None:
        self._index = len(self._records)

    def counters(self) -> dict[str, int]:
        return {"replayed": self._index, "sent": self.sent, "bad_lines": self.bad_lines}


def open_transport(url: LinkUrl, local: Hello, role: Role) -> ReplayTransport:
    """`replay://FILE.jsonl?speed=S` (relative paths as `replay://run.jsonl`, absolute as `replay:///tmp/run.jsonl`)."""
    options = url.take(("speed",))
    where = url.netloc + url.path
    path = Path(where)
    if not where or path.is_dir():
        raise LinkError(f"{url.url!r} names no recording (e.g. replay://run.jsonl)")
    return ReplayTransport(path, number(options, "speed", 0.0, 0.0, 1000.0))
