"""The trip computer's core, fed event sequences with their times (no processes, no clock)."""

import math

import pytest

from common.messages import Pack
from services.trip.core import (
    EARTH_RADIUS_M,
    Counters,
    Laps,
    Settings,
    StartLine,
    Trip,
    haversine_m,
    pack_energy_wh,
    pack_power_w,
    split_energy_wh,
)

LAT0, LON0 = 51.0, 7.0


def pack(current_a=-10.0, voltage_v=50.0, remaining_ah=100.0, full_ah=200.0, number=1, online=True):
    return Pack(pack=number, online=online, current_a=current_a, voltage_v=voltage_v, remaining_ah=remaining_ah,
                full_ah=full_ah)


def north_of(lat, metres):
    return lat + math.degrees(metres / EARTH_RADIUS_M)


def drive_north(trip, seconds, speed_km_h, power_w=None, t0=0.0, rate_hz=1.0, lat=LAT0, remaining_ah=100.0):
    """A straight drive north at constant speed; power from one pack at 50 V."""
    steps = int(seconds * rate_hz)
    for i in range(steps + 1):
        t = t0 + i / rate_hz
        if power_w is not None:
            trip.bms(t, [pack(current_a=power_w / 50.0, remaining_ah=remaining_ah)])
        trip.fix(t, True, speed_km_h, north_of(lat, speed_km_h / 3.6 * (t - t0)), LON0)
    return t0 + seconds, north_of(lat, speed_km_h / 3.6 * seconds)


def test_pack_power_and_energy_sum_the_online_packs_and_unknown_is_none():
    packs = [pack(-10, 50), pack(-20, 52, number=2), pack(None, None, None, None, number=3, online=False)]
    assert pack_power_w(packs) == pytest.approx(-500 - 1040)
    assert pack_energy_wh(packs) == (pytest.approx(100 * 50 + 100 * 52), pytest.approx(200 * 50 + 200 * 52))
    assert pack_power_w([pack(None)]) is None and pack_power_w([]) is None
    assert pack_energy_wh([pack(remaining_ah=None)]) == (None, None)


def test_energy_across_a_change_of_sign_is_each_sample_held_for_half_the_interval():
    assert split_energy_wh(-100, 300, 2) == (pytest.approx(100 / 3600), pytest.approx(300 / 3600))
    assert split_energy_wh(-100, -300, 1) == (pytest.approx(200 / 3600), 0)
    assert split_energy_wh(50, 50, 36) == (0, pytest.approx(0.5))


def test_an_hour_at_a_constant_discharge_is_its_energy_out():
    trip = Trip(Settings())
    for t in range(3601):
        trip.bms(float(t), [pack(current_a=-20.0)])
    s = trip.state()
    assert s["energy_out_wh"] == pytest.approx(1000.0) and s["energy_in_wh"] == 0
    assert trip.total.energy_out_wh == pytest.approx(1000.0)


def test_a_gap_is_counted_and_not_bridged_and_the_trip_goes_on():
    trip = Trip(Settings(max_gap_s=5))
    for t in range(11):
        trip.bms(float(t), [pack(current_a=-20.0)])
    for t in range(30, 41):  # 20 s without data
        trip.bms(float(t), [pack(current_a=-20.0)])
    s = trip.state()
    assert s["energy_out_wh"] == pytest.approx(1000 * 20 / 3600), "only the 20 s with data"
    assert (s["bms_gaps"], s["bms_gap_s"]) == (1, 20.0)


def test_unknown_power_is_spanned_when_short_and_a_gap_when_long():
    trip = Trip(Settings(max_gap_s=5))
    trip.bms(0.0, [pack(current_a=-20.0)])
    trip.bms(1.0, [pack(current_a=None)])
    trip.bms(2.0, [pack(current_a=-20.0)])
    assert trip.state()["energy_out_wh"] == pytest.approx(2000 / 3600) and trip.state()["bms_gaps"] == 0
    for t in range(3, 12):  # a pack's current unknown for 9 s
        trip.bms(float(t), [pack(current_a=None)])
    trip.bms(12.0, [pack(current_a=-20.0)])
    trip.bms(13.0, [pack(current_a=-20.0)])
    s = trip.state()
    assert s["energy_out_wh"] == pytest.approx(3000 / 3600) and (s["bms_gaps"], s["bms_gap_s"]) == (1, 10.0)


