"""The durable outbox: every telemetry record is committed to SQLite before anything is sent.

    outbox(id, ts_ms, points, payload, attempts)   payload = '{"ts": ..., "values": {...}}'
    dead_letter(... , reason, moved_at)            batches the server kept refusing
    meta(key, value)                               the dropped-record counter

WAL journal. The writer commits each record in its own transaction with synchronous=FULL, so a
record survives a crash or power cut once add() has returned. The sender's connection deletes
acknowledged rows with synchronous=NORMAL: after a power cut a delete may be lost and the record
sent again, which ThingsBoard absorbs (same ts overwrites). The queue is bounded by rows and by
age; the oldest records go first and are counted in ``dropped``.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms INTEGER NOT NULL, points INTEGER NOT NULL,
    payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, points INTEGER NOT NULL, payload TEXT NOT NULL,
    attempts INTEGER NOT NULL, reason TEXT, moved_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_ts ON outbox (ts_ms);
"""
_encode = msgspec.json.Encoder().encode


class OutboxError(Exception):
    """The outbox database cannot be opened or written (disk full, bad path, corrupt file)."""


@dataclass(frozen=True)
class Row:
    id: int
    ts_ms: int
    points: int
    payload: str


class Outbox:
    def __init__(self, path: str | Path, max_rows: int = 2_000_000, max_age_s: float = 30 * 86400,
                 durable: bool = True):
        self.path = Path(path)
        self.max_rows, self.max_age_s = max_rows, max_age_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise OutboxError(f"cannot open the outbox {self.path}: {e}") from None

    def close(self) -> None:
        self.db.close()

    def add(self, ts_ms: int, values: dict) -> int:
        """Commit one record; drop the oldest beyond the bounds. Returns the record's id."""
        payload = _encode({"ts": ts_ms, "values": values}).decode()
        try:
            self.db.execute("BEGIN IMMEDIATE")
            row_id = self.db.execute("INSERT INTO outbox (ts_ms, points, payload) VALUES (?, ?, ?)",
                                     (ts_ms, len(values), payload)).lastrowid
            # Ids only grow, so the newest max_rows records are the ids above row_id - max_rows.
            dropped = self.db.execute("DELETE FROM outbox WHERE id <= ?", (row_id - self.max_rows,)).rowcount
            dropped += self.db.execute("DELETE FROM outbox WHERE ts_ms < ?",
                                       (int((time.time() - self.max_age_s) * 1000),)).rowcount
            if dropped:
                self.db.execute("INSERT INTO meta (key, value) VALUES ('dropped', ?) "
                                "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value", (dropped,))
            self.db.execute("COMMIT")
            return row_id
        except sqlite3.Error as e:
            self._rollback()
            raise OutboxError(f"cannot store a record in {self.path}: {e}") from None

    def batch(self, after_id: int, max_bytes: int, max_points: int, skip: frozenset[int] = frozenset(),
              limit: int = 500) -> list[Row]:
        """The oldest rows after ``after_id`` (minus ``skip``) that fit ``max_bytes`` of JSON array
        and ``max_points`` data points; at least one row if any is waiting."""
        rows, size, points = [], 2, 0
        try:
            found = self.db.execute("SELECT id, ts_ms, points, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                                    (after_id, limit)).fetchall()
        except sqlite3.Error as e:
            raise OutboxError(f"cannot read {self.path}: {e}") from None
        for row_id, ts_ms, pts, payload in found:
            if row_id in skip:
                continue
            if rows and (size + len(payload) + 1 > max_bytes or points + pts > max_points):
                break
            rows.append(Row(row_id, ts_ms, pts, payload))
            size, points = size + len(payload) + 1, points + pts
        return rows

    def newest(self) -> Row | None:
        try:
            found = self.db.execute("SELECT id, ts_ms, points, payload FROM outbox ORDER BY id DESC LIMIT 1").fetchone()
        except sqlite3.Error as e:
            raise OutboxError(f"cannot read {self.path}: {e}") from None
        return Row(*found) if found else None

    def accept(self, ids: list[int]) -> None:
        """The server acknowledged these rows: delete them."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise OutboxError(f"cannot delete sent records from {self.path}: {e}") from None

    def reject(self, ids: list[int], reason: str, dead_after: int) -> int:
        """Count a failed attempt; rows that failed ``dead_after`` times move to dead_letter.
        Returns how many moved."""
        marks = ",".join("?" * len(ids))
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(f"UPDATE outbox SET attempts = attempts + 1 WHERE id IN ({marks})", ids)
            moved = self.db.execute(
                f"INSERT INTO dead_letter SELECT id, ts_ms, points, payload, attempts, ?, ? FROM outbox "
                f"WHERE id IN ({marks}) AND attempts >= ?", (reason, time.time(), *ids, dead_after)).rowcount
            self.db.execute(f"DELETE FROM outbox WHERE id IN ({marks}) AND attempts >= ?", (*ids, dead_after))
            self.db.execute("COMMIT")
            return moved
        except sqlite3.Error as e:
            self._rollback()
            raise OutboxError(f"cannot count a failed attempt in {self.path}: {e}") from None

    def _rollback(self) -> None:
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection itself is gone; the error being reported says why

    def stats(self) -> tuple[int, int | None, int, int]:
        """(queued rows, oldest ts_ms, dropped so far, dead letters). Raises OutboxError."""
        try:
            queued = self.db.execute("SELECT COUNT(*) FROM outbox INDEXED BY outbox_ts").fetchone()[0]
            oldest = self.db.execute("SELECT MIN(ts_ms) FROM outbox").fetchone()[0]
            dropped = self.db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
            dead = self.db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
        except sqlite3.Error as e:
            raise OutboxError(f"cannot read {self.path}: {e}") from None
        return queued, oldest, dropped[0] if dropped else 0, dead
