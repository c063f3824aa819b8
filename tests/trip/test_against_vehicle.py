"""The trip core fed by the simulated vehicle at the rates the readers publish (a BMS poll every
0.33 s, GPS at 5 Hz), compared with the model's exact truth (the same checks through the real
simulators, readers and trip service: test_vehicle_sims.py)."""

import pytest

from harness.vehicle_feed import events, pack_of
from services.trip.core import Settings, StartLine, Trip
from sim.vehicle import TRACKS, VEHICLES, Drive


def run(vehicle, track, profile, seconds, gps_hz=5.0, bms_s=0.33, start_line=None, outage=None):
    """Fixes and BMS cycles at their own rates, at times that fall anywhere between the profile's
    breakpoints (as real ones do), merged in time order."""
    drive, trip = Drive(VEHICLES[vehicle], TRACKS[track], profile), Trip(Settings(start_line=start_line))
    for t, kind in events(seconds, gps_hz, bms_s):
        truth = drive.at(t)
        if kind == "gps":
            lat, lon, _ = drive.track.position(truth.distance_m)
            trip.fix(t, True, truth.speed_m_s * 3.6, lat, lon)
        elif not (outage and outage[0] <= t < outage[1]):
            trip.bms(t, [pack_of(drive)])
    return drive.truth, trip


@pytest.mark.parametrize("bms_s", [0.33, 0.92])  # the poll cycle of 1 and of 4 packs
def test_distance_and_energy_agree_with_the_model(bms_s):
    truth, trip = run("small_ev", "loop", "city", 1800.0, bms_s=bms_s)
    s = trip.state()
    assert s["distance_km"] == pytest.approx(truth.distance_m / 1000, rel=0.005)
    assert s["energy_out_wh"] == pytest.approx(truth.energy_out_wh, rel=0.01)
    assert s["energy_in_wh"] == pytest.approx(truth.energy_in_wh, rel=0.01)
    assert s["distance_note"] is None and s["distance_source"] == "speed"


def test_range_at_a_constant_cruise_is_the_remaining_distance_at_that_rate():
    truth, trip = run("small_ev", "road", "cruise", 1800.0)
    s = trip.state()
    true_rate = truth.power_w / (truth.speed_m_s * 3.6)  # Wh per km at the cruise
    assert s["wh_per_km_recent"] == pytest.approx(true_rate, rel=0.01)
    assert s["range_km"] == pytest.approx(s["remaining_wh"] / true_rate, rel=0.03)


def test_laps_on_the_loop_are_the_models_within_a_fifth_of_a_second():
    loop = TRACKS["loop"]
    line = StartLine(*loop.origin, heading_deg=loop.heading_deg, width_m=15.0)
    truth, trip = run("solar_car", "loop", "city", 1800.0, start_line=line)
    s = trip.state()
    assert truth.laps >= 5 and s["laps"] == truth.laps
    assert s["last_lap_s"] == pytest.approx(truth.lap_times_s[-1], abs=0.2)
    assert s["best_lap_s"] == pytest.approx(min(truth.lap_times_s), abs=0.2)


def test_a_20_s_bms_outage_is_reported_and_its_energy_not_invented():
    truth, trip = run("small_ev", "road", "cruise", 600.0, outage=(300.0, 320.0))
    s = trip.state()
    lost = truth.power_w * 20 / 3600
    assert s["bms_gaps"] == 1 and s["bms_gap_s"] == pytest.approx(20.0, abs=0.4)
    assert s["energy_out_wh"] == pytest.approx(truth.energy_out_wh - lost, rel=0.01)
    assert s["distance_km"] == pytest.approx(truth.distance_m / 1000, rel=0.005), "the trip goes on"
