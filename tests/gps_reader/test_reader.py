"""gps_reader against the NMEA simulator in another process, on a real pty and on TCP."""

import json
import signal
import socket
import threading
import time

import pytest

from common.config import load
from harness.proc import free_port, python_module, write_config

QUIET_MARGIN_S = 0.5


class NmeaSim:
    def __init__(self, spawn, tmp_path, transport, *args):
        self.spawn, self.transport, self.args = spawn, transport, [str(a) for a in args]
        self.port, self.link = free_port(), tmp_path / "ttyGPS"
        self.section = ({"source": "tcp", "tcp_host": "127.0.0.1", "tcp_port": self.port} if transport == "tcp"
                        else {"source": "serial", "serial_port": str(self.link)})
        self.start()

    def start(self):
        where = ["--tcp", self.port] if self.transport == "tcp" else ["--pty", "--link", self.link]
        self.child = self.spawn(python_module("sim.nmea", *where, "--events", *self.args))
        assert self.child.wait_line('"event": "listening"', 60), self.child.text()

    def events(self, kind):
        return [e for e in map(json.loads, self.child.text("out")) if e["event"] == kind]


def start_reader(spawn, tmp_path, sim, watch, **section):
    cfg = write_config(tmp_path / "c.yaml", gps_reader={**sim.section, **section})
    bus = watch([load(cfg).bus.gps_reader], ["gps."])
    return spawn(python_module("services.gps_reader", "--config", cfg)), bus


def one_per_epoch(fixes):
    """The fixes as the epochs they describe: a fix published again with the same time (a stall
    inside the burst closed its epoch early, the rest of the burst completed it) replaces the one
    before it."""
    out = []
    for fix in fixes:
        if out and fix.gps_utc is not None and out[-1].gps_utc == fix.gps_utc:
            out[-1] = fix
        else:
            out.append(fix)
    return out


def index_of(bus, topic, test, after=-1):
    """The position in ``topic``'s messages of the first one after position ``after`` that passes ``test``."""
    return next((i for i, m in enumerate(bus.messages(topic)) if i > after and test(m)), None)


def wait_index(bus, topic, test, after=-1, timeout=30.0):
    found = bus.wait(lambda w: (i := index_of(w, topic, test, after)) is not None and [i], timeout)
    return found[0] if found else None


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_fixes_on_the_bus_match_the_simulated_route(spawn, tmp_path, watch, transport):
    sim = NmeaSim(spawn, tmp_path, transport, "--rate", 5, "--start-s", 12)
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    assert bus.wait(lambda w: len([m for m in w.messages("gps.fix") if m.data.speed_km_h]) >= 16, 60), reader.text()
    truth = {round(e["utc"], 2): e for e in sim.events("epoch") if e["valid"]}
    # The reader may open the port in the middle of an epoch: its first fix can lack the RMC.
    fixes = one_per_epoch(m.data for m in bus.messages("gps.fix") if m.data.gps_utc is not None)[1:]
    matched = 0
    for fix in fixes:
        epoch = truth.get(round(fix.gps_utc, 2))
        assert epoch is not None, f"a fix at {fix.gps_utc} the simulator never sent"
        assert fix.valid
        assert fix.speed_km_h == pytest.approx(epoch["speed_km_h"], abs=0.01)
        assert fix.lat == pytest.approx(epoch["lat"], abs=2e-6) and fix.lon == pytest.approx(epoch["lon"], abs=2e-6)
        matched += 1
    assert matched >= 15
    speeds = [f.speed_km_h for f in fixes]
    assert max(speeds) - min(speeds) > 5, "the car accelerates in this part of the drive"


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_port_closed_and_reopened_gives_down_then_up_without_a_restart(spawn, tmp_path, watch, transport):
    sim = NmeaSim(spawn, tmp_path, transport, "--fault", "close", "--fault-every", 4, "--fault-limit", 1)
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    assert sim.child.wait_line('"kind": "close"', 60), sim.child.text()
    up = wait_index(bus, "gps.link", lambda m: m.data.state == "up")
    assert up is not None, reader.text()
    down = wait_index(bus, "gps.link", lambda m: m.data.state == "down", after=up)
    assert down is not None, reader.text()
    assert bus.messages("gps.link")[down].data.errors.get("io", 0) >= 1
    assert wait_index(bus, "gps.link", lambda m: m.data.state == "up", after=down) is not None, reader.text()
    fixes_then = len(bus.messages("gps.fix"))
    assert wait_index(bus, "gps.fix", lambda m: m.data.valid, after=fixes_then - 1) is not None
    assert reader.proc.poll() is None