def test_samples_out_of_order_are_not_integrated_twice_and_a_clock_step_back_starts_over():
    trip = Trip(Settings(max_gap_s=5))
    for t in (0.0, 1.0, 2.0, 1.5, 2.0, 3.0):
        trip.bms(t, [pack(current_a=-20.0)])
    assert trip.state()["energy_out_wh"] == pytest.approx(3000 / 3600)
    for t in (-100.0, -99.0):  # the publisher's clock went back
        trip.bms(t, [pack(current_a=-20.0)])
    s = trip.state()
    assert s["energy_out_wh"] == pytest.approx(4000 / 3600) and s["bms_gaps"] == 1


def test_bms_values_older_than_the_gap_limit_are_unknown_not_their_last():
    trip = Trip(Settings(max_gap_s=5))
    trip.bms(0.0, [pack(current_a=-20.0)])
    assert trip.state(now=3.0)["power_w"] == pytest.approx(-1000) and trip.state(now=3.0)["remaining_wh"] == 5000
    stale = trip.state(now=6.0)
    assert (stale["power_w"], stale["remaining_wh"], stale["time_to_empty_s"], stale["range_km"]) == (None,) * 4


def test_distance_is_speed_over_time_checked_against_positions():
    trip = Trip(Settings())
    drive_north(trip, 100, 36.0)
    s = trip.state()
    assert s["distance_km"] == pytest.approx(1.0)
    assert trip.trip.position_km == pytest.approx(1.0, rel=1e-6)
    assert (s["distance_source"], s["distance_note"]) == ("speed", None)
    assert s["laps"] is None, "no start line: laps unknown, not 0"


def test_without_speed_the_positions_give_the_distance():
    trip = Trip(Settings())
    for i in range(101):
        trip.fix(float(i), True, None, north_of(LAT0, 10.0 * i), LON0)
    s = trip.state()
    assert s["distance_km"] == pytest.approx(1.0, rel=1e-6) and s["distance_source"] == "position"


def test_speed_and_positions_that_disagree_are_reported():
    trip = Trip(Settings())
    for i in range(101):  # says 72 km/h, moves at 36
        trip.fix(float(i), True, 72.0, north_of(LAT0, 10.0 * i), LON0)
    s = trip.state()
    assert s["distance_km"] == pytest.approx(2.0) and s["distance_source"] == "speed"
    assert "disagree by +100 %" in s["distance_note"] and "speed used" in s["distance_note"]


def test_invalid_fixes_are_spanned_when_short_and_a_counted_gap_when_long():
    trip = Trip(Settings(max_gap_s=5))
    trip.fix(0.0, True, 36.0, LAT0, LON0)
    trip.fix(1.0, False, None, None, None)
    trip.fix(2.0, True, 36.0, north_of(LAT0, 20), LON0)
    assert trip.state()["distance_km"] == pytest.approx(0.02) and trip.state()["gps_gaps"] == 0
    for t in range(3, 60):  # the receiver lost its fix for most of a minute (gps_reader says valid: false)
        trip.fix(float(t), False, None, None, None)
    trip.fix(60.0, True, 36.0, north_of(LAT0, 600), LON0)
    s = trip.state()
    assert s["distance_km"] == pytest.approx(0.02) and (s["gps_gaps"], s["gps_gap_s"]) == (1, 58.0)


def test_no_rate_and_no_range_before_enough_has_been_seen():
    trip = Trip(Settings(min_rate_km=0.5))
    drive_north(trip, 36, 36.0, power_w=-3600.0)  # 0.36 km at 100 Wh/km
    s = trip.state()
    assert s["wh_per_km"] is None and s["wh_per_km_recent"] is None and s["range_km"] is None
    assert s["time_to_empty_s"] == pytest.approx(5000 / 3600 * 3600), "remaining 5000 Wh at 3600 W"


def test_range_is_the_remaining_energy_at_the_recent_rate():
    trip = Trip(Settings(recent_km=5))
    t, lat = drive_north(trip, 500, 36.0, power_w=-3600.0)  # 5 km at 100 Wh/km
    drive_north(trip, 500, 36.0, power_w=-7200.0, t0=t + 1, lat=lat)  # 5 km at 200 Wh/km
    s = trip.state()
    assert s["wh_per_km"] == pytest.approx(150, rel=0.01)
    assert s["wh_per_km_recent"] == pytest.approx(200, rel=0.02)
    assert s["range_km"] == pytest.approx(5000 / 200, rel=0.02)


