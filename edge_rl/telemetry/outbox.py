"""The telemetry outbox: every message is on disk before it is published, and leaves only when the broker has it.

SQLite (standard library, WAL journal) holds the rows: a crash or a power cut loses at most the
last transaction that had not reached the disk, never the file, and a restarted daemon publishes
what the last one could not, in order, before its own messages.

Bounded: past `max_bytes` the oldest samples go first (counted); events are kept up to a hard
ceiling of `EVENT_CEILING` x `max_bytes`, past which the oldest events go too (counted), so a
storm of events during a long outage cannot fill the disk the checkpoints share. Rows already
handed to the MQTT client (`in_flight_upto`, at most the publisher's window) are never dropped
and do not count against the bound: they may still arrive, and are acknowledged in moments, so
a backlog draining after an outage does not push out the samples that follow it.

Telemetry must never stop the daemon: a file SQLite reports as corrupt is set aside (`.bad`,
`.bad.1`, ...) and a new one started; a disk that refuses to open or write the file (read-only,
full, locked) moves the outbox into memory for the rest of the run. Each says so in `notes`.
Used by one thread only (the publisher's).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event INTEGER NOT NULL, body BLOB)"
EVENT_CEILING = 4
CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
BATCH = 500  # ids per DELETE (SQLite caps bound parameters)
WAL_PAGES = 128  # 512 KiB of write-ahead log at most (SQLite's default, 1000 pages, is 4 MiB)


class Outbox:
    """Rows `(id, body)` in publish order; `add` them, `pending` them, `remove` what the broker acknowledged."""

    def __init__(self, path: Path | None, max_bytes: int) -> None:
        """`path` None keeps the outbox in memory (it then bridges broker outages, not daemon restarts)."""
        self.path, self.max_bytes = path, max_bytes
        self.dropped_samples = self.dropped_events = 0
        self.in_flight_upto = 0  # rows up to this id are with the MQTT client: never dropped
        self.notes: list[str] = []  # what went wrong with the file, for the event log
        self.db = self._open()
        self._count()

    @property
    def on_disk(self) -> bool:
        return self.path is not None

    def _count(self) -> None:
        totals = "SELECT count(*), coalesce(sum(length(body)), 0) FROM outbox"
        self.rows, self.bytes = self.db.execute(totals).fetchone()

    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            return _connect(":memory:")
        try:
            db = _connect(str(self.path))
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            return db
        except sqlite3.DatabaseError as e:
            if not _corrupt(e):
                return self._to_memory(f"cannot use {self.path} ({e})")
            bad = self._set_aside()
            self.notes.append(f"outbox {self.path} unreadable ({e}): set aside as {bad}, a new one started")
            try:
                return _connect(str(self.path))
            except sqlite3.DatabaseError as again:
                return self._to_memory(f"cannot start a new {self.path} ({again})")

    def _set_aside(self) -> str:
        assert self.path is not None
        n, bad = 0, self.path.with_name(self.path.name + ".bad")
        while bad.exists():
            n += 1
            bad = self.path.with_name(f"{self.path.name}.bad.{n}")
        for suffix in ("", "-wal", "-shm"):
            try:
                Path(f"{self.path}{suffix}").replace(f"{bad}{suffix}")
            except OSError:
                pass
        return bad.name

    def _to_memory(self, reason: str) -> sqlite3.Connection:
        self.notes.append(f"{reason}: the outbox is in memory for the rest of this run")
        self.path = None
        return _connect(":memory:")

    def _guarded(self, operation: str, *args: object) -> None:
        """Run a write; if the disk refuses it, carry on in memory (what was on disk stays there for the next start)."""
        try:
            getattr(self, operation)(*args)
        except sqlite3.Error as e:
            if not self.on_disk:
                raise  # memory itself failed: nothing left to fall back to
            self.db.close()
            self.db = self._to_memory(f"outbox {self.path}: {e}")
            self._count()
            self.in_flight_upto = 0
            getattr(self, operation)(*args)

    def add(self, messages: list[tuple[bytes, bool]]) -> None:
        """Append `(body, is_event)` in order, in one transaction, then enforce the bounds."""
        if messages:
            self._guarded("_add", messages)

    def _add(self, messages: list[tuple[bytes, bool]]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO outbox (event, body) VALUES (?, ?)", [(int(e), b) for b, e in messages])
        self.rows += len(messages)
        self.bytes += sum(len(b) for b, _ in messages)
        if self.bytes > self.max_bytes:  # the bound is on what waits: rows in flight (acked in moments) come on top
            held = self.db.execute(
                "SELECT coalesce(sum(length(body)), 0) FROM outbox WHERE id <= ?", (self.in_flight_upto,)
            ).fetchone()[0]
            if self.bytes - held > self.max_bytes:
                self.dropped_samples += self._drop_oldest(events=False, down_to=self.max_bytes + held)
            if self.bytes - held > EVENT_CEILING * self.max_bytes:
                self.dropped_events += self._drop_oldest(events=True, down_to=EVENT_CEILING * self.max_bytes + held)

    def pending(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` rows with id > `after`, oldest first."""
        query = "SELECT id, body FROM outbox WHERE id > ? ORDER BY id LIMIT ?"
        return self.db.execute(query, (after, limit)).fetchall()

    def first_id(self) -> int:
        """The oldest row's id minus one (a cursor from which `pending` returns everything)."""
        row = self.db.execute("SELECT min(id) FROM outbox").fetchone()[0]
        return (row - 1) if row is not None else 0

    def remove(self, ids: list[int]) -> None:
        """Forget rows the broker acknowledged."""
        for start in range(0, len(ids), BATCH):
            self._guarded("_remove", ids[start : start + BATCH])

    def _remove(self, ids: list[int]) -> None:
        marks = ",".join("?" * len(ids))
        with self.db:
            self.db.execute("BEGIN")
            n, size = self.db.execute(
                f"SELECT count(*), coalesce(sum(length(body)), 0) FROM outbox WHERE id IN ({marks})", ids
            ).fetchone()
            self.db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", ids)
        self.rows -= n
        self.bytes -= size

    @property
    def over_bound(self) -> bool:
        """Only events (and rows in flight) are left and they exceed `max_bytes` (kept up to the ceiling)."""
        return self.bytes > self.max_bytes

    def _drop_oldest(self, events: bool, down_to: int) -> int:
        excess = self.bytes - down_to
        victims, freed = [], 0
        query = "SELECT id, length(body) FROM outbox WHERE event = ? AND id > ? ORDER BY id"
        for row_id, size in self.db.execute(query, (int(events), self.in_flight_upto)):
            if freed >= excess:
                break
            victims.append(row_id)
            freed += size
        for start in range(0, len(victims), BATCH):
            self._remove(victims[start : start + BATCH])
        return len(victims)

    def close(self) -> None:
        self.db.close()


def _connect(where: str) -> sqlite3.Connection:
    db = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes, fsync at checkpoints only
    db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")  # the log is folded back every WAL_PAGES pages ...
    db.execute(f"PRAGMA journal_size_limit={WAL_PAGES * 4096}")  # ... and cut back to that size: disk ~ bound
    db.execute(SCHEMA)
    return db


def _corrupt(error: sqlite3.DatabaseError) -> bool:
    name = getattr(error, "sqlite_errorname", "")  # Python >= 3.11
    text = str(error)
    return name in CORRUPT or "quick_check" in text or "not a database" in text or "malformed" in text