FAULTS = ["bad_checksum", "junk", "drop_sentence", "lose_fix"]


def test_each_injected_fault_is_counted_and_a_lost_fix_is_unknown(spawn, tmp_path, watch):
    faults = [arg for kind in FAULTS for arg in ("--fault", kind)]
    sim = NmeaSim(spawn, tmp_path, "tcp", "--start-s", 20, *faults, "--fault-every", 1, "--fault-limit", len(FAULTS))
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    assert sim.child.wait_line('"kind": "lose_fix"', 60), sim.child.text()
    good = wait_index(bus, "gps.fix", lambda m: m.data.valid and m.data.speed_km_h)
    assert good is not None, reader.text()
    lost = wait_index(bus, "gps.fix", lambda m: not m.data.valid, after=good)
    assert lost is not None, reader.text()
    unknown = bus.messages("gps.fix")[lost].data
    assert unknown.speed_km_h is None and unknown.lat is None
    assert wait_index(bus, "gps.fix", lambda m: m.data.valid and m.data.speed_km_h, after=lost) is not None
    assert [e["kind"] for e in sim.events("fault")] == FAULTS
    # Each bad sentence is counted once, under its kind; a dropped sentence is no error.
    link = bus.wait_message("gps.link", lambda m: m.data.errors.get("checksum") == 1
                            and m.data.errors.get("junk") == 1, 30)
    assert link is not None, bus.messages("gps.link")[-1:]
    assert link.data.bad_sentences == 2 and link.data.state == "up"
    assert set(link.data.errors) == {"checksum", "junk"}


def test_no_sentence_for_three_seconds_means_no_fix_and_speed_unknown(spawn, tmp_path, watch):
    sim = NmeaSim(spawn, tmp_path, "pty", "--start-s", 20)
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    assert bus.wait_message("gps.fix", lambda m: m.data.valid and m.data.speed_km_h, 60), reader.text()
    sim.child.signal(signal.SIGSTOP)  # the receiver goes silent; the port stays open
    stale = bus.wait_message("gps.fix", lambda m: not m.data.valid, 60)
    assert stale is not None and stale.data.speed_km_h is None
    # Not before stale_after_s: the publisher's own times, which a busy machine cannot shorten
    # (the last fix may leave up to the quiet window after its epoch's last sentence).
    last_valid = [m for m in bus.messages("gps.fix") if m.data.valid][-1]
    assert stale.ts - last_valid.ts >= 3.0 - QUIET_MARGIN_S, (stale.ts - last_valid.ts)
    link = bus.wait_message("gps.link", lambda m: m.data.state == "down", 30)
    assert link is not None and link.data.errors.get("timeout") == 1
    sim.child.signal(signal.SIGCONT)
    assert bus.wait_message("gps.fix", lambda m: m.data.valid, 60, after=time.monotonic())


@pytest.mark.parametrize("talk", ["silence", "binary", "text_without_fix"])
def test_a_source_that_never_sends_a_fix_is_reported_down_with_the_reason(spawn, tmp_path, watch, talk):
    # Connected, but: nothing at all; a binary protocol at the wrong baud rate; or sentences that
    # carry no fix. From connecting it goes down after stale_after_s, with speed unknown.
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def peer():
        conn, _ = server.accept()
        with conn:
            while not stop.wait(0.05):
                if talk == "binary":  # no CR or LF in it, so no line ever ends
                    conn.sendall(bytes(b for b in range(256) if b not in (10, 13)) * 4)
                elif talk == "text_without_fix":
                    conn.sendall(b"$GPTXT,01,01,02,ANTSTATUS=OK*3B\r\n")
    threading.Thread(target=peer, daemon=True).start()
    try:
        cfg = write_config(tmp_path / "c.yaml", gps_reader={"source": "tcp", "tcp_host": "127.0.0.1",
                                                            "tcp_port": server.getsockname()[1], "stale_after_s": 1})
        bus = watch([load(cfg).bus.gps_reader], ["gps."])
        reader = spawn(python_module("services.gps_reader", "--config", cfg))
        down = bus.wait_message("gps.link", lambda m: m.data.state == "down", 60)
        assert down is not None, (bus.messages("gps.link")[-1:], reader.text()[-3:])
        if talk == "binary":  # down on the run of bad lines, or on the silence, each saying so
            assert down.data.error.startswith("junk: ") or "unusable line" in down.data.error, down.data.error
        else:
            assert "no NMEA epoch" in down.data.error and down.data.errors.get("timeout") == 1
        fix = bus.wait_message("gps.fix", timeout=60)
        assert fix is not None and not fix.data.valid and fix.data.speed_km_h is None
    finally:
        stop.set()
        server.close()