def test_regeneration_counts_in_and_lowers_the_net_rate():
    trip = Trip(Settings())
    t, lat = drive_north(trip, 100, 36.0, power_w=-3600.0)
    drive_north(trip, 100, 36.0, power_w=1800.0, t0=t + 1, lat=lat)
    s = trip.state()
    assert s["energy_in_wh"] == pytest.approx(50, rel=0.02) and s["energy_out_wh"] == pytest.approx(100, rel=0.02)
    assert s["wh_per_km"] == pytest.approx(25, rel=0.05)
    assert s["time_to_full_s"] == pytest.approx((10_000 - 5000) / 1800 * 3600) and s["time_to_empty_s"] is None


def circle(lap_s, radius_m, t0, revolutions, rate_hz, phase=-0.1, eastward=True):
    """Fixes around a circle whose southernmost point is the start line's centre, passing it
    eastwards (anticlockwise seen from above) or westwards."""
    n = int(revolutions * lap_s * rate_hz)
    for i in range(n + 1):
        t = t0 + i / rate_hz
        a = phase + 2 * math.pi * (t - t0) / lap_s * (1 if eastward else -1)
        x, y = radius_m * math.sin(a), radius_m * (1 - math.cos(a))
        yield t, north_of(LAT0, y), LON0 + math.degrees(x / (EARTH_RADIUS_M * math.cos(math.radians(LAT0))))


LINE = StartLine(LAT0, LON0, heading_deg=90.0, width_m=20.0)


def test_laps_are_counted_at_the_line_in_its_direction_with_interpolated_times():
    trip = Trip(Settings(start_line=LINE))
    speed = 2 * math.pi * 100 / 60 * 3.6  # one lap of a 100 m radius circle a minute
    for t, lat, lon in circle(60.0, 100.0, 0.0, 3.5, 5.0):
        trip.bms(t, [pack(current_a=-20.0)])
        trip.fix(t, True, speed, lat, lon)
    s = trip.state()
    assert s["laps"] == 3
    assert s["last_lap_s"] == pytest.approx(60.0, abs=0.2) and s["best_lap_s"] == pytest.approx(60.0, abs=0.2)
    assert s["last_lap_wh"] == pytest.approx(1000 / 60, rel=0.02)
    assert s["last_lap_wh_per_km"] == pytest.approx(1000 / 60 / (2 * math.pi * 0.1), rel=0.02)


def test_no_lap_against_the_heading_or_beside_the_line():
    backwards = Trip(Settings(start_line=LINE))
    for t, lat, lon in circle(60.0, 100.0, 0.0, 2.5, 5.0, eastward=False):
        backwards.fix(t, True, 37.7, lat, lon)
    assert backwards.state()["laps"] == 0
    narrow = Trip(Settings(start_line=StartLine(north_of(LAT0, -30), LON0, 90.0, 20.0)))
    for t, lat, lon in circle(60.0, 100.0, 0.0, 2.5, 5.0):
        narrow.fix(t, True, 37.7, lat, lon)
    assert narrow.state()["laps"] == 0


def test_jitter_at_the_line_is_not_a_lap():
    trip = Trip(Settings(start_line=LINE, min_lap_s=10))
    for i in range(40):  # standing on the line, the position hopping 1 m either side
        trip.fix(float(i), True, 0.0, LAT0, LON0 + math.degrees((1 if i % 2 else -1) /
                                                                 (EARTH_RADIUS_M * math.cos(math.radians(LAT0)))))
    assert trip.laps.started_t is not None, "the first crossing starts a lap"
    assert trip.state()["laps"] == 0


def test_reset_starts_a_new_trip_and_the_total_goes_on():
    trip = Trip(Settings())
    drive_north(trip, 100, 36.0, power_w=-3600.0)
    trip.reset(1_000_000.0)
    s = trip.state()
    assert s["distance_km"] == 0 and s["energy_out_wh"] == 0 and s["trip_started_ts"] == 1_000_000.0
    assert s["total_distance_km"] == pytest.approx(1.0) and s["total_energy_out_wh"] == pytest.approx(100, rel=0.02)


