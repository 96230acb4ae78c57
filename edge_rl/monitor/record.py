"""`--record` and `--replay`: a session as JSON lines, one per received message, replayed into a Fleet.

A line is `{"at": receive time, "topic": ..., "payload": the parsed message}`, or for a message
that failed validation `{"at", "topic", "error", "size", "raw": its first bytes}`: replaying feeds
the same fleet code the same messages in the same order, so duplicates, gaps, bad counts and alarms
come out as they were live. Topics outside the subscription are not recorded. A line that does not
parse (the tail of a file whose writer was killed) is skipped and counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edge_rl.errors import BadInput
from edge_rl.monitor.fleet import Fleet, Received

RAW_KEPT = 512  # bytes of a bad message kept in the record, to see what it was


class Recorder:
    """Appends each received message as one JSON line; flushed by the caller after each batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file: IO[str] = path.open("a", encoding="utf-8")
        except OSError as e:
            raise BadInput(f"--record {path}: cannot open for appending: {e.strerror or e}") from None
        self.lines = 0

    def write(self, topic: str, payload: bytes, at: float, received: Received) -> None:
        if received.outcome == "ignored":
            return
        line: dict[str, Any] = {"at": round(at, 6), "topic": topic}
        if received.doc is not None:
            line["payload"] = received.doc
        else:
            line |= {"error": received.error, "size": len(payload)}
            line["raw"] = payload[:RAW_KEPT].decode("utf-8", errors="replace")
        self._file.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.lines += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@dataclass
class Replayed:
    """How a replay went: the last receive time (the session's `now`), lines used and lines skipped."""

    last_at: float | None = None
    lines: int = 0
    skipped: int = 0


def lines(path: Path) -> Iterator[dict[str, Any] | None]:
    """Each line of a record as a dict, or None where a line is not one (skipped by the caller)."""
    try:
        file = path.open(encoding="utf-8", errors="replace")
    except OSError as e:
        raise BadInput(f"--replay {path}: cannot read: {e.strerror or e}") from None
    with file:
        for raw in file:
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                yield None
                continue
            if not isinstance(line, dict):
                yield None
                continue
            at, topic = line.get("at"), line.get("topic")
            ok = isinstance(topic, str) and isinstance(at, (int, float)) and not isinstance(at, bool)
            yield line if ok and math.isfinite(at) else None


def replay(path: Path, fleet: Fleet) -> Replayed:
    """Feed a recorded session into `fleet`, in the recorded order."""
    result = Replayed()
    for line in lines(path):
        if line is None:
            result.skipped += 1
            continue
        at, topic = float(line["at"]), line["topic"]
        if isinstance(line.get("payload"), dict):
            fleet.receive(topic, json.dumps(line["payload"], separators=(",", ":")).encode(), at)
        else:
            fleet.count_bad(topic, str(line.get("error") or "bad message"), at)
        result.lines += 1
        result.last_at = at if result.last_at is None else max(result.last_at, at)
    return result


def load(path: Path, fleet: Fleet | None = None) -> tuple[Fleet, Replayed]:
    """A fleet rebuilt from a record (for scripts: `fleet, r = load(p); fleet.summary(r.last_at)`)."""
    fleet = fleet if fleet is not None else Fleet()
    return fleet, replay(path, fleet)
