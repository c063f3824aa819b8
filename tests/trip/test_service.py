"""The trip service as a process on the real bus, fed the simulated vehicle's drive by
harness.vehicle_feed (stamped with the model's time, published twenty times faster), compared
with the model's truth; its counters through kill -9, a reset by command, a damaged file."""

import dataclasses
import json
import signal
import sqlite3
import subprocess
import time

import pytest

from common.config import load
from harness.proc import PY, REPO, python_module, write_config
from services.trip.core import Counters, Laps
from services.trip.store import Store
from sim.vehicle import VEHICLES, battery_power_w

SPEEDUP = 20


def config(tmp_path, **trip):
    return write_config(tmp_path / "c.yaml", trip={"state_path": str(tmp_path / "trip.db"), **trip})


def done(feed, event="done", timeout=120):
    line = feed.wait_line(rf'"event": "{event}"', timeout)
    assert line is not None, feed.text()
    return json.loads(line.string[line.string.index("{"):])


def latest(bus):
    states = bus.messages("trip.state")
    return states[-1].data if states else None


def settled(bus, truth, after):
    """The first trip.state that has seen the drive to its end (published after it was done)."""
    return bus.wait_message("trip.state", lambda m: m.data.total_distance_km >= truth["distance_km"] * 0.999, 30,
                            after=after)


def feed_args(cfg, seconds, *more):
    return python_module("harness.vehicle_feed", "--config", cfg, "--seconds", seconds, "--speedup", SPEEDUP, *more)


def test_a_drive_is_integrated_as_the_vehicle_drove_it(spawn, tmp_path, watch):
    # max_gap_s 30 (model seconds): a busy machine's stall of a second or so (20 s of this feed)
    # is bridged as it would be on the car, while the 40 s BMS outage is a gap.
    cfg = config(tmp_path, max_gap_s=30)
    bus = watch([load(cfg).bus.trip], ["trip.state"])
    trip = spawn(python_module("services.trip", "--config", cfg))
    feed = spawn(feed_args(cfg, 600, "--profile", "cruise", "--bms-outage", "300:340"))
    truth = done(feed)
    state = settled(bus, truth, 0)
    assert state is not None, (latest(bus), trip.text())
    s = state.data
    assert s.distance_km == pytest.approx(truth["distance_km"], rel=0.005)
    assert (s.bms_gaps, s.gps_gaps) == (1, 0) and s.bms_gap_s == pytest.approx(40.0, abs=0.5)
    missing_wh = battery_power_w(VEHICLES["small_ev"], 60 / 3.6, 0.0) * s.bms_gap_s / 3600
    assert s.energy_out_wh == pytest.approx(truth["energy_out_wh"] - missing_wh, rel=0.01), "the gap is not made up"
    assert s.energy_in_wh == 0 and truth["energy_in_wh"] == 0
    assert s.wh_per_km is not None and s.range_km is not None and s.store_state == "ok"


def test_counters_survive_kill_9_and_a_reset_keeps_the_totals(spawn, tmp_path, watch):
    cfg = config(tmp_path)
    bus = watch([load(cfg).bus.trip], ["trip.state"])
    trip = spawn(python_module("services.trip", "--config", cfg))
    feed = spawn(feed_args(cfg, 600, "--profile", "cruise", "--track", "road", "--kill-at-s", 200))
    at = done(feed, "at")
    assert bus.wait_message("trip.state", lambda m: m.data.total_distance_km >= at["distance_km"], 30)
    trip.proc.send_signal(signal.SIGKILL)
    trip.proc.wait(10)
    killed = time.monotonic()
    before = latest(bus).total_distance_km
    again = spawn(python_module("services.trip", "--config", cfg))
    first = bus.wait_message("trip.state", timeout=30, after=killed)  # seq 0 may precede the reconnect
    assert first is not None, again.text()
    # Lost at most the last second of integration (a second of model time is 1/20 s of this feed).
    assert first.data.total_distance_km >= before - 60 / 3.6 / 1000 * SPEEDUP * 1.0
    truth = done(feed)
    moved = truth["distance_km"] - first.data.total_distance_km
    assert moved > 0
    asked = time.monotonic()
    reply = subprocess.run([PY, "-m", "common.command", "--config", str(cfg), "trip", "reset"], cwd=REPO,
                           capture_output=True, text=True, timeout=30)
    assert reply.returncode == 0, reply.stderr
    fresh = bus.wait_message("trip.state", lambda m: m.data.distance_km == 0, 30, after=asked)
    assert fresh is not None and fresh.data.total_distance_km >= first.data.total_distance_km
    assert fresh.data.trip_started_ts is not None
    assert fresh.data.store_state == "ok", "the reset was saved (from the command thread)"


def test_a_damaged_counters_file_is_set_aside_and_named(spawn, tmp_path, watch):
    cfg = config(tmp_path)
    (tmp_path / "trip.db").write_bytes(b"not a database at all " * 100)
    bus = watch([load(cfg).bus.trip], ["trip.state"])
    trip = spawn(python_module("services.trip", "--config", cfg))
    state = bus.wait_message("trip.state", timeout=30)
    assert state is not None, trip.text()
    assert state.data.store_state == "recovered" and ".corrupt-" in state.data.store_error
    assert [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert sqlite3.connect(tmp_path / "trip.db").execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_state_path_that_cannot_be_created_stops_at_start_naming_the_key(tmp_path):
    (tmp_path / "file").write_text("")
    cfg = config(tmp_path, state_path=str(tmp_path / "file" / "trip.db"))
    result = subprocess.run(python_module("services.trip", "--config", cfg), cwd=REPO, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "trip.state_path" in lines[0], result.stderr


def test_after_a_night_switched_off_the_first_state_is_a_new_trip(spawn, tmp_path, watch):
    cfg = config(tmp_path, auto_reset_parked_h=8)
    store = Store(tmp_path / "trip.db")
    parked_since = time.time() - 9 * 3600
    trip = Counters(distance_km=42.0, energy_out_wh=3000.0, started_ts=parked_since - 3600, active_ts=parked_since)
    store.save({"trip": dataclasses.asdict(trip), "total": dataclasses.asdict(Counters(distance_km=1042.0)),
                "laps": dataclasses.asdict(Laps())})
    store.close()
    bus = watch([load(cfg).bus.trip], ["trip.state"])
    child = spawn(python_module("services.trip", "--config", cfg))
    state = bus.wait_message("trip.state", timeout=30)
    assert state is not None, child.text()
    assert state.data.distance_km == 0 and state.data.total_distance_km == 1042.0
    assert state.data.trip_started_ts > parked_since
