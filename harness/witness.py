"""What tb_uplink committed to its outbox, seen from outside the process.

A test cannot ask the outbox which records were made: rows leave it once the server has
acknowledged them. So the test prepares the outbox file before the uplink opens it, with a
trigger that copies the timestamp of every row inserted into a table of its own, in the same
transaction as the insert. What is in that table was committed by the uplink, no more and no
less, whether the uplink is running, killed, or gone.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from services.tb_uplink.outbox import Outbox


class OutboxWitness:
    def __init__(self, path: Path):
        self.path = Path(path)
        Outbox(self.path).close()  # the uplink's own schema, so that it finds the file ready
        db = sqlite3.connect(self.path)
        try:
            db.executescript("""
                CREATE TABLE IF NOT EXISTS witness (ts_ms INTEGER NOT NULL);
                CREATE TRIGGER IF NOT EXISTS witness_insert AFTER INSERT ON outbox
                BEGIN INSERT INTO witness (ts_ms) VALUES (new.ts_ms); END;
            """)
        finally:
            db.close()

    def made(self) -> list[int]:
        """The timestamps of every record committed so far, in commit order."""
        db = sqlite3.connect(self.path, timeout=10)
        try:
            return [ts for (ts,) in db.execute("SELECT ts_ms FROM witness ORDER BY rowid")]
        finally:
            db.close()
