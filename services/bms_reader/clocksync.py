"""Keeping the BMS clock right: a pure core that decides, from what the reader saw, whether to set it.

The BMS stamps its own alarm history with its clock, which nobody sets: packs are found years
off. The reader sets it (B2, the only write it ever sends) when all of these hold:

- the vehicle has a trusted time: an NTP-synchronised system clock, or GPS UTC under the rules
  of common/clock.py (several agreeing fixes, never before the date floor);
- the BMS clock is off by more than ``max_drift_s``;
- no current flows (every pack within ``idle_current_a``) and the car is not moving (the latest
  GPS speed, at most SPEED_FRESH_S old, under STOPPED_KM_H, or no speed known at all): a BMS
  busy protecting a pack under load is not the moment for a write;
- it was not set in the last MIN_INTERVAL_S (once a day at most, so a BMS that loses its time
  cannot turn the reader into a writer).

The BMS keeps local time as PBmsTools sets it from a PC, so the comparison is in the Pi's local
time zone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from common.clock import Clock

MIN_INTERVAL_S = 86400.0
SPEED_FRESH_S = 5.0
STOPPED_KM_H = 1.0


@dataclass(frozen=True)
class Decision:
    drift_s: float | None  # BMS minus trusted time; None without a trusted time
    set_to: dt.datetime | None  # the local time to write, or None: leave the clock alone
    note: str


class ClockSync:
    def __init__(self, clock: Clock, enabled: bool, max_drift_s: float, idle_current_a: float):
        self.clock = clock
        self.enabled = enabled
        self.max_drift_s = max_drift_s
        self.idle_current_a = idle_current_a
        self.last_set_mono: float | None = None
        self._speed: tuple[float, float] | None = None  # (km/h, monotonic when seen)

    def observe_speed(self, speed_km_h: float | None, mono: float) -> None:
        self._speed = None if speed_km_h is None else (speed_km_h, mono)

    def trusted(self, system_ts: float) -> float | None:
        """Trusted UTC for an instant the system clock calls ``system_ts``, or None."""
        stamped = self.clock.stamp(system_ts)
        return stamped if self.clock.source in ("system", "gps") else None

    def _moving(self, mono: float) -> bool:
        if self._speed is None or mono - self._speed[1] > SPEED_FRESH_S:
            return False
        return self._speed[0] >= STOPPED_KM_H

    def decide(self, bms_time: dt.datetime, read_ts: float, currents_a: list[float | None], mono: float) -> Decision:
        """What to do after B1 answered ``bms_time`` at system time ``read_ts``."""
        trusted = self.trusted(read_ts)
        if trusted is None:
            return Decision(None, None, f"no trusted time ({self.clock.reason})")
        drift = round(bms_time.timestamp() - trusted, 1)
        reason = self._why_not(drift, currents_a, mono)
        if reason:
            return Decision(drift, None, reason)
        return Decision(drift, dt.datetime.fromtimestamp(trusted).replace(microsecond=0), "set")

    def _why_not(self, drift: float, currents_a: list[float | None], mono: float) -> str | None:
        if not self.enabled:
            return "bms_clock_sync is off"
        if abs(drift) <= self.max_drift_s:
            return f"within {self.max_drift_s:g} s"
        if self.last_set_mono is not None and mono - self.last_set_mono < MIN_INTERVAL_S:
            return "already set in the last 24 h"
        if not currents_a or any(a is None or abs(a) > self.idle_current_a for a in currents_a):
            return "current flows (or is unknown)"
        if self._moving(mono):
            return "the car is moving"
        return None

    def was_set(self, mono: float) -> None:
        self.last_set_mono = mono
