"""The SQLite outbox: order, batching, bounds with a dropped counter, dead letters, durability settings."""

import json
import sqlite3
import time

from services.tb_uplink.outbox import Outbox


def fill(box, n, points=3, start_ms=None):
    start_ms = start_ms or int(time.time() * 1000)
    return [box.add(start_ms + i, {f"k{j}": i for j in range(points)}) for i in range(n)]


def test_records_come_out_oldest_first_as_thingsboard_batches(tmp_path):
    box = Outbox(tmp_path / "o.db")
    ids = fill(box, 10)
    rows = box.batch(0, max_bytes=10_000, max_points=1000)
    assert [r.id for r in rows] == ids
    batch = json.loads("[" + ",".join(r.payload for r in rows) + "]")
    assert [set(r) for r in batch] == [{"ts", "values"}] * 10 and batch[0]["values"] == {"k0": 0, "k1": 0, "k2": 0}
    assert [r.id for r in box.batch(ids[4], 10_000, 1000)] == ids[5:]
    assert [r.id for r in box.batch(0, 10_000, 1000, skip=frozenset(ids[:2]))] == ids[2:]


def test_batches_are_bounded_by_bytes_and_points_but_never_empty(tmp_path):
    box = Outbox(tmp_path / "o.db")
    fill(box, 10, points=5)
    assert len(box.batch(0, max_bytes=10_000, max_points=12)) == 2
    one = box.batch(0, max_bytes=10, max_points=1)
    assert len(one) == 1, "a record larger than the limits still goes, alone"
    row = len(one[0].payload) + 1  # its text and a comma inside "[...]"
    assert len(box.batch(0, max_bytes=2 + 2 * row + row // 2, max_points=1000)) == 2


def test_accept_deletes_and_reject_moves_to_dead_letter_after_n_attempts(tmp_path):
    box = Outbox(tmp_path / "o.db")
    ids = fill(box, 3)
    box.accept(ids[:1])
    assert box.reject(ids[1:2], "session closed", dead_after=2) == 0
    assert box.reject(ids[1:2], "session closed", dead_after=2) == 1
    queued, oldest, dropped, dead = box.stats()
    assert (queued, dead, dropped) == (1, 1, 0)
    assert [r.id for r in box.batch(0, 10_000, 100)] == ids[2:]
    reason = sqlite3.connect(tmp_path / "o.db").execute("SELECT reason, attempts FROM dead_letter").fetchone()
    assert reason == ("session closed", 2)


def test_row_and_age_bounds_drop_the_oldest_and_count_them(tmp_path):
    box = Outbox(tmp_path / "o.db", max_rows=5, max_age_s=3600)
    ids = fill(box, 8)
    assert [r.id for r in box.batch(0, 100_000, 1000)] == ids[3:]
    old = int((time.time() - 7200) * 1000)
    box.db.execute("UPDATE outbox SET ts_ms = ? WHERE id = ?", (old, ids[5]))
    fill(box, 1)  # one over the row bound drops ids[3]; ids[5] is past the age bound
    queued, oldest, dropped, dead = box.stats()
    assert queued == 4 and dropped == 3 + 1 + 1
    box.close()
    assert Outbox(tmp_path / "o.db").stats()[2] == 5, "the dropped counter survives a restart"


def test_wal_and_synchronous_full_for_the_writer(tmp_path):
    writer, sender = Outbox(tmp_path / "o.db"), Outbox(tmp_path / "o.db", durable=False)
    assert writer.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert writer.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert sender.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: a lost delete only resends


def test_an_sqlite_failure_is_a_named_error(tmp_path):
    import pytest

    from services.tb_uplink.outbox import OutboxError
    box = Outbox(tmp_path / "o.db")
    ids = fill(box, 1)
    box.db.close()
    for call in (lambda: box.accept(ids), lambda: box.reject(ids, "x", 3), box.stats, lambda: box.add(1, {}),
                 box.newest, lambda: box.batch(0, 1000, 1000)):
        with pytest.raises(OutboxError):
            call()
