"""Which time to believe: the date floor, NTP synchronisation, and GPS UTC when NTP is absent.

The earliest date this software can run at: no clock, GPS or system, is believed before it.

GPS receivers count weeks in ten bits, so every 1024 weeks (19.6 years: 1999-08-22, 2019-04-07,
2038-11-21) one whose firmware does not know better sends dates 1024 weeks in the past. gpsd's
rule, used here: a receiver's date before the software's build date is moved forward in
1024-week steps until it is not. The same floor keeps a Pi's clock that has not been set (no
real-time clock, no network yet) from stamping records in the past.

Raise DATE_FLOOR with each release (a release is never older than the code it ships).
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import datetime as dt
import functools
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.messages import Message

DATE_FLOOR = dt.date(2026, 12, 1)
GPS_ROLLOVER = dt.timedelta(weeks=1024)
OFFSET_FRESH_S = 30.0
CONSISTENT_FIXES = 3


def unroll(date: dt.date, floor: dt.date = DATE_FLOOR) -> tuple[dt.date, int]:
    """``date`` moved forward by whole 1024-week periods until it is not before ``floor``, and
    how many periods that took (0 for a date that was right)."""
    periods = 0
    while date < floor:
        date += GPS_ROLLOVER
        periods += 1
    return date, periods


def floor_timestamp(floor: dt.date = DATE_FLOOR) -> float:
    return dt.datetime.combine(floor, dt.time(tzinfo=dt.UTC)).timestamp()


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("rest", ctypes.c_long * 32)]


_STA_UNSYNC = 0x40


@functools.cache
def _adjtimex() -> Callable | None:
    """libc's adjtimex, looked up once (find_library forks ``ldconfig -p`` on every call)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None


def ntp_synced() -> bool:
    """Whether the kernel says the clock is synchronised (adjtimex; NTP, chrony and
    systemd-timesyncd clear STA_UNSYNC once they have set the time)."""
    adjtimex = _adjtimex()
    timex = _Timex()
    if adjtimex is None or adjtimex(ctypes.byref(timex)) < 0:
        return False
    return not timex.status & _STA_UNSYNC


class Clock:
    """Chooses between the system clock and GPS UTC for record timestamps, and says why
    (``source``, ``reason``).

    An NTP-synchronised system clock is always used: GPS time never moves records away from it (a
    receiver with the week-number rollover bug would file them 19.6 years in the past). Without
    NTP, GPS time is used once CONSISTENT_FIXES recent fixes agree on the offset (within 1 s), so
    one receiver glitch cannot move the records, and only when it is not before the floor
    (common/clock.py). A system clock before the floor is a Pi that has not been set: never
    trusted, even if it says it is synchronised."""

    def __init__(self, synced: Callable[[], bool] = ntp_synced, monotonic: Callable[[], float] = time.monotonic,
                 floor_ts: float | None = None):
        self._synced = synced
        self._monotonic = monotonic
        self._floor_ts = floor_timestamp() if floor_ts is None else floor_ts
        self._offsets: collections.deque[tuple[float, float]] = collections.deque(maxlen=CONSISTENT_FIXES)
        self.source = "system"
        self.reason = "no record stamped yet"

    def observe_fix(self, fix: Message) -> None:
        """Measure the offset system -> GPS UTC on a valid fix (its ts is when its epoch arrived)."""
        if fix.data.valid and fix.data.gps_utc is not None:
            self._offsets.append((self._monotonic(), fix.data.gps_utc - fix.ts))

    def _offset(self) -> float | None:
        now = self._monotonic()
        recent = [offset for at, offset in self._offsets if now - at <= OFFSET_FRESH_S]
        if len(recent) < CONSISTENT_FIXES or max(recent) - min(recent) > 1.0:
            return None
        return statistics.median(recent)

    def stamp(self, ts: float) -> float:
        """The timestamp to send for an observation made at system time ``ts``."""
        system_ok = ts >= self._floor_ts
        if system_ok and self._synced():
            return self._use("system", "the system clock is NTP-synchronised", ts)
        offset = self._offset()
        if offset is not None and ts + offset >= self._floor_ts:
            return self._use("gps", f"the system clock is not synchronised; {CONSISTENT_FIXES} GPS fixes agree",
                             ts + offset)
        if offset is not None:
            why = "GPS time is before the software's date floor (a week-number rollover?)"
        elif system_ok:
            why = "the system clock is not synchronised and there is no agreeing GPS time"
        else:
            why = "the system clock is before the software's date floor and there is no GPS time"
        return self._use("system-unsynced", why, ts)

    def _use(self, source: str, reason: str, ts: float) -> float:
        self.source, self.reason = source, reason
        return ts


class Timebase:
    """The time messages are stamped with: the system clock, or in a simulated drive run
    ``speedup`` times faster than real time, the drive's time (``start_ts`` + the real time since
    it, times ``speedup``). Only stamps follow it: timeouts, polling and the wire stay real."""

    def __init__(self, speedup: float = 1.0, start_ts: float | None = None):
        if speedup != 1.0 and start_ts is None:
            raise ValueError("a speedup needs the drive's start")
        self.speedup, self.start_ts = speedup, start_ts

    def at(self, system_ts: float) -> float:
        """The stamp for the system time ``system_ts``."""
        if self.speedup == 1.0:
            return system_ts
        return self.start_ts + (system_ts - self.start_ts) * self.speedup

    def now(self) -> float:
        return self.at(time.time())

    def real_s(self, stamp_s: float) -> float:
        """How long ``stamp_s`` of stamped time takes in real time."""
        return stamp_s / self.speedup


_timebase = Timebase()


def use_timebase(timebase: Timebase) -> None:
    """Set the process's time base (the service runner does, from the ``simulation`` section)."""
    global _timebase
    _timebase = timebase


def now() -> float:
    """The time to stamp a message observed now with (the system clock outside a simulation)."""
    return _timebase.now()
