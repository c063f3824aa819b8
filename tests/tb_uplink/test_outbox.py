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
    queued, oldest, dropped, dead, kept = box.stats()
    assert (queued, dead, dropped) == (1, 1, 0)
    assert [r.id for r in box.batch(0, 10_000, 100)] == ids[2:]
    reason = sqlite3.connect(tmp_path / "o.db").execute("SELECT reason, attempts FROM dead_letter").fetchone()
    assert reason == ("session closed", 2)


def test_rows_sent_only_in_part_are_kept_whole_until_their_age_or_the_row_bound(tmp_path):
    box = Outbox(tmp_path / "o.db", max_rows=4, keep_s=3600)
    ids = fill(box, 4, start_ms=int((time.time() - 3 * 3600) * 1000))  # a backlog older than keep_s
    full = {r.id: (r.ts_ms, r.payload) for r in box.batch(0, 100_000, 1000)}
    box.accept(ids[:2], keep=ids[1:2])
    assert box.stats()[0] == 2 and box.stats()[4] == 1, "deleted from the queue, one kept"
    assert box.db.execute("SELECT ts_ms, payload FROM kept").fetchall() == [full[ids[1]]], \
        "the full record, as it was stored"
    box.accept(ids[2:], keep=ids[2:])
    box.maintain(0)
    assert box.stats()[4] == 3, "kept for keep_s after it went, however old the record"
    box.db.execute("UPDATE kept SET kept_at = ? WHERE ts_ms = ?", (time.time() - 7200, full[ids[3]][0]))
    box.maintain(0)
    assert [t for t, in box.db.execute("SELECT ts_ms FROM kept")] == [full[i][0] for i in ids[1:3]], \
        "kept longer than keep_s ago, it goes"
    more = fill(box, 4, start_ms=full[ids[3]][0] + 1)
    stored = {r.id: r.ts_ms for r in box.batch(0, 100_000, 1000)}
    box.accept(more, keep=more)
    box.maintain(0)
    queued, *_, kept = box.stats()
    assert (queued, kept) == (0, 4)
    assert [t for t, in box.db.execute("SELECT ts_ms FROM kept")] == [stored[i] for i in more], \
        "beyond max_rows the oldest go"


def test_row_and_age_bounds_drop_the_oldest_and_count_them(tmp_path):
    box = Outbox(tmp_path / "o.db", max_rows=5, max_age_s=3600)
    ids = fill(box, 8)
    assert [r.id for r in box.batch(0, 100_000, 1000)] == ids[3:]
    old = int((time.time() - 7200) * 1000)
    box.db.execute("UPDATE outbox SET ts_ms = ? WHERE id = ?", (old, ids[5]))
    fill(box, 1)  # one over the row bound drops ids[3]; ids[5] is past the age bound
    queued, oldest, dropped, dead, kept = box.stats()
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

