"""The outbox on real storage: private files, a WAL that is truncated and a file that shrinks,
damaged files set aside and salvaged, unreadable rows moved aside, and a full disk."""

import os
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from common.config import load
from harness.proc import python_module, wait_for, write_config
from harness.witness import OutboxWitness
from services.tb_uplink.outbox import Outbox, OutboxCorrupt, salvage, set_aside

PAGE = 4096
RECORD_VALUES = {"soc": 0, "pad": "x" * 900}  # about 1 kB: three or four records a page


def values(i: int) -> dict:
    return {**RECORD_VALUES, "soc": i}


def filled(path: Path, n: int) -> tuple[Outbox, list[int]]:
    box = Outbox(path)
    start = int(time.time() * 1000) - n
    stamps = [start + i for i in range(n)]
    for i, ts in enumerate(stamps):
        box.add(ts, values(i))
    return box, stamps


def intact(path: Path, stamps: list[int]) -> set[int]:
    """The records whose stored text is still whole somewhere in the file (an upper bound of what
    can be read: a page split can leave a stale copy of a row behind in free space)."""
    data = path.read_bytes()
    return {ts for i, ts in enumerate(stamps) if msgspec.json.encode({"ts": ts, "values": values(i)}) in data}


def test_the_files_are_private(tmp_path):
    box, _ = filled(tmp_path / "o.db", 3)
    for suffix in ("", "-wal", "-shm"):
        assert stat.S_IMODE(os.stat(f"{tmp_path}/o.db{suffix}").st_mode) == 0o600, suffix
    box.close()
    os.chmod(tmp_path / "o.db", 0o644)  # left readable by an older version
    Outbox(tmp_path / "o.db").close()
    assert stat.S_IMODE(os.stat(tmp_path / "o.db").st_mode) == 0o600


def test_maintenance_truncates_the_wal_and_shrinks_a_drained_file(tmp_path):
    path = tmp_path / "o.db"
    box, _ = filled(path, 2000)
    box.maintain(queued=2000)
    assert os.path.getsize(f"{path}-wal") == 0, "checkpointed and truncated"
    full_size = os.path.getsize(path)
    box.accept([r.id for r in box.batch(0, 10 << 20, 10 << 20, limit=5000)])
    box.maintain(queued=box.stats()[0])
    assert box.stats()[0] == 0
    assert os.path.getsize(path) < full_size / 10, (os.path.getsize(path), full_size)
    assert os.path.getsize(f"{path}-wal") == 0


def test_a_row_whose_payload_cannot_be_read_goes_to_dead_letter_and_the_rest_flows(tmp_path):
    box, stamps = filled(tmp_path / "o.db", 5)
    box.db.execute("UPDATE outbox SET payload = CAST(X'C3FF7B7D' AS TEXT) WHERE ts_ms = ?", (stamps[2],))
    rows = box.batch(0, 1 << 20, 1 << 20)
    assert [r.ts_ms for r in rows] == stamps[:2] + stamps[3:]
    queued, _, _, dead, _ = box.stats()
    assert (queued, dead) == (4, 1)


