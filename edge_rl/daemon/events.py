"""The daemon's event log: one JSON line per state change, written by a thread so disk never delays an action.

Every event carries the boot id, a sequence number, monotonic and wall-clock times; the
telemetry publisher reads the same records. The loop only appends to a queue; a full queue (the
disk stalled for thousands of events) drops the newest and counts it, it never blocks.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

MAX_QUEUED = 10_000
MAX_LOG_BYTES = 16 << 20  # then events.jsonl is renamed to events.jsonl.1 (one old file kept)


class EventLog:
    """`emit(kind, **fields)` from the loop; lines go to `path` (and to `echo`, e.g. stderr for journald)."""

    def __init__(self, path: Path | None, echo: TextIO | None = sys.stderr) -> None:
        self.path, self.echo = path, echo
        self.boot_id = uuid.uuid4().hex
        self.seq = 0
        self.dropped = 0
        self.failed = 0  # lines the disk refused (logged once to `echo`)
        self.recent: deque[dict[str, Any]] = deque(maxlen=100)  # the last events, for summaries and tests
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # e.g. telemetry; each must not block
        self.listener_errors = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(MAX_QUEUED)
        self._thread = threading.Thread(target=self._write_all, name="edge-rl-events", daemon=True)
        self._thread.start()

    def emit(self, kind: str, **fields: Any) -> None:
        self.seq += 1
        record = {"seq": self.seq, "boot": self.boot_id, "mono": round(time.monotonic(), 6), "wall": time.time()}
        record.update(kind=kind, **fields)
        self.recent.append(record)
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:  # a listener's failure is its own: the loop and the log go on
                self.listener_errors += 1

    def close(self) -> None:
        """Write what is queued, then stop the writer (bounded: a stalled disk cannot hold up exit for long)."""
        self._queue.put(None)
        self._thread.join(timeout=5.0)

    def _write_all(self) -> None:
        out = self._open()
        while (record := self._queue.get()) is not None:
            line = json.dumps(record, default=str, allow_nan=True)
            if self.echo is not None:
                print(f"edge-rl run: {record['kind']} {_brief(record)}", file=self.echo, flush=True)
            if out is None:
                continue
            try:
                out.write(line + "\n")
                out.flush()
                if out.tell() > MAX_LOG_BYTES:
                    out.close()
                    os.replace(self.path, f"{self.path}.1")
                    out = self._open()
            except OSError as e:
                out = self._fail(e)
        if out is not None:
            out.close()

    def _open(self) -> TextIO | None:
        if self.path is None:
            return None
        try:
            return open(self.path, "a", encoding="utf-8")  # the writer thread owns and closes it
        except OSError as e:
            return self._fail(e)

    def _fail(self, error: OSError) -> None:
        self.failed += 1
        if self.failed == 1 and self.echo is not None:
            print(f"edge-rl run: cannot write {self.path} ({error.strerror or error}); events go on", file=self.echo)
        return None


def _brief(record: dict[str, Any]) -> str:
    fields = {k: v for k, v in record.items() if k not in ("seq", "boot", "mono", "wall", "kind")}
    return " ".join(f"{k}={v}" for k, v in fields.items())
