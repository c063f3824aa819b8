"""What tb_uplink committed to its outbox, seen from outside the process.

A test cannot ask the outbox which records were made: rows leave it once the server has
acknowledged them. So the test prepares the outbox file before the uplink opens it, with a
trigger that copies the timestamp of every row inserted into a table of its own, in the same
transaction as the insert. What is in that table was committed by the uplink, no more and no
less, whether the uplink is running, killed, or gone.

When the uplink replaces a damaged outbox with a new file, the witness arms the new file as soon
as it sees it and keeps what it had already seen: what it reports stays a subset of what was
committed (records committed before it re-armed are simply not in it).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from services.tb_uplink.outbox import Outbox

_ARM = """
    CREATE TABLE IF NOT EXISTS witness (ts_ms INTEGER NOT NULL);
    CREATE TRIGGER IF NOT EXISTS witness_insert AFTER INSERT ON outbox
    BEGIN INSERT INTO witness (ts_ms) VALUES (new.ts_ms); END;
"""


class OutboxWitness:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._seen: dict[int, None] = {}  # insertion-ordered set of every timestamp seen so far
        Outbox(self.path).close()  # the uplink's own schema, so that it finds the file ready
        self._arm()

    def _arm(self) -> None:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            db.executescript(_ARM)
        finally:
            db.close()

    def made(self) -> list[int]:
        """The timestamps of every record seen committed so far, in commit order."""
        self._seen.update(dict.fromkeys(self._read()))
        return list(self._seen)

    def _read(self) -> list[int]:
        try:
            # mode=rw: never create the file ourselves while the uplink is replacing it
            db = sqlite3.connect(self.path.resolve().as_uri() + "?mode=rw", uri=True, timeout=10)
        except sqlite3.OperationalError:  # between the damaged file set aside and the new one
            return []
        try:
            return [ts for (ts,) in db.execute("SELECT ts_ms FROM witness ORDER BY rowid")]
        except sqlite3.OperationalError:  # a new file: arm it once the uplink has its schema
            try:
                db.executescript(_ARM)
            except sqlite3.DatabaseError:  # no outbox table yet, or damaged: armed on a later call
                pass
            return []
        except sqlite3.DatabaseError:  # the damaged file, before the uplink has set it aside
            return []
        finally:
            db.close()
