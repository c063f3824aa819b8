"""One simulated vehicle behind both simulators, through the real readers and the trip service.

In real time: a stint of about 1.5 km on the kart track (three laps), one pack (a poll cycle of
0.33 s), GPS at 5 Hz. At 8 times real time (the simulators' --speedup and the services' simulation
section): half an hour on the loop with a BMS outage. Energy is compared between two moments the
car stands (the auxiliary load only), so the reader's stamp, which follows the reply by a fraction
of a second, does not count."""

import json
import signal
import time

import pytest

from common.config import load
from harness.proc import free_port, python_module, wait_for, write_config
from sim.vehicle import TRACKS

STINT_S = 112.0  # the stint profile's end: the car stands after it
START_IN_S = 4.0


def events(child, kind):
    out = []
    for line in child.text("out"):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == kind:
            out.append(event)
    return out


def truth_at(vehicle_events, t, key="energy_out_wh"):
    """The model's ``key`` at POSIX time t, between the PACE simulator's two nearest reports."""
    before = max((e for e in vehicle_events if e["t"] <= t), key=lambda e: e["t"])
    after = min((e for e in vehicle_events if e["t"] >= t), key=lambda e: e["t"])
    f = 0.0 if after["t"] == before["t"] else (t - before["t"]) / (after["t"] - before["t"])
    return before[key] + f * (after[key] - before[key])


def test_a_stint_on_the_kart_track_is_measured_as_the_vehicle_drove_it(spawn, tmp_path, watch):
    kart = TRACKS["kart"]
    bms_port, gps_port = free_port(), free_port()
    start = round(time.time() + START_IN_S, 3)
    car = ["--vehicle", "small_ev", "--track", "kart", "--profile", "stint", "--drive-start", start, "--events"]
    cfg = write_config(tmp_path / "c.yaml",
                       bms_reader={"connection_type": "IP", "bms_ip": "127.0.0.1", "bms_port": bms_port,
                                   "scan_interval": 0},
                       gps_reader={"source": "tcp", "tcp_host": "127.0.0.1", "tcp_port": gps_port},
                       trip={"state_path": str(tmp_path / "trip.db"),
                             "start_line": {"lat": kart.origin[0], "lon": kart.origin[1],
                                            "heading_deg": kart.heading_deg, "width_m": 15}})
    bus = watch([load(cfg).bus.trip], ["trip.state"])
    bms_sim = spawn(python_module("sim.pace_bms", "--tcp", bms_port, *car))
    gps_sim = spawn(python_module("sim.nmea", "--tcp", gps_port, "--rate", 5, *car))
    for name in ("bms_reader", "gps_reader", "trip"):
        spawn(python_module(f"services.{name}", "--config", cfg))
    standing = bus.wait_message("trip.state", lambda m: start - 2.5 <= m.ts <= start - 0.5, START_IN_S + 30)
    assert standing is not None, bus.messages("trip.state")[-1:]
    done = bus.wait_message("trip.state", lambda m: m.ts >= start + STINT_S + 3, STINT_S + 60)
    assert done is not None, (bms_sim.text()[-5:], gps_sim.text()[-5:])
    assert wait_for(lambda: any(e["t"] >= done.ts for e in events(bms_sim, "vehicle")), 30), \
        (done.ts, events(bms_sim, "vehicle")[-1:], bms_sim.text("err")[-5:])
    final = [e for e in events(gps_sim, "epoch") if e.get("valid")][-1]
    s, a = done.data, standing.data
    assert s.distance_km - a.distance_km == pytest.approx(final["distance_m"] / 1000, rel=0.005)
    truth = events(bms_sim, "vehicle")
    energy = truth_at(truth, done.ts) - truth_at(truth, standing.ts)
    assert s.energy_out_wh - a.energy_out_wh == pytest.approx(energy, rel=0.01)
    assert s.laps == final["laps"] >= 2
    assert s.last_lap_s == pytest.approx(final["lap_times_s"][-1], abs=0.2)
    assert s.best_lap_s == pytest.approx(min(final["lap_times_s"]), abs=0.2)
    assert (s.bms_gaps, s.gps_gaps) == (0, 0)


SPEEDUP = 8
HALF_HOUR_STOPPED_S = 1720.0  # the half_hour profile's end: the car stands after it
OUTAGE_AT_S, OUTAGE_WALL_S = 400.0, 3.0  # the BMS is gone 3 s of real time: 24 s of the drive
RANGE_AT_S = 940.0  # near the end of 15 minutes at 60 km/h: the last 5 km all at that cruise


