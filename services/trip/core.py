"""The trip computer's core (pure: no I/O, no clock of its own; the shell feeds it bus messages
with their times and persists its counters).

* **Energy** is integrated from pack power (the sum over online packs) with the trapezoid rule
  and split between discharge (``energy_out_wh``) and charge or regeneration (``energy_in_wh``)
  (:func:`split_energy_wh`). Two samples further apart than ``max_gap_s`` are not bridged: the gap is
  counted and its length reported. A cycle in which an online pack has no current or voltage is
  unknown power: nothing is integrated up to it.
* **Distance** is GPS speed integrated over time while the fix is valid (Doppler speed does not
  add up the position noise of a slow or standing car); the distance between fixes is summed
  over the same intervals as the check, and used instead where a receiver gives positions but no
  speed. ``distance_source`` and ``distance_note`` say which was used and by how much they
  disagree.
* **Rates**: the trip average and the recent rate (the last ``recent_km``) are net energy (out
  less in) per km, None until ``min_rate_km`` and ``min_rate_wh`` have been seen. Range is the
  packs' remaining energy (remaining Ah times voltage) at the recent rate; an LFP pack's voltage
  falls towards empty, so that reads about 2 % long at 60 % charge and 6 % at 10 % (the curve
  below its present charge is not known here). What one stream added
  while the other was in a gap (distance with no energy, energy with no distance) is kept out of
  the rates (``unrated_km``, ``unrated_wh``): a BMS outage must not make the car look frugal.
* **Laps** (:class:`LapCounter`): a lap ends where the track crosses the start line in its
  heading's direction within its width; the crossing time is interpolated between fixes.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_008.8
PARKED_KM_H = 1.0  # slower than this counts as standing (GPS speed noise of a parked car)
RECENT_STEP_KM = 0.05  # the recent window's resolution


@dataclass(frozen=True)
class StartLine:
    lat: float
    lon: float
    heading_deg: float  # the direction a lap crosses it in, degrees clockwise from north
    width_m: float


@dataclass(frozen=True)
class Settings:
    max_gap_s: float = 5.0
    recent_km: float = 5.0
    min_rate_km: float = 0.5
    min_rate_wh: float = 5.0
    idle_w: float = 20.0  # |power| under this is neither charging nor discharging
    parked_current_a: float = 5.0  # standing with no more current than this (the car's own load) is parked
    disagree_pct: float = 10.0  # speed and position distances further apart than this are reported
    auto_reset_parked_h: float | None = 8.0
    min_lap_s: float = 10.0  # a lap shorter than this, or than min_lap_km, is GPS jitter at the line
    min_lap_km: float = 0.1
    start_line: StartLine | None = None


@dataclass
class Counters:
    """What survives a restart: a trip's, or the total's (which never resets)."""

    distance_km: float = 0.0
    energy_out_wh: float = 0.0
    energy_in_wh: float = 0.0
    position_km: float = 0.0  # distance between fixes over the intervals speed was integrated on
    charged_standing_wh: float = 0.0  # of energy_in_wh, what came in while the car stood (a charger, the sun)
    speed_km: float = 0.0  # the part of distance_km from speed (the rest came from positions)
    unrated_km: float = 0.0  # distance over a BMS gap: no energy is known for it
    unrated_wh: float = 0.0  # net energy over a GPS gap: no distance is known for it
    started_ts: float | None = None
    active_ts: float | None = None  # when the car last moved or drew or took current
    bms_gaps: int = 0
    bms_gap_s: float = 0.0
    gps_gaps: int = 0
    gps_gap_s: float = 0.0

    @property
    def net_wh(self) -> float:
        return self.energy_out_wh - self.energy_in_wh

    @property
    def drive_net_wh(self) -> float:
        """Net energy the rates go by: a charge taken standing is not driving."""
        return self.net_wh + self.charged_standing_wh

    @property
    def rated(self) -> tuple[float, float]:
        """(km, net Wh) over the intervals both the GPS and the BMS saw: what a rate divides."""
        return self.distance_km - self.unrated_km, self.drive_net_wh - self.unrated_wh


@dataclass
class Laps:
    count: int = 0
    last_s: float | None = None
    best_s: float | None = None
    last_wh: float | None = None
    last_wh_per_km: float | None = None
    started_t: float | None = None  # the crossing that began the lap under way
    started_km: float = 0.0
    started_wh: float = 0.0
    started_bms_gaps: int = 0  # a lap with a BMS gap in it has no energy figure


def pack_power_w(packs: Iterable) -> float | None:
    """Sum of the online packs' power; None when an online pack's current or voltage is unknown
    or no pack is online."""
    total, online = 0.0, 0
    for p in packs:
        if not p.online:
            continue
        if p.current_a is None or p.voltage_v is None:
            return None
        total += p.current_a * p.voltage_v
        online += 1
    return total if online else None


def pack_current_a(packs: Iterable) -> float | None:
    """Sum of the online packs' current; None when one is unknown or no pack is online."""
    currents = [p.current_a for p in packs if p.online]
    return None if not currents or None in currents else sum(currents)


