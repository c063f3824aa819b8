"""The trip's counters on disk: one row of JSON in SQLite (WAL, synchronous=FULL), written once a
second while something changed, so a kill -9 or a power cut loses at most the last second.

While the computer runs the car's own load changes the energy counters, so that is one small
commit (a 4 KiB WAL page and an fsync) a second; a computer switched off writes nothing. A file
that is damaged or not a database is moved aside to ``<path>.corrupt-<time>`` and the counters
start from zero; the state says so (``recovered``) instead of the service refusing to run. A
file that cannot be opened for another reason (a read-only disk, no permission) is a
:class:`StoreError`: the service stops at start naming the key, and the file is left as it is.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

SCHEMA = "CREATE TABLE IF NOT EXISTS counters (id INTEGER PRIMARY KEY CHECK (id = 1), saved_at REAL, body TEXT)"
SUFFIXES = ("", "-wal", "-shm")
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


class StoreError(Exception):
    """The counters cannot be written or read (a bad path, a full or read-only disk)."""


def _private(path: Path) -> None:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.state, self.error = "ok", None
        self._last_body: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _private(self.path)
        except OSError as e:
            raise StoreError(f"cannot create {self.path}: {e.strerror or e}") from None
        self.saved = self._open()

    def _connect(self) -> sqlite3.Connection:
        # One connection for the main loop and the command thread's reset, used under the
        # service's lock, never by both at once.
        db = sqlite3.connect(self.path, isolation_level=None, timeout=5, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(SCHEMA)
        return db

    def _open(self) -> dict | None:
        """The saved counters (None: none yet); a damaged file is set aside first."""
        try:
            self.db = self._connect()
            row = self.db.execute("SELECT body FROM counters WHERE id = 1").fetchone()
            return None if row is None else json.loads(row[0])
        except sqlite3.DatabaseError as e:
            if (getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF not in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                raise StoreError(f"cannot open {self.path}: {e}") from None
            self._recover(e)
        except ValueError as e:  # the row is not the JSON it was written as
            self._recover(e)
        try:
            self.db = self._connect()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open {self.path}: {e}") from None
        return None

    def _recover(self, error: Exception) -> None:
        aside = self._set_aside()
        self.state, self.error = "recovered", f"the counters' file could not be read ({error}); set aside as {aside.name}"

    def _set_aside(self) -> Path:
        try:
            self.db.close()
        except (AttributeError, sqlite3.Error):
            pass  # never opened, or already unusable
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        for suffix in SUFFIXES:
            if Path(f"{self.path}{suffix}").exists():
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
        _private(self.path)
        return aside

    def save(self, body: dict) -> bool:
        """Write ``body`` if it differs from the last written; False (and ``failed``) on an error."""
        text = json.dumps(body, separators=(",", ":"), sort_keys=True)
        if text == self._last_body:
            return True
        try:
            self.db.execute("INSERT OR REPLACE INTO counters (id, saved_at, body) VALUES (1, ?, ?)", (time.time(), text))
        except sqlite3.Error as e:
            self.state, self.error = "failed", f"cannot save the counters in {self.path}: {e}"
            return False
        self._last_body = text
        if self.state == "failed":
            self.state, self.error = "ok", None
        return True

    def close(self) -> None:
        self.db.close()
