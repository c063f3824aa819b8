"""One simulated vehicle for both simulators: speed, position and battery power from one model.

A speed profile (breakpoints of time and speed, linear between) is driven along a track (a
closed stadium loop for laps, or an open road); the battery power follows from the road-load
equation: rolling resistance, aerodynamic drag and acceleration at the wheels, through the
drivetrain's efficiency, regeneration (capped) when braking, a constant auxiliary load and, for a
solar car, the array's input. :class:`Drive` integrates it on a fine fixed step from t = 0, so
its state at a time is a function of that time alone: two processes that agree on the start
time see the same car (the PACE simulator its current, the NMEA simulator its speed and
position), and the truth (distance, energy out and in, laps) is exact to the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

G_M_S2 = 9.81
AIR_KG_M3 = 1.2
EARTH_RADIUS_M = 6_371_008.8
STEP_S = 0.01
MAX_CATCH_UP_S = 6 * 3600


@dataclass(frozen=True)
class Vehicle:
    name: str
    mass_kg: float
    rolling_resistance: float  # coefficient
    drag_area_m2: float  # drag coefficient times frontal area
    drivetrain_efficiency: float  # battery to wheel
    regen_efficiency: float  # wheel to battery while braking (0: no regeneration)
    max_regen_w: float
    aux_w: float  # electronics, lights, the computer: drawn all the time
    solar_w: float = 0.0  # the array's power into the battery


VEHICLES = {
    # A single-seat solar car (World Solar Challenge class): light, slippery, a 4 m² array.
    "solar_car": Vehicle("solar_car", 320.0, 0.0045, 0.11, 0.95, 0.80, 3000.0, 40.0, solar_w=800.0),
    # A small city EV or utility vehicle.
    "small_ev": Vehicle("small_ev", 900.0, 0.011, 0.60, 0.88, 0.65, 15_000.0, 250.0),
}


def battery_power_w(v: Vehicle, speed_m_s: float, accel_m_s2: float) -> float:
    """Power out of the battery (negative: into it) at this speed and acceleration."""
    wheel = (v.mass_kg * accel_m_s2 + v.rolling_resistance * v.mass_kg * G_M_S2 * (speed_m_s > 0)) * speed_m_s \
        + 0.5 * AIR_KG_M3 * v.drag_area_m2 * speed_m_s ** 3
    drawn = wheel / v.drivetrain_efficiency if wheel >= 0 else -min(-wheel * v.regen_efficiency, v.max_regen_w)
    return drawn + v.aux_w - v.solar_w


@dataclass(frozen=True)
class Track:
    """A closed stadium (two straights joined by half circles) or an open straight road, laid out
    from ``origin`` (the start line, crossed heading ``heading_deg``)."""

    name: str
    closed: bool
    straight_m: float
    radius_m: float
    origin: tuple[float, float]  # lat, lon of the start
    heading_deg: float

    @property
    def lap_m(self) -> float:
        return 2 * self.straight_m + 2 * math.pi * self.radius_m

    def local(self, s_m: float) -> tuple[float, float, float]:
        """(x along the start heading, y to its left, heading change in rad) at distance s."""
        if not self.closed:
            return s_m, 0.0, 0.0
        s = s_m % self.lap_m
        a, r, bend = self.straight_m, self.radius_m, math.pi * self.radius_m
        if s < a:
            return s, 0.0, 0.0
        if s < a + bend:
            phi = (s - a) / r
            return a + r * math.sin(phi), r * (1 - math.cos(phi)), phi
        if s < 2 * a + bend:
            return a - (s - a - bend), 2 * r, math.pi
        phi = (s - 2 * a - bend) / r
        return -r * math.sin(phi), r * (1 + math.cos(phi)), math.pi + phi

    def position(self, s_m: float) -> tuple[float, float, float]:
        """(lat, lon, course in degrees from north) at distance s along the track."""
        x, y, turn = self.local(s_m)
        h = math.radians(self.heading_deg)
        east = x * math.sin(h) - y * math.cos(h)
        north = x * math.cos(h) + y * math.sin(h)
        lat0, lon0 = self.origin
        lat = lat0 + math.degrees(north / EARTH_RADIUS_M)
        lon = lon0 + math.degrees(east / (EARTH_RADIUS_M * math.cos(math.radians(lat0))))
        return lat, lon, (self.heading_deg - math.degrees(turn)) % 360


TRACKS = {
    # A 1.63 km loop: 500 m straights, 100 m bends (anticlockwise seen from above).
    "loop": Track("loop", True, 500.0, 100.0, (-12.4634, 130.8456), 90.0),
    "road": Track("road", False, 0.0, 0.0, (-12.4634, 130.8456), 45.0),
    # A 0.46 km kart track: a lap in under half a minute, for tests that run in real time.
    "kart": Track("kart", True, 150.0, 25.0, (-12.4634, 130.8456), 90.0),
}

def _half_hour() -> list[tuple[float, float]]:
    """15 minutes at 60 km/h, five slowdowns to 20 km/h and back (regeneration), a stop."""
    points = [(0.0, 0.0), (20.0, 0.0), (80.0, 60.0), (960.0, 60.0)]
    t = 960.0
    for _ in range(5):
        points += [(t + 40, 20.0), (t + 80, 60.0), (t + 140, 60.0)]
        t += 140
    return [*points, (t + 60, 0.0)]


# (seconds, km/h) with eased changes between points (no jump in acceleration, as no car has one); the
# last point is held.
PROFILES = {
    "cruise": [(0.0, 0.0), (15.0, 60.0)],
    "city": [(0.0, 0.0), (10.0, 0.0), (18.0, 50.0), (60.0, 50.0), (66.0, 0.0), (80.0, 0.0)],
    # Stands 5 s, drives about 1.5 km (three laps of the kart track), brakes gently, stands. The
    # ramps are gentle so that one pack's current stays within what a PACE BMS reports.
    "stint": [(0.0, 0.0), (5.0, 0.0), (30.0, 60.0), (100.0, 60.0), (112.0, 0.0)],
    "half_hour": _half_hour(),
}
REPEATING = {"city": 80.0}  # profiles that start over after this many seconds


def profile_speed_m_s(profile: str, t: float) -> float:
    points = PROFILES[profile]
    if profile in REPEATING:
        t %= REPEATING[profile]
    for (t0, v0), (t1, v1) in zip(points, points[1:]):
        if t <= t1:
            eased = (1 - math.cos(math.pi * (max(t, t0) - t0) / (t1 - t0))) / 2
            return (v0 + (v1 - v0) * eased) / 3.6
    return points[-1][1] / 3.6


@dataclass
class Truth:
    t: float = 0.0
    speed_m_s: float = 0.0
    distance_m: float = 0.0
    power_w: float = 0.0
    energy_out_wh: float = 0.0
    energy_in_wh: float = 0.0
    laps: int = 0
    lap_times_s: tuple[float, ...] = ()


class Drive:
    """The vehicle on its track and profile from t = 0; :meth:`at` moves forward only."""

    def __init__(self, vehicle: Vehicle, track: Track, profile: str):
        self.vehicle, self.track, self.profile = vehicle, track, profile
        self.truth = Truth(power_w=battery_power_w(vehicle, 0.0, 0.0))
        self._lap_started: float | None = None

    def at(self, t: float) -> Truth:
        """The state at ``t`` (not before the last asked: the model only moves forward; before 0
        the car stands at the start)."""
        s = self.truth
        while s.t + STEP_S <= t + 1e-9:
            self._step(s.t + STEP_S)
        return s

    def _step(self, t: float) -> None:
        s, v = self.truth, self.vehicle
        speed = profile_speed_m_s(self.profile, t)
        accel = (speed - s.speed_m_s) / STEP_S
        power = battery_power_w(v, speed, accel)
        self._energy(s.power_w, power)
        before = s.distance_m
        s.distance_m += (s.speed_m_s + speed) / 2 * STEP_S
        s.t, s.speed_m_s, s.power_w = t, speed, power
        if self.track.closed:
            self._lap(before, t)

    def _energy(self, p0: float, p1: float) -> None:
        wh = (p0 + p1) / 2 * STEP_S / 3600
        if wh >= 0:
            self.truth.energy_out_wh += wh
        else:
            self.truth.energy_in_wh -= wh

    def _lap(self, before_m: float, t: float) -> None:
        """A lap ends where the distance passes a multiple of the lap length (the start line)."""
        s, lap = self.truth, self.track.lap_m
        if math.floor(s.distance_m / lap) == math.floor(before_m / lap):
            return
        crossed_at = t - STEP_S * (s.distance_m % lap) / max(s.distance_m - before_m, 1e-12)
        if self._lap_started is not None:
            s.laps += 1
            s.lap_times_s = (*s.lap_times_s, crossed_at - self._lap_started)
        self._lap_started = crossed_at


def add_vehicle_arguments(p) -> None:
    """The options both simulators take to drive the same car: with the same ``--drive-start``
    they agree on where it is and what it draws."""
    p.add_argument("--vehicle", choices=sorted(VEHICLES), default=None,
                   help="take speed, position and battery power from this simulated vehicle")
    p.add_argument("--track", choices=sorted(TRACKS), default="loop", help="with --vehicle: where it drives")
    p.add_argument("--profile", choices=sorted(PROFILES), default="city", help="with --vehicle: how it drives")
    p.add_argument("--drive-start", type=float, default=None,
                   help="with --vehicle: the drive's t = 0 as POSIX time (default: when the simulator starts)")


def drive_of(args, now_s: float) -> tuple[Drive, float] | None:
    """(the drive, its start as POSIX time) when ``--vehicle`` was given."""
    if args.vehicle is None:
        return None
    start = args.drive_start if args.drive_start is not None else now_s
    if now_s - start > MAX_CATCH_UP_S:  # the model steps from t = 0: a start days ago would take hours
        raise SystemExit(f"--drive-start {start:.0f} is more than {MAX_CATCH_UP_S / 3600:.0f} h ago")
    return Drive(VEHICLES[args.vehicle], TRACKS[args.track], args.profile), start


def truth_event(drive: Drive, at_s: float) -> dict:
    """The model's truth as a simulator prints it with --events (``t``: POSIX time)."""
    s = drive.truth
    return {"event": "vehicle", "t": round(at_s, 3), "distance_m": round(s.distance_m, 3),
            "energy_out_wh": round(s.energy_out_wh, 4), "energy_in_wh": round(s.energy_in_wh, 4),
            "speed_km_h": round(s.speed_m_s * 3.6, 3), "power_w": round(s.power_w, 2), "laps": s.laps, "lap_times_s": [round(x, 3) for x in s.lap_times_s]}