def damage(path: Path, kind: str) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        if kind == "header":
            f.write(os.urandom(100))
        elif kind == "middle_page":
            f.seek(size // PAGE // 2 * PAGE)
            f.write(os.urandom(PAGE))
        elif kind == "truncated":
            f.truncate(size // 2)
    if kind == "wal_garbage":
        Path(f"{path}-wal").write_bytes(os.urandom(64 << 10))


KINDS = ["header", "middle_page", "truncated", "wal_garbage"]
# A damaged page takes its own records with it (and a truncation may cut one in half).
LOST_AT_MOST = {"header": 0, "middle_page": 4, "truncated": 4, "wal_garbage": 0}


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_damage_is_set_aside_and_every_readable_record_saved(tmp_path, kind):
    path = tmp_path / "o.db"
    box, stamps = filled(path, 300)
    box.close()  # the last connection checkpoints: every record is in the file itself
    damage(path, kind)
    readable = intact(path, stamps) if kind != "header" else set(stamps)
    try:
        box = Outbox(path)
        box.batch(0, 1 << 30, 1 << 30, limit=10_000)
        box.stats()
        box.close()
        assert kind == "wal_garbage", "this damage must be found"
        saved = {r.ts_ms for r in Outbox(path).batch(0, 1 << 30, 1 << 30, limit=10_000)}
    except OutboxCorrupt:
        aside = set_aside(path)
        assert aside.exists() and not path.exists()
        fresh = Outbox(path)
        assert salvage(aside, fresh) == len(fresh.batch(0, 1 << 30, 1 << 30, limit=10_000))
        saved = {r.ts_ms for r in fresh.batch(0, 1 << 30, 1 << 30, limit=10_000)}
    assert saved <= set(stamps)
    assert len(readable - saved) <= LOST_AT_MOST[kind], sorted(readable - saved)[:10]
    assert len(saved) >= len(stamps) // 3


_KILLED_WRITER = """
import sys, time
from services.tb_uplink.outbox import Outbox
box = Outbox(sys.argv[1])
for i in range(4):
    box.add(int(sys.argv[2]) + i, {"soc": i, "pad": "x" * 900})
box.maintain(4)  # the WAL checkpointed and emptied: these four are in the file itself
box.add(int(sys.argv[2]) + 4, {"soc": 4})  # fits the last leaf: the WAL gets that page, not page 1
print("written", flush=True)
time.sleep(120)
"""


def _wal_pages(wal: Path) -> list[int]:
    data = wal.read_bytes()
    page = int.from_bytes(data[8:12], "big")
    return [int.from_bytes(data[32 + i * (24 + page):36 + i * (24 + page)], "big")
            for i in range((len(data) - 32) // (24 + page))]


def test_a_damaged_header_with_records_only_in_the_wal_of_a_killed_writer_saves_them_all(tmp_path):
    path, start = tmp_path / "o.db", int(time.time() * 1000)
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path), str(start)],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    assert writer.stdout.readline() == "written\n"
    writer.kill()  # kill -9: no checkpoint on close, the last record lives only in the WAL
    writer.wait()
    assert 1 not in _wal_pages(Path(f"{path}-wal")), "the case needs page 1 outside the WAL"
    with open(path, "r+b") as f:
        f.write(os.urandom(100))
    with pytest.raises(OutboxCorrupt):
        Outbox(path)
    aside = set_aside(path)
    fresh = Outbox(path)
    assert salvage(aside, fresh) == 5
    assert [r.ts_ms for r in fresh.batch(0, 1 << 30, 1 << 30)] == [start + i for i in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir() if ".repair" in p.name) == []


_TWO_CONNECTIONS = """
import sys
from services.tb_uplink.outbox import Outbox
writer, sender = Outbox(sys.argv[1]), Outbox(sys.argv[1], durable=False)  # as the uplink opens it
for line in sys.stdin:
    writer.add(int(line), {"soc": 1})
    print(sender.stats()[0], flush=True)
"""


def test_a_reader_in_another_process_never_takes_the_wal_from_the_uplink(tmp_path):
    # Closing any descriptor of a file drops the process's POSIX locks on it; if the uplink did
    # that to its own database, an outside reader closing its connection (sqlite3 on the command
    # line, a doctor) would take itself for the last one and delete the WAL holding the queue.
    path, start = tmp_path / "o.db", int(time.time() * 1000)
    uplink = subprocess.Popen([sys.executable, "-c", _TWO_CONNECTIONS, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        for i in range(20):
            uplink.stdin.write(f"{start + i}\n")
            uplink.stdin.flush()
            assert uplink.stdout.readline() == f"{i + 1}\n"
            outside = sqlite3.connect(path)
            assert outside.execute("SELECT count(*) FROM outbox").fetchone()[0] == i + 1
            outside.close()
    finally:
        uplink.stdin.close()
        uplink.wait(30)
    assert [r.ts_ms for r in Outbox(path).batch(0, 1 << 30, 1 << 30)] == [start + i for i in range(20)]


def test_a_file_that_is_not_a_database_at_all_saves_nothing_and_raises_nothing(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(20_000))
    assert salvage(junk, Outbox(tmp_path / "new.db")) == 0


# Through the real service, with a real Mosquitto.

def uplink_config(tmp_path, port, outbox, **section):
    return write_config(tmp_path / "c.yaml", tb_uplink={
        "host": "127.0.0.1", "port": port, "token": "t", "token_env": None, "outbox_path": str(outbox),
        "upload_interval": 0.2, "reconnect_max_s": 1, **section})


@pytest.mark.parametrize("kind", KINDS)
def test_the_uplink_sets_a_damaged_outbox_aside_and_delivers_every_readable_record(
        spawn, tmp_path, broker, collect, watch, kind):
    mq = broker()
    sink = collect(mq.port)
    path = tmp_path / "o.db"
    box, stamps = filled(path, 300)
    box.close()
    damage(path, kind)
    readable = intact(path, stamps) if kind != "header" else set(stamps)
    cfg = uplink_config(tmp_path, mq.port, path)
    bus = watch([load(cfg).bus.tb_uplink], ["uplink.status"])
    spawn(python_module("harness.feed", "--config", cfg, "--period", 0.1))
    uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
    assert wait_for(lambda: len(readable - {ts for ts, _ in sink.snapshot()}) <= LOST_AT_MOST[kind], 120), \
        (len(readable - {ts for ts, _ in sink.snapshot()}), uplink.text()[-5:])
    if kind != "wal_garbage":  # a WAL of garbage is no damage: SQLite ignores its frames
        status = bus.wait_message("uplink.status", lambda m: m.data.outbox_state == "recovered", 60)
        assert status is not None, uplink.text()[-5:]
        aside = [p for p in tmp_path.iterdir() if p.name.startswith("o.db.corrupt-") and p.suffix != ".repair"
                 and not p.name.endswith(("-wal", "-shm"))]
        assert len(aside) == 1 and aside[0].name in status.data.error, (status.data.error, aside)
    # New records keep coming through.
    seen = len(sink.snapshot())
    assert wait_for(lambda: any(ts > stamps[-1] + 60_000 for ts, _ in sink.snapshot()[seen:]) or
                    len(sink.snapshot()) > seen + 5, 60)
    assert uplink.proc.poll() is None


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs the test can fill (mounting needs root)."""
    if os.geteuid() != 0:
        pytest.skip("a small disk needs root to mount a tmpfs; run the suite as root (make test in CI is)")
    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill_disk(where: Path) -> Path:
    filler = where / "filler"
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass  # full
    return filler


def test_a_full_disk_is_a_state_records_not_stored_are_counted_and_delivery_resumes(
        spawn, tmp_path, broker, collect, watch, small_disk):
    mq = broker(persistence=True)
    sink = collect(mq.port, client_id="tb", clean=False)
    outbox = OutboxWitness(small_disk / "o.db")
    cfg = uplink_config(tmp_path, mq.port, outbox.path, batch_max_bytes=8000)
    bus = watch([load(cfg).bus.tb_uplink], ["uplink.status"])
    spawn(python_module("harness.feed", "--config", cfg, "--period", 0.05))
    uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
    assert sink.wait_records(5, 60), uplink.text()
    mq.stop()
    assert bus.wait_message("uplink.status", lambda m: not m.data.connected and m.data.queued >= 10, 60)
    filler = fill_disk(small_disk)
    full = bus.wait_message("uplink.status", lambda m: m.data.outbox_state == "full" and m.data.dropped >= 5, 60)
    assert full is not None, bus.messages("uplink.status")[-1:]
    assert "disk full" in full.data.error
    # The broker comes back while the disk is still full: what was queued goes out, once.
    mq.start()
    made_while_full = outbox.made()
    assert wait_for(lambda: sink.has_all(made_while_full), 120), "the queue was not delivered"
    delivered = [ts for ts, _ in sink.snapshot()]
    twice = len(delivered) - len(set(delivered))
    assert twice <= 50, f"{twice} records delivered more than once while the disk was full"
    # Space returns: records are stored and delivered again, and the state says so.
    filler.unlink()
    ok = bus.wait_message("uplink.status", lambda m: m.data.outbox_state == "ok" and m.data.connected
                          and m.data.queued <= 3, 120, after=bus.items("uplink.status")[-1][0])
    assert ok is not None, bus.messages("uplink.status")[-1:]
    assert ok.data.dropped >= full.data.dropped, "the records never stored stay counted"
    later = len(outbox.made())
    assert wait_for(lambda: len(outbox.made()) >= later + 5, 60)
    assert wait_for(lambda: sink.has_all(outbox.made()), 60)
    assert uplink.proc.poll() is None


def test_a_server_that_never_answers_connack_is_given_up_after_connect_timeout(spawn, tmp_path, watch):
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never speaks MQTT
    try:
        cfg = uplink_config(tmp_path, silent.getsockname()[1], tmp_path / "o.db", connect_timeout_s=1,
                            keepalive_s=60)
        bus = watch([load(cfg).bus.tb_uplink], ["uplink.status"])
        uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
        status = bus.wait_message("uplink.status", lambda m: m.data.error and "CONNACK" in m.data.error, 60)
        assert status is not None, (bus.messages("uplink.status")[-1:], uplink.text()[-3:])
        assert not status.data.connected and "within 1 s" in status.data.error
    finally:
        silent.close()


def read_only(where: Path) -> Path:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
    return where / "o.db"


@pytest.mark.parametrize("place", ["under-a-file", "read-only"])
def test_an_outbox_that_cannot_be_created_stops_with_status_2_and_one_line(spawn, tmp_path, request, place):
    if place == "under-a-file":
        (tmp_path / "afile").write_text("")
        outbox, says = tmp_path / "afile" / "o.db", "part of the path is a file"
    else:
        outbox, says = read_only(request.getfixturevalue("small_disk")), "Read-only file system"
    cfg = uplink_config(tmp_path, 1, outbox)
    child = spawn(python_module("services.tb_uplink", "--config", cfg))
    assert child.wait(60) == 2
    lines = child.text("err")
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert lines[0].startswith("tb_uplink: config error: tb_uplink.outbox_path: ") and says in lines[0]


def test_a_salvage_keeps_the_kept_records(tmp_path):
    path = tmp_path / "o.db"
    box, stamps = filled(path, 40)
    ids = [r.id for r in box.batch(0, 1 << 30, 1 << 30)]
    box.accept(ids[:10], keep=ids[:10])
    kept = box.db.execute("SELECT ts_ms, payload, kept_at FROM kept ORDER BY id").fetchall()
    box.close()
    damage(path, "header")
    with pytest.raises(OutboxCorrupt):
        Outbox(path).batch(0, 1 << 30, 1 << 30)
    aside = set_aside(path)
    fresh = Outbox(path)
    assert salvage(aside, fresh) == 30
    assert fresh.db.execute("SELECT ts_ms, payload, kept_at FROM kept ORDER BY id").fetchall() == kept
