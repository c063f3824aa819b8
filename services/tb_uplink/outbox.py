"""The durable outbox: every telemetry record is committed to SQLite before anything is sent.

    outbox(id, ts_ms, points, payload, attempts)   payload = '{"ts": ..., "values": {...}}'
    dead_letter(... , reason, moved_at)            records the server kept refusing, or unreadable
    meta(key, value)                               the dropped-record counter
    kept(id, ts_ms, payload, kept_at)              full records of which the budget planner sent
                                                   only part (or nothing), kept ``keep_s`` after
                                                   they went

WAL journal. The writer commits each record in its own transaction with synchronous=FULL, so a
record survives a crash or power cut once add() has returned. The sender's connection deletes
acknowledged rows with synchronous=NORMAL: after a power cut a delete may be lost and the record
sent again, which ThingsBoard absorbs (same ts overwrites). The queue is bounded by rows and by
age; the oldest records go first and are counted in ``dropped``. The files are created 0600
(they hold the car's position track).

Storage trouble is named by type: OutboxFull (the disk is full: the writer counts what it could
not store, the sender keeps acknowledged rows out of its batches until it can delete them) and
OutboxCorrupt (a damaged file: :func:`set_aside` moves it, with its WAL, out of the way for
inspection, and :func:`salvage` copies every row that can still be read into a fresh outbox).
``maintain`` checkpoints and truncates the WAL and, once the queue has drained, compacts the file.
"""

from __future__ import annotations