def _fixes_match_truth(bus, sim, least: int):
    """Every fix after the first (the reader may join mid-epoch) is an epoch the simulator sent,
    valid, with its speed; and at least ``least`` of them."""
    truth = {round(e["utc"], 2): e for e in sim.events("epoch")}
    fixes = one_per_epoch(m.data for m in bus.messages("gps.fix"))[1:]
    for fix in fixes:
        assert fix.valid and fix.gps_utc is not None, fix
        epoch = truth.get(round(fix.gps_utc, 2))
        assert epoch is not None, f"a fix at {fix.gps_utc} the simulator never sent"
        assert fix.speed_km_h == pytest.approx(epoch["speed_km_h"], abs=0.01)
    assert len(fixes) >= least
    return fixes


QUIRKS = [("tcp", ["stall"]), ("tcp", ["ubx"]), ("tcp", ["txt"]), ("tcp", ["pubx"]), ("pty", ["ubx", "stall", "txt"])]


@pytest.mark.parametrize(("transport", "quirks"), QUIRKS, ids=["-".join([t, *q]) for t, q in QUIRKS])
def test_a_real_receivers_stream_gives_every_fix_whole(spawn, tmp_path, watch, transport, quirks):
    # A stall inside a line, a UBX binary frame before the RMC, a text sentence between epochs, a
    # long proprietary sentence: none costs a fix, its speed, or a valid:false fix of its own.
    sim = NmeaSim(spawn, tmp_path, transport, "--start-s", 20, *[a for q in quirks for a in ("--quirk", q)])
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    assert bus.wait(lambda w: len(one_per_epoch(m.data for m in w.messages("gps.fix"))) >= 7, 90), reader.text()
    _fixes_match_truth(bus, sim, 6)
    link = bus.messages("gps.link")[-1].data
    assert set(link.errors) <= ({"junk", "partial"} if "ubx" in quirks else set()), link.errors
    if quirks == ["pubx"]:
        assert link.bad_sentences == 0


def test_a_leap_second_is_a_fix_of_its_own_with_its_time(spawn, tmp_path, watch):
    sim = NmeaSim(spawn, tmp_path, "tcp", "--start-s", 20, "--quirk", "leap")
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    assert bus.wait(lambda w: len(w.messages("gps.fix")) >= 6, 60), reader.text()
    leap = [e for e in sim.events("epoch")][2]  # 23:59:58, 23:59:59, then 23:59:60
    midnight = round(leap["utc"], 2)
    at_midnight = [m.data for m in bus.messages("gps.fix") if m.data.gps_utc is not None
                   and round(m.data.gps_utc, 2) == midnight]
    # 23:59:60 and the 00:00:00 after it are one POSIX second: two fixes, both with the time and speed.
    assert len(at_midnight) >= 2 and all(f.valid and f.speed_km_h is not None for f in at_midnight), at_midnight
    assert all(m.data.gps_utc is not None for m in bus.messages("gps.fix")[1:] if m.data.valid)


def test_week_rollover_dates_are_moved_forward_by_1024_weeks(spawn, tmp_path, watch):
    sim = NmeaSim(spawn, tmp_path, "tcp", "--start-s", 20, "--quirk", "rollover")
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    assert bus.wait(lambda w: len(one_per_epoch(m.data for m in w.messages("gps.fix"))) >= 4, 60), reader.text()
    _fixes_match_truth(bus, sim, 3)
    assert reader.wait_line(r"1 x 1024 weeks behind \(GPS week-number rollover\)", 30), reader.text()