def test_parked_for_long_enough_asks_for_a_new_trip_even_across_a_restart():
    trip = Trip(Settings(auto_reset_parked_h=1.0))
    t, _ = drive_north(trip, 100, 36.0, power_w=-3600.0)
    for i in range(1, 3600, 60):
        trip.bms(t + i, [pack(current_a=0.0)])
        trip.fix(t + i, True, 0.2, LAT0, LON0)
        assert not trip.parked_too_long(t + i)
    assert trip.parked_too_long(t + 3601)
    saved = trip.saved()  # switched off for the night: no messages at all
    again = Trip(Settings(auto_reset_parked_h=1.0), Counters(**saved["trip"]), Counters(**saved["total"]))
    assert not again.parked_too_long(t + 1800) and again.parked_too_long(t + 8 * 3600)
    charging = Trip(Settings(auto_reset_parked_h=1.0))
    t, _ = drive_north(charging, 100, 36.0, power_w=-3600.0)
    for i in range(1, 7200, 60):
        charging.bms(t + i, [pack(current_a=20.0)])
    assert not charging.parked_too_long(t + 7200), "current flowing: not parked"


def test_the_counters_survive_through_what_the_shell_saves():
    trip = Trip(Settings(start_line=LINE))
    drive_north(trip, 100, 36.0, power_w=-3600.0)
    saved = trip.saved()
    again = Trip(Settings(start_line=LINE), Counters(**saved["trip"]), Counters(**saved["total"]),
                 Laps(**saved["laps"]))
    keys = ("distance_km", "energy_out_wh", "energy_in_wh", "total_distance_km", "laps", "bms_gaps")
    assert {k: again.state()[k] for k in keys} == {k: trip.state()[k] for k in keys}


def test_haversine_against_a_known_distance():
    assert haversine_m(0, 0, 0, 1) == pytest.approx(2 * math.pi * EARTH_RADIUS_M / 360)


def test_no_lap_is_taken_across_a_fix_outage():
    trip = Trip(Settings(start_line=LINE, max_gap_s=5))
    for t, lat, lon in circle(60.0, 100.0, 0.0, 3.5, 5.0):
        lost = 45.0 <= t < 75.0  # the fix is lost while the car passes the line at 61 s
        trip.fix(t, not lost, None if lost else 37.7, None if lost else lat, None if lost else lon)
    s = trip.state()
    assert s["gps_gaps"] == 1 and s["laps"] == 1, "only the lap from 121 s to 181 s"
    assert s["last_lap_s"] == pytest.approx(60.0, abs=0.2)


def test_a_charge_taken_standing_counts_in_but_not_in_the_rates():
    trip = Trip(Settings())
    t, lat = drive_north(trip, 500, 36.0, power_w=-3600.0)  # 5 km at 100 Wh/km
    for i in range(1, 1801):  # half an hour on a 2 kW charger
        trip.bms(t + i, [pack(current_a=2000 / 50.0)])
        trip.fix(t + i, True, 0.0, lat, LON0)
    drive_north(trip, 100, 36.0, power_w=-3600.0, t0=t + 1801, lat=lat)
    s = trip.state()
    assert s["energy_in_wh"] == pytest.approx(1000, rel=0.01)
    assert s["wh_per_km"] == pytest.approx(100, rel=0.02) and s["wh_per_km_recent"] == pytest.approx(100, rel=0.02)


def test_the_cars_own_load_standing_is_parked_but_a_charge_is_not():
    trip = Trip(Settings(auto_reset_parked_h=1.0, parked_current_a=5.0))
    t, _ = drive_north(trip, 100, 36.0, power_w=-3600.0)
    for i in range(1, 3700, 10):  # switched on, standing: 4 A of lights and electronics
        trip.bms(t + i, [pack(current_a=-4.0)])
        trip.fix(t + i, True, 0.3, LAT0, LON0)
    assert trip.parked_too_long(t + 3700)


def test_a_car_standing_behind_the_line_starts_its_first_lap_when_it_crosses_for_real():
    trip = Trip(Settings(start_line=LINE, min_lap_s=10, min_lap_km=0.1))
    metre = math.degrees(1 / (EARTH_RADIUS_M * math.cos(math.radians(LAT0))))
    for i in range(600):  # two minutes on the grid, 1 m behind the line, the fix wandering 1.5 m
        trip.fix(i / 5, True, 0.0, LAT0, LON0 + metre * (-1 + (1.5 if i % 7 == 3 else 0)))
    for t, lat, lon in circle(60.0, 100.0, 120.0, 1.2, 5.0, phase=-0.01):
        trip.fix(t, True, 37.7, lat, lon)
    s = trip.state()
    assert s["laps"] == 1 and s["last_lap_s"] == pytest.approx(60.0, abs=0.2), "not 2 minutes of standing"