@pytest.mark.slow
def test_half_an_hour_on_the_loop_at_8x_with_a_bms_outage(spawn, tmp_path, watch):
    loop = TRACKS["loop"]
    bms_port, gps_port = free_port(), free_port()
    start = round(time.time() + 3.0, 3)
    car = ["--vehicle", "small_ev", "--track", "loop", "--profile", "half_hour", "--drive-start", start,
           "--speedup", SPEEDUP, "--events"]
    # The wire at the drive's pace too: 9600 baud and 20 ms of BMS thinking, 8 times faster.
    bms_args = python_module("sim.pace_bms", "--tcp", bms_port, "--baud", 9600 * SPEEDUP,
                             "--response-delay-ms", 20 / SPEEDUP, *car)
    cfg = write_config(tmp_path / "c.yaml",
                       simulation={"speedup": SPEEDUP, "start_ts": start},
                       bms_reader={"connection_type": "IP", "bms_ip": "127.0.0.1", "bms_port": bms_port,
                                   "scan_interval": 0, "reopen_max_s": 0.5},
                       gps_reader={"source": "tcp", "tcp_host": "127.0.0.1", "tcp_port": gps_port},
                       # 2 s of real time: a loaded test machine's stall is not a gap
                       trip={"state_path": str(tmp_path / "trip.db"), "max_gap_s": 16,
                             "start_line": {"lat": loop.origin[0], "lon": loop.origin[1],
                                            "heading_deg": loop.heading_deg, "width_m": 15}})
    bus = watch([load(cfg).bus.trip], ["trip.state"])
    first_bms = spawn(bms_args)
    gps_sim = spawn(python_module("sim.nmea", "--tcp", gps_port, "--rate", 1, "--baud", 9600 * SPEEDUP, *car))
    for name in ("bms_reader", "gps_reader", "trip"):
        spawn(python_module(f"services.{name}", "--config", cfg))

    def at_drive_s(t, timeout_s=60.0):
        m = bus.wait_message("trip.state", lambda m: m.ts >= start + t, (start + t - time.time()) / SPEEDUP + timeout_s)
        assert m is not None, (bus.messages("trip.state")[-1:], first_bms.text("err")[-5:], gps_sim.text("err")[-5:])
        return m

    standing = bus.wait_message("trip.state", lambda m: start - 15 <= m.ts <= start - 2 and m.data.power_w, 60)
    assert standing is not None, bus.messages("trip.state")[-1:]
    at_drive_s(OUTAGE_AT_S)
    first_bms.signal(signal.SIGKILL)
    time.sleep(OUTAGE_WALL_S)
    second_bms = spawn(bms_args)
    ranged = at_drive_s(RANGE_AT_S)
    done = at_drive_s(HALF_HOUR_STOPPED_S + 15)
    assert wait_for(lambda: any(e["t"] >= done.ts for e in events(second_bms, "vehicle")), 30)

    before, after = events(first_bms, "vehicle"), events(second_bms, "vehicle")
    truth = before + after
    s, a = done.data, standing.data
    assert s.bms_gaps - a.bms_gaps == 1 and s.bms_gap_s - a.bms_gap_s >= OUTAGE_WALL_S * SPEEDUP
    assert s.gps_gaps == a.gps_gaps
    for key in ("energy_out_wh", "energy_in_wh"):  # what the model drew, less what it drew unseen
        unseen = after[0][key] - before[-1][key]
        expected = truth_at(truth, done.ts, key) - truth_at(truth, standing.ts, key) - unseen
        assert getattr(s, key) - getattr(a, key) == pytest.approx(expected, rel=0.01), key
    assert s.energy_in_wh - a.energy_in_wh > 30, "five slowdowns' regeneration"
    final = [e for e in events(gps_sim, "epoch") if e.get("valid")][-1]
    assert s.distance_km - a.distance_km == pytest.approx(final["distance_m"] / 1000, rel=0.005)
    assert s.laps == final["laps"] >= 10
    # Lap times from 1 Hz fixes whose stamps carry 8 times the reader's real jitter (0.02 s here).
    assert s.last_lap_s == pytest.approx(final["lap_times_s"][-1], abs=0.5)
    assert s.best_lap_s == pytest.approx(min(final["lap_times_s"]), abs=0.5)
    # Range at a constant cruise: what the packs can still deliver at the model's own rate.
    r = min(after, key=lambda e: abs(e["t"] - ranged.ts))
    true_range_km = r["deliverable_wh"] / (r["power_w"] / r["speed_km_h"])
    assert ranged.data.range_km == pytest.approx(true_range_km, rel=0.03)
