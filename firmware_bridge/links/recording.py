"""Recorded sessions: one JSON object per message a link sent ("tx") or received ("rx").

Each line holds seconds since the recording started, the direction, the message type and its
fields (observations as lists). Written by any link given `?record=FILE.jsonl`, read back by
`replay://FILE.jsonl`.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..protocol import (
    Action,
    Capability,
    Config,
    Error,
    ForeignHello,
    Heartbeat,
    Hello,
    Message,
    Obs,
    ObsDtype,
    PeerState,
    Reset,
    encode,
)


class RecordingError(OSError):
    """The recording file cannot be written."""


_TYPES: dict[str, type] = {cls.__name__: cls for cls in (Hello, Obs, Action, Heartbeat, Reset, Error, Config)}
_ENUMS = {"obs_dtype": ObsDtype, "capabilities": Capability, "state": PeerState}


def to_record(direction: str, msg: Message | ForeignHello, t: float) -> dict[str, Any]:
    """A JSON-able record of one message."""
    record: dict[str, Any] = {"t": round(t, 6), "dir": direction, "type": type(msg).__name__}
    for f in fields(msg):
        value = getattr(msg, f.name)
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = value.item() if hasattr(value, "item") else value
        record[f.name] = int(value) if isinstance(value, (ObsDtype, Capability, PeerState)) else value
    return record


def from_record(record: dict[str, Any]) -> Message:
    """Rebuild a message from its record; ValueError when the record is not one."""
    cls = _TYPES.get(record.get("type", ""))
    if cls is None:
        raise ValueError(f"unknown message type {record.get('type')!r}")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in record:
            continue
        value = record[f.name]
        if f.name == "observation":
            value = np.asarray(value, dtype=np.float32)
        elif f.name == "obs_shape":
            value = tuple(int(d) for d in value)
        elif f.name in _ENUMS:
            value = _ENUMS[f.name](value)
        kwargs[f.name] = value
    msg = cls(**kwargs)
    encode(msg)  # every field of the right type and range, or ValueError / TypeError / struct.error
    return msg


class Recorder:
    """Appends every message a link sends or receives to a JSON-lines file (buffered)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise RecordingError(f"cannot record to {self.path}: {exc.strerror}") from None
        self._start = time.monotonic()

    def write(self, direction: str, msg: Message | ForeignHello) -> None:
        if self._file is not None:
            record = to_record(direction, msg, time.monotonic() - self._start)
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