def test_a_bms_outage_does_not_make_the_car_look_frugal():
    """Distance goes on while the BMS is lost and its energy is not known: that distance is kept
    out of the rates, so the range after the outage is still the remaining energy at 100 Wh/km."""
    trip = Trip(Settings(recent_km=5, max_gap_s=5))
    for i in range(1001):  # 10 km at 36 km/h and 100 Wh/km; the BMS silent from 300 s to 600 s
        t = float(i)
        if not 300 < t < 600:
            trip.bms(t, [pack(current_a=-3600.0 / 50)])
        trip.fix(t, True, 36.0, north_of(LAT0, 10 * t), LON0)
    s = trip.state()
    assert (s["bms_gaps"], s["bms_gap_s"]) == (1, 300.0)
    assert s["distance_km"] == pytest.approx(10.0) and s["energy_out_wh"] == pytest.approx(700, rel=0.01)
    assert s["wh_per_km"] == pytest.approx(100, rel=0.01) and s["wh_per_km_recent"] == pytest.approx(100, rel=0.01)
    assert s["range_km"] == pytest.approx(5000 / 100, rel=0.01)


def test_a_fix_outage_does_not_make_the_car_look_thirsty_nor_does_energy_before_the_first_fix():
    trip = Trip(Settings(recent_km=5, max_gap_s=5))
    for i in range(1001):  # the car stands 100 s with the lights on before the GPS has a fix
        t = float(i)
        trip.bms(t, [pack(current_a=(-3600.0 if t >= 100 else -500.0) / 50)])
        lost = t < 100 or 400 < t < 700
        trip.fix(t, not lost, None if lost else 36.0, None if lost else north_of(LAT0, 10 * t), LON0)
    s = trip.state()
    assert s["gps_gaps"] == 1 and s["distance_km"] == pytest.approx(6.0)
    assert s["wh_per_km"] == pytest.approx(100, rel=0.01) and s["wh_per_km_recent"] == pytest.approx(100, rel=0.01)


def test_a_lap_with_a_bms_gap_in_it_has_a_time_but_no_energy():
    trip = Trip(Settings(start_line=LINE, max_gap_s=5))
    speed = 2 * math.pi * 100 / 60 * 3.6
    for t, lat, lon in circle(60.0, 100.0, 0.0, 2.5, 5.0):
        if not 70 <= t < 90:  # the second lap (from 61 s to 121 s) loses the BMS for 20 s
            trip.bms(t, [pack(current_a=-20.0)])
        trip.fix(t, True, speed, lat, lon)
        if 100 < t < 101:
            assert trip.state()["laps"] == 1 and trip.state()["last_lap_wh"] == pytest.approx(1000 / 60, rel=0.02)
    s = trip.state()
    assert s["laps"] == 2 and s["last_lap_s"] == pytest.approx(60.0, abs=0.2)
    assert s["last_lap_wh"] is None and s["last_lap_wh_per_km"] is None


def test_a_pack_that_drops_out_for_a_cycle_is_unknown_not_zero():
    blip, gone = Trip(Settings(max_gap_s=5)), Trip(Settings(max_gap_s=5))
    for t in range(101):  # two packs at 1 kW each; pack 2 is not reported at 50 s (and, for gone, after)
        both = [pack(current_a=-20.0), pack(current_a=-20.0, number=2)]
        missing = [both[0], pack(None, None, None, None, number=2, online=False)]
        blip.bms(float(t), missing if t == 50 else both)
        gone.bms(float(t), missing if t >= 50 else both)
    assert blip.state()["energy_out_wh"] == pytest.approx(2000 * 100 / 3600)
    assert blip.state()["bms_gaps"] == 0
    s = gone.state()
    assert s["energy_out_wh"] == pytest.approx((2000 * 49 + 1500 * 2 + 1000 * 49) / 3600), \
        "both packs to 49 s, then the one left (the interval over the drop shared)"
    assert s["bms_gaps"] == 0
