"""The simulated vehicle: road-load power, a continuous track, exact truth, the same car for every
process that asks about the same time."""

import math

import pytest

from sim.vehicle import EARTH_RADIUS_M, STEP_S, TRACKS, VEHICLES, Drive, battery_power_w, profile_speed_m_s

EV, SOLAR = VEHICLES["small_ev"], VEHICLES["solar_car"]
LOOP, ROAD = TRACKS["loop"], TRACKS["road"]


def metres(a, b):
    lat = math.radians((a[0] + b[0]) / 2)
    return EARTH_RADIUS_M * math.hypot(math.radians(b[0] - a[0]), math.radians(b[1] - a[1]) * math.cos(lat))


def test_cruise_power_is_the_road_load_through_the_drivetrain():
    v = 60 / 3.6
    wheel = EV.rolling_resistance * EV.mass_kg * 9.81 * v + 0.5 * 1.2 * EV.drag_area_m2 * v ** 3
    assert battery_power_w(EV, v, 0.0) == pytest.approx(wheel / EV.drivetrain_efficiency + EV.aux_w)
    assert 50 < battery_power_w(EV, v, 0.0) / 60 < 90, "a small EV's Wh/km at 60 km/h"
    assert battery_power_w(EV, 0.0, 0.0) == EV.aux_w, "standing: only the auxiliaries"
    assert battery_power_w(SOLAR, v, 0.0) < battery_power_w(SOLAR.__class__(**{**SOLAR.__dict__, "solar_w": 0}), v, 0)


def test_braking_regenerates_up_to_the_cap():
    hard = battery_power_w(EV, 20.0, -5.0)
    assert hard == pytest.approx(-EV.max_regen_w + EV.aux_w)
    gentle = battery_power_w(EV, 10.0, -0.3)
    assert -EV.max_regen_w < gentle - EV.aux_w < 0


def test_the_loop_is_continuous_and_closes():
    lap = LOOP.lap_m
    assert lap == pytest.approx(2 * 500 + 2 * math.pi * 100)
    points = [LOOP.position(s) for s in range(0, int(lap) + 2)]
    steps = [metres(a, b) for a, b in zip(points, points[1:])]
    assert max(steps) < 1.001 and min(steps) > 0.99, "one metre of track is one metre on the map"
    assert metres(LOOP.position(0), LOOP.position(lap)) < 1e-6
    for s in (10.0, 600.0, 800.0, 1500.0):  # the course points where the car goes next
        (lat0, lon0, course), (lat1, lon1, _) = LOOP.position(s), LOOP.position(s + 0.5)
        north, east = lat1 - lat0, (lon1 - lon0) * math.cos(math.radians(lat0))
        assert math.degrees(math.atan2(east, north)) % 360 == pytest.approx(course, abs=1.0)


def test_the_road_goes_straight_along_its_heading():
    lat, lon, course = ROAD.position(1000.0)
    assert metres(ROAD.origin, (lat, lon)) == pytest.approx(1000.0, rel=1e-4) and course == 45.0


def test_distance_energy_and_laps_are_exact_to_the_step():
    drive = Drive(EV, LOOP, "cruise")
    cruising = drive.at(100.0).energy_out_wh
    truth = drive.at(1800.0)
    cruise = 60 / 3.6
    assert truth.distance_m == pytest.approx(15 * cruise / 2 + (1800 - 15) * cruise, rel=1e-6)
    p = battery_power_w(EV, cruise, 0.0)
    assert truth.energy_out_wh - cruising == pytest.approx(p * 1700 / 3600, rel=1e-6)
    assert truth.energy_in_wh == 0
    assert truth.laps == math.floor(truth.distance_m / LOOP.lap_m) - 1, "from the first crossing on"
    assert all(t == pytest.approx(LOOP.lap_m / cruise, abs=2 * STEP_S) for t in truth.lap_times_s)


def test_the_city_profile_stops_and_regenerates():
    drive = Drive(EV, ROAD, "city")
    truth = drive.at(800.0)
    assert 0 < truth.energy_in_wh < truth.energy_out_wh / 2, "a fifth or so comes back when braking"
    assert profile_speed_m_s("city", 5.0) == 0 and profile_speed_m_s("city", 85.0) == 0


def test_the_same_time_is_the_same_car_however_it_was_asked():
    one, other = Drive(SOLAR, LOOP, "city"), Drive(SOLAR, LOOP, "city")
    for t in (0.5, 3.0, 17.25, 100.0, 333.33):
        one.at(t)
    other.at(333.33)
    assert one.truth == other.truth


def test_the_battery_shares_the_vehicles_power_among_its_packs_within_the_sensors_range():
    from sim.battery import Battery
    battery = Battery(packs=2)
    battery.advance(1.0, power_w=5000.0)
    volts = [sum(p.cell_mv()) / 1000 for p in battery.packs]
    assert [p.current_a for p in battery.packs] == [pytest.approx(-2500.0 / v, abs=0.6) for v in volts]
    battery.advance(1.0, power_w=100_000.0)
    assert all(p.current_a == -327.0 for p in battery.packs), "a PACE BMS's current ends at 327.67 A"


def test_a_drive_start_too_long_ago_is_refused():
    import argparse

    from sim.vehicle import MAX_CATCH_UP_S, drive_of
    args = argparse.Namespace(vehicle="small_ev", track="loop", profile="city", drive_start=0.0)
    with pytest.raises(SystemExit, match="more than"):
        drive_of(args, MAX_CATCH_UP_S + 1.0)
    drive, start = drive_of(argparse.Namespace(**{**vars(args), "drive_start": None}), 1000.0)
    assert start == 1000.0 and drive.truth.distance_m == 0
