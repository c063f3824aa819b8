"""One simulated vehicle behind both simulators, through the real readers and the trip service, in
real time: a stint of about 1.5 km on the kart track (three laps), one pack (a poll cycle of 0.33 s), GPS at
5 Hz. Energy is compared between two moments the car stands (the auxiliary load only), so the
reader's stamp, which follows the reply by a fraction of a second, does not count."""

import json
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


def truth_at(vehicle_events, t):
    """The model's energy at POSIX time t, between the PACE simulator's two nearest reports."""
    before = max((e for e in vehicle_events if e["t"] <= t), key=lambda e: e["t"])
    after = min((e for e in vehicle_events if e["t"] >= t), key=lambda e: e["t"])
    f = 0.0 if after["t"] == before["t"] else (t - before["t"]) / (after["t"] - before["t"])
    return before["energy_out_wh"] + f * (after["energy_out_wh"] - before["energy_out_wh"])


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