import json
import os
import shutil
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
CREATE TABLE IF NOT EXISTS kept (
    id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, payload TEXT NOT NULL, kept_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS kept_time ON kept (kept_at);
CREATE INDEX IF NOT EXISTS outbox_ts ON outbox (ts_ms);
"""
SUFFIXES = ("", "-wal", "-shm")
WAL_LIMIT_BYTES = 1 << 20  # what a checkpoint leaves of the WAL file
COMPACT_FREE_BYTES = 1 << 20  # free pages worth compacting away once the queue is empty
SALVAGE_MISSES = 4096  # ids probed one by one past an unreadable one before giving up on a range
_SQLITE_FULL, _SQLITE_CORRUPT, _SQLITE_NOTADB = 13, 11, 26
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class OutboxError(Exception):
    """The outbox database cannot be opened or written (bad path, permissions, I/O error)."""


class OutboxFull(OutboxError):
    """The disk (or the file system's quota) is full."""


class OutboxCorrupt(OutboxError):
    """The file is damaged: not a database, a malformed page, a truncated file."""


def _error(e: sqlite3.Error, doing: str, path: Path) -> OutboxError:
    """The named error for an sqlite3 failure, classified by SQLite's result code."""
    code = (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF
    kind = {_SQLITE_FULL: OutboxFull, _SQLITE_CORRUPT: OutboxCorrupt, _SQLITE_NOTADB: OutboxCorrupt}.get(code, OutboxError)
    return kind(f"cannot {doing} {path}: {e}")


@dataclass(frozen=True)
class Row:
    id: int
    ts_ms: int
    points: int
    payload: str


def _private(path: Path) -> None:
    """Create the database file 0600 if it is new (SQLite gives its WAL and SHM the same mode), and
    tighten the mode of files an older version left readable by everyone.

    An existing file is never opened here: closing any descriptor of a file drops every POSIX lock
    this process holds on it, so the uplink's other connection would lose its locks, and the next
    process to close a connection (sqlite3 on the command line, a test's reader) would take itself
    for the last one and checkpoint and delete the WAL under the uplink's feet."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    for suffix in SUFFIXES:
        try:
            os.chmod(f"{path}{suffix}", 0o600)
        except FileNotFoundError:
            pass


class Outbox:
    def __init__(self, path: str | Path, max_rows: int = 2_000_000, max_age_s: float = 30 * 86400,
                 durable: bool = True, keep_s: float = 7 * 86400):
        """Open (or create) the outbox. A file too damaged to open raises OutboxCorrupt; damage
        deeper in the file is found when a read or write reaches it (no full check at start:
        on an SD card that would take seconds per hundred megabytes)."""
        self.path = Path(path)
        self.max_rows, self.max_age_s, self.keep_s = max_rows, max_age_s, keep_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _private(self.path)
        except (FileExistsError, NotADirectoryError):
            # mkdir reports a file in the way as "File exists", which reads as if all were well
            raise OutboxError(f"cannot create the outbox {self.path}: part of the path is a file, "
                              "not a directory") from None
        except OSError as e:
            raise OutboxError(f"cannot create the outbox {self.path}: {e.strerror or e}") from None
        try:
            self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self.db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise _error(e, "open the outbox", self.path) from None

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
            self._count_dropped(dropped)
            self.db.execute("COMMIT")
            return row_id
        except sqlite3.Error as e:
            self._rollback()
            raise _error(e, "store a record in", self.path) from None

    def count_dropped(self, n: int) -> None:
        """Add ``n`` records that were never stored (the disk was full) to the dropped counter."""
        try:
            self._count_dropped(n)
        except sqlite3.Error as e:
            raise _error(e, "count dropped records in", self.path) from None

    def _count_dropped(self, n: int) -> None:
        if n:
            self.db.execute("INSERT INTO meta (key, value) VALUES ('dropped', ?) "
                            "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value", (n,))

    def batch(self, after_id: int, max_bytes: int, max_points: int, skip: frozenset[int] = frozenset(),
              limit: int = 500) -> list[Row]:
        """The oldest rows after ``after_id`` (minus ``skip``) that fit ``max_bytes`` of JSON array
        and ``max_points`` data points; at least one row if any is waiting. A row whose payload can
        no longer be read is moved to the dead-letter table, not sent. Only the rows taken are
        checked: a batch holds tens of the ``limit`` rows read, and the check parses each."""
        rows, unreadable, size, points = [], [], 2, 0
        for row_id, ts_ms, count, raw in self._select("WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)):
            if row_id in skip:
                continue
            if rows and (size + len(raw) + 1 > max_bytes or points + count > max_points):
                break
            payload = _checked_payload(raw)
            if payload is None:
                unreadable.append(row_id)
                continue
            rows.append(Row(row_id, ts_ms, count, payload))
            size, points = size + len(raw) + 1, points + count
        self._dead_unreadable(unreadable)
        return rows

    def newest(self) -> Row | None:
        found = self._rows("ORDER BY id DESC LIMIT 1", ())
        return found[0] if found else None

    def newest_parts(self) -> list[Row]:
        """The rows of the newest record: one, or the parts of a record split to fit a message."""
        return self._rows("WHERE ts_ms = (SELECT ts_ms FROM outbox ORDER BY id DESC LIMIT 1) AND "
                          "id > (SELECT MAX(id) FROM outbox) - 64 ORDER BY id", ())

    def _select(self, where: str, args: tuple) -> list[tuple[int, int, int, bytes]]:
        try:
            return self.db.execute(f"SELECT id, ts_ms, points, CAST(payload AS BLOB) FROM outbox {where}",
                                   args).fetchall()
        except sqlite3.Error as e:
            raise _error(e, "read", self.path) from None

    def _rows(self, where: str, args: tuple) -> list[Row]:
        rows, unreadable = [], []
        for row_id, ts_ms, points, raw in self._select(where, args):
            payload = _checked_payload(raw)
            if payload is None:
                unreadable.append(row_id)
            else:
                rows.append(Row(row_id, ts_ms, points, payload))
        self._dead_unreadable(unreadable)
        return rows

    def _dead_unreadable(self, ids: list[int]) -> None:
        if ids:
            self.reject(ids, "unreadable payload (damaged storage)", dead_after=0)

    def accept(self, ids: list[int], keep: list[int] = ()) -> None:
        """The server acknowledged these rows: delete them. The full records of ``keep`` (the
        rows the server got only part of) move to ``kept`` in the same transaction."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            now = time.time()
            self.db.executemany("INSERT INTO kept (ts_ms, payload, kept_at) SELECT ts_ms, payload, ? FROM outbox "
                                "WHERE id = ?", [(now, i) for i in keep])
            self.db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise _error(e, "delete sent records from", self.path) from None

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
            raise _error(e, "count a failed attempt in", self.path) from None

    def _rollback(self) -> None:
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection itself is gone; the error being reported says why

    def stats(self) -> tuple[int, int | None, int, int, int]:
        """(queued rows, oldest ts_ms, dropped so far, dead letters, kept full records). Raises
        OutboxError."""
        try:
            queued = self.db.execute("SELECT COUNT(*) FROM outbox INDEXED BY outbox_ts").fetchone()[0]
            oldest = self.db.execute("SELECT MIN(ts_ms) FROM outbox").fetchone()[0]
            dropped = self.db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
            dead = self.db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
            kept = self.db.execute("SELECT COUNT(*) FROM kept INDEXED BY kept_time").fetchone()[0]
        except sqlite3.Error as e:
            raise _error(e, "read", self.path) from None
        return queued, oldest, dropped[0] if dropped else 0, dead, kept

    def maintain(self, queued: int) -> None:
        """Checkpoint the WAL into the database and truncate it; with nothing queued, give the
        free pages back to the file system. Kept full records older than ``keep_s`` (or beyond
        ``max_rows``) go first. Busy readers only postpone it to the next call."""
        try:
            self._prune_kept()
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if queued == 0:
                free, size = (self.db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("freelist_count", "page_size"))
                if free * size >= COMPACT_FREE_BYTES:
                    self.db.execute("VACUUM")
                    self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as e:
            code = (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF
            if code != 5:  # SQLITE_BUSY: another connection is reading; next time
                raise _error(e, "compact", self.path) from None
        finally:
            self._rollback()

    def add_kept(self, rows: list[tuple[int, str, float]]) -> None:
        """(ts_ms, payload, kept_at) rows into ``kept``, as they were (a salvage)."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT INTO kept (ts_ms, payload, kept_at) VALUES (?, ?, ?)", rows)
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise _error(e, "copy kept records into", self.path) from None

    def _prune_kept(self) -> None:
        # By the time a record was kept, not its own: a backlog older than keep_s is kept too.
        # Ids follow the order rows were kept in, so the bound by count needs no index.
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("DELETE FROM kept WHERE kept_at < ?", (time.time() - self.keep_s,))
        self.db.execute("DELETE FROM kept WHERE id <= (SELECT MAX(id) FROM kept) - ?", (self.max_rows,))
        self.db.execute("COMMIT")


def _checked_payload(raw: bytes | None) -> str | None:
    """The payload text if it is the JSON object a record was written as, else None."""
    try:
        text = raw.decode("utf-8")
        record = _decode(text)
    except (AttributeError, UnicodeDecodeError, ValueError):
        return None
    return text if isinstance(record, dict) and "ts" in record and "values" in record else None


def set_aside(path: str | Path) -> Path:
    """Move a damaged outbox (and its WAL and SHM) to ``<path>.corrupt-<time>``, kept for
    inspection. Returns the new name of the database file."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in SUFFIXES:
        try:
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        except FileNotFoundError:
            pass
    return aside


def salvage(aside: Path, into: Outbox) -> int:
    """Copy every record that can still be read from the damaged file ``aside`` into ``into``, in
    their order. Unreadable pages are stepped over: a range scan that fails goes on id by id. A
    file SQLite will not open (a damaged header, a truncated file whose header promises more pages)
    is read through a copy with a rebuilt header. Returns how many were saved; a full disk stops
    the copy where it is."""
    saved = _salvage_from(aside, into)
    if saved == 0 and aside.exists():
        repaired = _repaired_copy(aside)
        try:
            saved = _salvage_from(repaired, into, read_only=False)
        finally:
            for suffix in SUFFIXES:
                Path(f"{repaired}{suffix}").unlink(missing_ok=True)
    return saved


def _salvage_from(path: Path, into: Outbox, read_only: bool = True) -> int:
    try:
        old = sqlite3.connect(f"file:{path}?mode={'ro' if read_only else 'rw'}", uri=True, timeout=1)
    except sqlite3.Error:
        return 0
    saved = 0
    try:
        for ts_ms, payload in _readable_rows(old):
            into.add(ts_ms, json.loads(payload)["values"])
            saved += 1
        _salvage_kept(old, into)
    except OutboxError:
        pass  # the new file cannot take more (a full disk): what is saved is saved
    finally:
        old.close()
    return saved


def _salvage_kept(old: sqlite3.Connection, into: Outbox) -> None:
    """The kept records too, when their table can be read whole (a damaged one stays in the file
    set aside): they are the only full copy of what was thinned."""
    try:
        rows = old.execute("SELECT ts_ms, CAST(payload AS BLOB), kept_at FROM kept ORDER BY id").fetchall()
    except sqlite3.Error:
        return
    into.add_kept([(ts, text, at) for ts, raw, at in rows if (text := _checked_payload(raw)) is not None])


def _repaired_copy(path: Path) -> Path:
    """A copy of ``path`` (and of its WAL) whose 100-byte header is rebuilt from what the file
    itself shows: page 1 (the schema) follows the header, and the page count follows from the
    file's length. The copy says WAL mode when there is a WAL, so that SQLite reads the records
    committed since the last checkpoint (and page 1 from the WAL when it is there)."""
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big") if len(data) >= 18 else 0
    if page_size == 1:
        page_size = 65536
    if page_size < 512 or page_size & (page_size - 1):
        page_size = 4096  # what SQLite creates the outbox with
    pages = max(1, len(data) // page_size)
    copy = path.with_name(f"{path.name}.repair")
    wal = Path(f"{path}-wal")
    journal = 1
    if wal.exists() and wal.stat().st_size > 0:
        shutil.copyfile(wal, f"{copy}-wal")
        os.chmod(f"{copy}-wal", 0o600)
        journal = 2
    data[:100] = _header(page_size, pages, journal)
    copy.write_bytes(bytes(data[:pages * page_size]))
    os.chmod(copy, 0o600)
    return copy


def _header(page_size: int, pages: int, journal: int) -> bytes:
    header = bytearray(100)
    header[0:16] = b"SQLite format 3\0"
    header[16:18] = (page_size if page_size < 65536 else 1).to_bytes(2, "big")
    header[18:24] = bytes([journal, journal, 0, 64, 32, 32])  # 1 rollback, 2 WAL; no reserved bytes
    header[24:28] = (1).to_bytes(4, "big")  # change counter ...
    header[28:32] = pages.to_bytes(4, "big")  # ... and the page count it vouches for
    header[40:44] = (1).to_bytes(4, "big")  # schema cookie
    header[44:48] = (4).to_bytes(4, "big")  # schema format
    header[56:60] = (1).to_bytes(4, "big")  # UTF-8
    header[92:96] = (1).to_bytes(4, "big")  # version-valid-for = change counter
    header[96:100] = (3_040_001).to_bytes(4, "big")
    return bytes(header)


def _readable_rows(db: sqlite3.Connection):
    """(ts_ms, payload) of each readable, well-formed row, in id order."""
    last, misses = 0, 0
    while misses < SALVAGE_MISSES:
        try:
            for row_id, ts_ms, raw in db.execute(
                    "SELECT id, ts_ms, CAST(payload AS BLOB) FROM outbox WHERE id > ? ORDER BY id", (last,)):
                last, misses = row_id, 0
                payload = _checked_payload(raw)
                if payload is not None and isinstance(ts_ms, int):
                    yield ts_ms, payload
            return
        except sqlite3.Error:
            last, misses = last + 1, misses + 1  # step over the id the scan broke on
