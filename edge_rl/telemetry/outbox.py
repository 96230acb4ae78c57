"""The telemetry outbox: every message is on disk before it is published, and leaves only when the broker has it.

SQLite (standard library, WAL journal) holds the rows: a crash or a power cut loses at most the
last transaction that had not reached the disk, never the file, and a restarted daemon publishes
what the last one could not, in order, before its own messages. The outbox is bounded in bytes:
past the bound, the oldest samples go first (counted); events are never dropped, so a long
outage full of events may exceed the bound (reported as `over_bound`). A file SQLite cannot
read is set aside as `.bad` and a fresh outbox started: telemetry must never stop the daemon.

Used by one thread only (the publisher's).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

SCHEMA = "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event INTEGER NOT NULL, body BLOB)"


class Outbox:
    """Rows `(id, body)` in publish order; `add` them, `pending` them, `remove` what the broker acknowledged."""

    def __init__(self, path: Path | None, max_bytes: int) -> None:
        """`path` None keeps the outbox in memory (it then bridges broker outages, not daemon restarts)."""
        self.path, self.max_bytes = path, max_bytes
        self.dropped_samples = 0
        self.in_flight_upto = 0  # rows up to this id are with the broker's client: never dropped (they may arrive)
        self.notes: list[str] = []  # what happened at open (a file set aside), for the event log
        self.db = self._open()
        totals = "SELECT count(*), coalesce(sum(length(body)), 0) FROM outbox"
        self.rows, self.bytes = self.db.execute(totals).fetchone()

    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            return self._connect(":memory:")
        try:
            db = self._connect(str(self.path))
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            return db
        except sqlite3.DatabaseError as e:
            bad = self.path.with_name(self.path.name + ".bad")
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.replace(f"{self.path}{suffix}", f"{bad}{suffix}")
                except OSError:
                    pass
            self.notes.append(f"outbox {self.path} unreadable ({e}): set aside as {bad.name}, a new one started")
            return self._connect(str(self.path))

    @staticmethod
    def _connect(where: str) -> sqlite3.Connection:
        db = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes, fsync at checkpoints only
        db.execute(SCHEMA)
        return db

    def add(self, messages: list[tuple[bytes, bool]]) -> None:
        """Append `(body, is_event)` in order, in one transaction, then enforce the bound."""
        if not messages:
            return
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO outbox (event, body) VALUES (?, ?)", [(int(e), b) for b, e in messages])
        self.rows += len(messages)
        self.bytes += sum(len(b) for b, _ in messages)
        if self.bytes > self.max_bytes:
            self._drop_oldest_samples()

    def pending(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` rows with id > `after`, oldest first."""
        query = "SELECT id, body FROM outbox WHERE id > ? ORDER BY id LIMIT ?"
        return self.db.execute(query, (after, limit)).fetchall()

    def first_id(self) -> int:
        """The oldest row's id minus one (a cursor from which `pending` returns everything)."""
        row = self.db.execute("SELECT min(id) FROM outbox").fetchone()[0]
        return (row - 1) if row is not None else 0

    def remove(self, ids: list[int]) -> None:
        """Forget rows the broker acknowledged (or samples dropped at the bound); at most 500 ids per call."""
        if not ids:
            return
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
        """Only events are left and they exceed the bound (they are kept anyway)."""
        return self.bytes > self.max_bytes

    def _drop_oldest_samples(self) -> None:
        excess = self.bytes - self.max_bytes
        victims, freed = [], 0
        query = "SELECT id, length(body) FROM outbox WHERE event = 0 AND id > ? ORDER BY id"
        for row_id, size in self.db.execute(query, (self.in_flight_upto,)):
            if freed >= excess:
                break
            victims.append(row_id)
            freed += size
        self.dropped_samples += len(victims)
        for start in range(0, len(victims), 500):  # SQLite caps the number of bound parameters
            self.remove(victims[start : start + 500])

    def close(self) -> None:
        self.db.close()