def pack_energy_wh(packs: Iterable) -> tuple[float | None, float | None]:
    """(remaining, full) energy of the online packs in Wh; None when a figure is unknown."""
    remaining = full = 0.0
    online = 0
    for p in packs:
        if not p.online:
            continue
        if p.voltage_v is None or p.remaining_ah is None:
            return None, None
        remaining += p.remaining_ah * p.voltage_v
        full = None if full is None or p.full_ah is None else full + p.full_ah * p.voltage_v
        online += 1
    return (remaining, full) if online else (None, None)


def split_energy_wh(p0: float, p1: float, dt_s: float) -> tuple[float, float]:
    """(out, in) energy between samples of p0 and p1 W dt_s apart (negative = out): the trapezoid
    while the sign holds; across a change of sign each sample holds for half the interval, since
    braking or lifting off switches the power within milliseconds (a linear ramp through zero
    would take a share of both the discharge and the regeneration away; the net is the same)."""
    if p0 * p1 < 0:
        parts = (p0 * dt_s / 2, p1 * dt_s / 2)
    else:
        parts = ((p0 + p1) * dt_s / 2,)
    out = -sum(a for a in parts if a < 0) / 3600
    into = sum(a for a in parts if a > 0) / 3600
    return out, into


def haversine_m(lat0: float, lon0: float, lat1: float, lon1: float) -> float:
    p0, p1 = math.radians(lat0), math.radians(lat1)
    a = math.sin((p1 - p0) / 2) ** 2 + math.cos(p0) * math.cos(p1) * math.sin(math.radians(lon1 - lon0) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


class LapCounter:
    """Crossings of the start line in its heading's direction, on a local flat projection
    around the line's centre (a track is a few km across at most)."""

    def __init__(self, line: StartLine):
        self.line = line
        h = math.radians(line.heading_deg)
        self._along, self._across = (math.sin(h), math.cos(h)), (math.cos(h), -math.sin(h))
        self._cos_lat = math.cos(math.radians(line.lat))
        self._last: tuple[float, float, float] | None = None  # (t, along, across)

    def _local(self, lat: float, lon: float) -> tuple[float, float]:
        x = math.radians(lon - self.line.lon) * EARTH_RADIUS_M * self._cos_lat
        y = math.radians(lat - self.line.lat) * EARTH_RADIUS_M
        return x * self._along[0] + y * self._along[1], x * self._across[0] + y * self._across[1]

    def crossing(self, t: float, lat: float, lon: float) -> tuple[float, float] | None:
        """(time of the crossing, fraction of the way from the previous fix) when the step from
        the previous fix to this one crossed the line forwards, else None."""
        along, across = self._local(lat, lon)
        last, self._last = self._last, (t, along, across)
        if last is None or not (last[1] < 0 <= along):
            return None
        f = -last[1] / (along - last[1])
        if abs(last[2] + f * (across - last[2])) > self.line.width_m / 2:
            return None
        return last[0] + f * (t - last[0]), f

    def forget(self) -> None:
        """A gap in the fixes: the next fix starts afresh (no crossing across the gap)."""
        self._last = None


class Trip:
    """Feed :meth:`bms` and :meth:`fix` in time order (seconds, any clock); read :meth:`state`."""

    def __init__(self, settings: Settings, trip: Counters | None = None, total: Counters | None = None,
                 laps: Laps | None = None):
        self.settings = settings
        self.trip = trip or Counters()
        self.total = total or Counters()
        self.laps = laps or Laps()
        self._line = None if settings.start_line is None else LapCounter(settings.start_line)
        self._power: tuple[float, float] | None = None  # (t, W) of the last sample integrated from
        self._fix: tuple[float, float | None, float | None, float | None] | None = None  # t, speed, lat, lon
        self._recent: deque[tuple[float, float]] = deque()  # (trip km, trip net Wh)
        self.power_w: float | None = None
        self.remaining_wh: float | None = None
        self.full_wh: float | None = None
        self._speed_km_h: float | None = None
        self._current_a: float | None = None
        self._bms_t: float | None = None  # the newest BMS sample's time, for staleness
        self._online: frozenset[int] | None = None  # the packs online in the last BMS sample
        self._km_at_bms = self.trip.distance_km  # the trip's distance at the last BMS sample
        self._wh_at_fix = self.trip.drive_net_wh  # its net energy at the last valid fix

    # -- input -------------------------------------------------------------------------------

    def bms(self, t: float, packs: list) -> None:
        ref = self._reference(self._power, t, "bms")
        if ref is False:
            return
        online = frozenset(p.pack for p in packs if p.online)
        # A pack that was online and drops out is unknown for this sample, not a pack drawing
        # nothing: the next sample spans it (a blip), or starts from the packs still there.
        dropped = self._online is not None and not online >= self._online
        self._online = online
        power = None if dropped else pack_power_w(packs)
        self.power_w, self._bms_t, self._current_a = power, t, pack_current_a(packs)
        self.remaining_wh, self.full_wh = pack_energy_wh(packs)
        if power is None:  # unknown: the next known sample spans the interval, or counts the gap
            self._power = ref
            return
        self._note_parked(t)
        self._power = (t, power)
        dt = self._interval(ref, t, "bms")
        self._km_at_bms = self.trip.distance_km
        if dt is None:
            return
        out, into = split_energy_wh(ref[1], power, dt)
        standing = self._speed_km_h is None or self._speed_km_h < PARKED_KM_H
        for c in (self.trip, self.total):
            c.energy_out_wh += out
            c.energy_in_wh += into
            c.charged_standing_wh += into if standing else 0.0

    def fix(self, t: float, valid: bool, speed_km_h: float | None, lat: float | None, lon: float | None) -> None:
        ref = self._reference(self._fix, t, "gps")
        if ref is False:
            return
        self._speed_km_h = speed_km_h if valid else None
        if not valid:  # no data: the next valid fix spans the interval, or counts the gap
            self._fix = ref
            return
        self._note_parked(t)
        self._fix = (t, speed_km_h, lat, lon)
        dt = self._interval(ref, t, "gps")
        self._wh_at_fix = self.trip.drive_net_wh
        if dt is None:
            return
        before_km, before_wh = self.trip.distance_km, self.trip.drive_net_wh
        self._add_distance(ref, self._fix, dt)
        self._lap(t, lat, lon, before_km, before_wh)
        self._note_recent()

    def reset(self, now_ts: float) -> None:
        """A new trip (by command, or after the car was parked): the total goes on."""
        self.trip = Counters(started_ts=now_ts)
        self.laps = Laps()
        self._recent.clear()
        self._km_at_bms = self._wh_at_fix = 0.0

    def parked_too_long(self, t: float) -> bool:
        """Whether the car has stood (no speed, no current) for ``auto_reset_parked_h`` with a
        trip under way; the time it last did something is saved, so a night with the computer
        switched off counts too."""
        limit, active = self.settings.auto_reset_parked_h, self.trip.active_ts
        return limit is not None and active is not None and self.trip.distance_km > 0 and t - active >= limit * 3600

    # -- integration -------------------------------------------------------------------------

    def _reference(self, ref: tuple | None, t: float, which: str) -> tuple | None | bool:
        """The sample to integrate from, or False to drop this one: a sample no later than the
        reference has been integrated already (a repeat, or two publishers' messages crossing).
        One far older is the publisher's clock stepped back: counted as a gap, and it starts over."""
        if ref is None or t > ref[0]:
            return ref
        if ref[0] - t <= self.settings.max_gap_s:
            return False
        self._count_gap(which, 0.0)
        return None

    def _interval(self, last: tuple | None, t: float, which: str) -> float | None:
        """Seconds to integrate over since the last sample; None after none, or across a gap
        (counted; a lap is not taken across it either)."""
        if last is None:
            self._unrate(which)
            return None
        dt = t - last[0]
        if dt <= self.settings.max_gap_s:
            return dt
        self._count_gap(which, dt)
        self._unrate(which)
        if which == "gps" and self._line is not None:
            self._line.forget()
            self.laps.started_t = None  # a lap with a hole in its track is no lap: the next crossing starts one
        return None

    def _unrate(self, which: str) -> None:
        """Since the last sample of ``which`` (or the start) the other stream went on alone: the
        distance since the last BMS sample has no energy to go with it, the energy since the last
        fix no distance."""
        if which == "bms":
            self.trip.unrated_km += self.trip.distance_km - self._km_at_bms
        else:
            self.trip.unrated_wh += self.trip.drive_net_wh - self._wh_at_fix

    def _count_gap(self, which: str, dt: float) -> None:
        for c in (self.trip, self.total):
            setattr(c, f"{which}_gaps", getattr(c, f"{which}_gaps") + 1)
            setattr(c, f"{which}_gap_s", getattr(c, f"{which}_gap_s") + dt)

    def _add_distance(self, last: tuple, now: tuple, dt: float) -> None:
        step_pos = None
        if None not in (last[2], last[3], now[2], now[3]):
            step_pos = haversine_m(last[2], last[3], now[2], now[3]) / 1000
        if last[1] is not None and now[1] is not None:
            step = (last[1] + now[1]) / 2 * dt / 3600
            for c in (self.trip, self.total):
                c.distance_km += step
                c.speed_km += step
                c.position_km += step_pos if step_pos is not None else step
        elif step_pos is not None:
            for c in (self.trip, self.total):
                c.distance_km += step_pos
                c.position_km += step_pos

    def _lap(self, t: float, lat: float | None, lon: float | None, before_km: float, before_wh: float) -> None:
        if self._line is None or lat is None or lon is None:
            return
        crossed = self._line.crossing(t, lat, lon)
        if crossed is None:
            return
        at, f = crossed
        km = before_km + f * (self.trip.distance_km - before_km)
        wh = before_wh + f * (self.trip.drive_net_wh - before_wh)
        laps = self.laps
        too_short = laps.started_t is not None and (at - laps.started_t < self.settings.min_lap_s
                                                    or km - laps.started_km < self.settings.min_lap_km)
        if laps.started_t is not None and not too_short:
            self._count_lap(at, km, wh)
        # A crossing too soon after the last (GPS jitter at the line, manoeuvring) moves the start
        # of the lap under way there: a car that stood just behind the line starts when it leaves.
        laps.started_t, laps.started_km, laps.started_wh = at, km, wh
        laps.started_bms_gaps = self.trip.bms_gaps

    def _count_lap(self, at: float, km: float, wh: float) -> None:
        laps = self.laps
        laps.count += 1
        laps.last_s = at - laps.started_t
        laps.best_s = laps.last_s if laps.best_s is None else min(laps.best_s, laps.last_s)
        lap_km = km - laps.started_km
        known = self.trip.bms_gaps == laps.started_bms_gaps
        laps.last_wh = wh - laps.started_wh if known else None
        laps.last_wh_per_km = laps.last_wh / lap_km if known and lap_km > 0 else None

    def _note_recent(self) -> None:
        d, wh = self.trip.rated
        if not self._recent or d - self._recent[-1][0] >= RECENT_STEP_KM:
            self._recent.append((d, wh))
        while len(self._recent) > 1 and d - self._recent[1][0] >= self.settings.recent_km:
            self._recent.popleft()

    def _note_parked(self, t: float) -> None:
        fresh = self._fix is not None and t - self._fix[0] <= self.settings.max_gap_s
        speed = self._speed_km_h if fresh else None
        standing = speed is None or speed < PARKED_KM_H
        idle = self._current_a is None or abs(self._current_a) <= self.settings.parked_current_a
        if not (standing and idle):
            self.trip.active_ts = t

    # -- output ------------------------------------------------------------------------------

    def _rate(self, km: float, wh: float) -> float | None:
        s = self.settings
        if km < s.min_rate_km or abs(wh) < s.min_rate_wh:
            return None
        return wh / km

    def wh_per_km(self) -> float | None:
        return self._rate(*self.trip.rated)

    def wh_per_km_recent(self) -> float | None:
        if not self._recent:
            return None
        (d0, e0), (d, e) = self._recent[0], self.trip.rated
        return self._rate(d - d0, e - e0)

    def range_km(self) -> float | None:
        rate = self.wh_per_km_recent()
        if rate is None or rate <= 0 or self.remaining_wh is None:
            return None
        return self.remaining_wh / rate

    def times_s(self) -> tuple[float | None, float | None]:
        """(time to empty while discharging, time to full while charging)."""
        p, idle = self.power_w, self.settings.idle_w
        if p is None or self.remaining_wh is None:
            return None, None
        if p < -idle:
            return self.remaining_wh / -p * 3600, None
        if p > idle and self.full_wh is not None:
            return None, max(0.0, self.full_wh - self.remaining_wh) / p * 3600
        return None, None

    def distance_source(self) -> tuple[str, str | None]:
        """Which distance was used, and a note when speed and positions disagree."""
        c = self.trip
        source = "position" if c.speed_km == 0 and c.distance_km > 0 else "speed"
        if 0 < c.speed_km < c.distance_km:
            source = "speed+position"
        if c.position_km < self.settings.min_rate_km or c.speed_km == 0:
            return source, None
        off_pct = (c.speed_km - c.position_km) / c.position_km * 100
        if abs(off_pct) <= self.settings.disagree_pct:
            return source, None
        return source, f"GPS speed and positions disagree by {off_pct:+.0f} % over the trip: speed used"

    def state(self, now: float | None = None) -> dict:
        """The ``trip.state`` fields. With ``now`` (on the publishers' clock), what comes from a BMS
        sample older than ``max_gap_s`` is unknown, not its last value."""
        live = now is None or (self._bms_t is not None and now - self._bms_t <= self.settings.max_gap_s)
        if not live:
            return {**self._state(), "remaining_wh": None, "power_w": None, "range_km": None,
                    "time_to_empty_s": None, "time_to_full_s": None}
        return self._state()

    def _state(self) -> dict:
        c, laps = self.trip, self.laps
        to_empty, to_full = self.times_s()
        source, note = self.distance_source()
        return {
            "distance_km": c.distance_km, "energy_out_wh": c.energy_out_wh, "energy_in_wh": c.energy_in_wh,
            "wh_per_km": self.wh_per_km(), "wh_per_km_recent": self.wh_per_km_recent(), "range_km": self.range_km(),
            "time_to_empty_s": to_empty, "time_to_full_s": to_full, "trip_started_ts": c.started_ts,
            "remaining_wh": self.remaining_wh, "power_w": self.power_w,
            "distance_source": source, "distance_note": note,
            "bms_gaps": c.bms_gaps, "bms_gap_s": c.bms_gap_s, "gps_gaps": c.gps_gaps, "gps_gap_s": c.gps_gap_s,
            "laps": laps.count if self._line is not None else None, "last_lap_s": laps.last_s, "best_lap_s": laps.best_s,
            "last_lap_wh": laps.last_wh, "last_lap_wh_per_km": laps.last_wh_per_km,
            "total_distance_km": self.total.distance_km, "total_energy_out_wh": self.total.energy_out_wh,
            "total_energy_in_wh": self.total.energy_in_wh,
        }

    def saved(self) -> dict:
        """What the shell persists (and gives back to the constructor after a restart)."""
        return {"trip": dataclasses.asdict(self.trip), "total": dataclasses.asdict(self.total),
                "laps": dataclasses.asdict(self.laps)}
