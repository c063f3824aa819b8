"""gps_reader against the NMEA simulator in another process, on a real pty and on TCP."""

import json
import signal
import time

import pytest

from common.config import load
from harness.proc import free_port, python_module, write_config


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
        assert self.child.wait_line('"event": "listening"', 10), self.child.text()

    def events(self, kind):
        return [e for e in map(json.loads, self.child.text("out")) if e["event"] == kind]


def start_reader(spawn, tmp_path, sim, watch, **section):
    cfg = write_config(tmp_path / "c.yaml", gps_reader={**sim.section, **section})
    bus = watch([load(cfg).bus.gps_reader], ["gps."])
    return spawn(python_module("services.gps_reader", "--config", cfg)), bus


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_fixes_on_the_bus_match_the_simulated_route(spawn, tmp_path, watch, transport):
    sim = NmeaSim(spawn, tmp_path, transport, "--rate", 5, "--start-s", 12)
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    assert bus.wait(lambda w: len([m for m in w.messages("gps.fix") if m.data.speed_km_h]) >= 16, 30), reader.text()
    truth = {round(e["utc"], 2): e for e in sim.events("epoch") if e["valid"]}
    # The reader may open the port in the middle of an epoch: its first fix can lack the RMC.
    fixes = [m.data for m in bus.messages("gps.fix") if m.data.gps_utc is not None][1:]
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
    sim = NmeaSim(spawn, tmp_path, transport, "--fault", "close", "--fault-every", 4)
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    assert sim.child.wait_line('"kind": "close"', 20)
    closed = time.monotonic()
    down = bus.wait_message("gps.link", lambda m: m.data.state == "down", 10, after=closed - 0.5)
    assert down is not None and down.data.errors.get("io", 0) >= 1, reader.text()
    up = bus.wait_message("gps.link", lambda m: m.data.state == "up", 15, after=closed)
    assert up is not None, reader.text()
    assert bus.wait_message("gps.fix", lambda m: m.data.valid, 10, after=time.monotonic())
    assert reader.proc.poll() is None


def test_each_injected_fault_is_counted_and_a_lost_fix_is_unknown(spawn, tmp_path, watch):
    sim = NmeaSim(spawn, tmp_path, "tcp", "--start-s", 20, "--fault", "bad_checksum", "--fault", "junk",
                  "--fault", "drop_sentence", "--fault", "lose_fix", "--fault-every", 2)
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    assert sim.child.wait_line('"kind": "lose_fix"', 30)
    lost = time.monotonic()
    unknown = bus.wait_message("gps.fix", lambda m: not m.data.valid, 10, after=lost - 0.5)
    assert unknown is not None and unknown.data.speed_km_h is None and unknown.data.lat is None
    recovered = bus.wait_message("gps.fix", lambda m: m.data.valid and m.data.speed_km_h, 15, after=time.monotonic())
    assert recovered is not None
    faults = [e["kind"] for e in sim.events("fault")]
    link = bus.wait_message("gps.link", timeout=5, after=time.monotonic()).data
    assert link.errors.get("checksum", 0) == faults.count("bad_checksum")
    assert link.errors.get("junk", 0) == faults.count("junk")
    assert link.bad_sentences == faults.count("bad_checksum") + faults.count("junk")
    assert link.state == "up"


def test_no_sentence_for_three_seconds_means_no_fix_and_speed_unknown(spawn, tmp_path, watch):
    sim = NmeaSim(spawn, tmp_path, "pty", "--start-s", 20)
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    assert bus.wait_message("gps.fix", lambda m: m.data.valid and m.data.speed_km_h, 20), reader.text()
    sim.child.signal(signal.SIGSTOP)  # the receiver goes silent; the port stays open
    silent = time.monotonic()
    stale = bus.wait_message("gps.fix", lambda m: not m.data.valid, 10, after=silent)
    assert stale is not None and stale.data.speed_km_h is None
    waited = [t for t, m in bus.items("gps.fix") if m is stale][0] - silent
    assert 2.5 < waited < 5.0, f"stale after {waited:.1f} s, expected about 3 s"
    link = bus.wait_message("gps.link", lambda m: m.data.state == "down", 5, after=silent)
    assert link is not None and link.data.errors.get("timeout") == 1
    sim.child.signal(signal.SIGCONT)
    assert bus.wait_message("gps.fix", lambda m: m.data.valid, 10, after=time.monotonic())
