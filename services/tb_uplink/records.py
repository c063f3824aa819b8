"""Telemetry records from the latest bus values, and the clock their timestamps come from.

A record is ``(ts, values)``: the values of the latest bms.snapshot and gps.fix that arrived no
more than ``max_value_age_s`` ago, keyed by common/fields.py; unknown values are left out. ``ts``
is the newest observation time among the sources used. :class:`RecordMaker` (a pure core the
uplink feeds) makes a record only when something arrived since the last one (ThingsBoard would
overwrite a repeated ts), and ages values by when they arrived on the monotonic clock: a step of
the wall clock (NTP, a GPS-set clock) neither stops records nor makes fresh values stale.

The Pi has no real-time clock: until NTP has synchronised it, or when it is more than 2 s off
the receiver's UTC, its time is not to be trusted. Then timestamps are shifted by the offset
to GPS UTC measured on the latest valid fix (no older than 30 s); with no fix they stay on the
system clock and the status says the clock is unsynced.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import functools
import statistics
import time
from collections.abc import Callable

from common import clock, fields
from common.messages import Message

OFFSET_FRESH_S = 30.0
CONSISTENT_FIXES = 3
RECORD_TOPICS = ("bms.snapshot", "gps.fix")


def build_record(snapshot: Message | None, fix: Message | None, pad_cells: int, pad_packs: int, full: bool,
                 alive: bool) -> tuple[float, dict] | None:
    """(observation ts in s, values) of the given (fresh) messages, or None when they say nothing."""
    values: dict = {}
    seen: list[float] = []
    if snapshot is not None:
        data = snapshot.data
        if data.pack_count is not None:
            values["analog_data_packs"] = data.pack_count
        with_status = sum(1 for p in data.packs if p.warnings is not None)
        if with_status:
            values["warning_info_packs"] = with_status
        for position, pack in enumerate(data.packs, start=1):
            prefix = fields.pack_prefix(position, pad_packs)
            values.update({prefix + k: v for k, v in fields.pack_values(pack, pad_cells, full).items()})
        seen.append(snapshot.ts)
    if fix is not None:
        gps = fields.gps_values(fix.data, full)
        if gps:
            values.update(gps)
            seen.append(fix.ts)
    if not values:
        return None
    values["alive"] = alive
    return max(seen), values


class RecordMaker:
    """The latest bms.snapshot and gps.fix, and one record from them when asked (see module doc)."""

    def __init__(self, max_age_s: float, pad_cells: int, pad_packs: int, full: bool,
                 monotonic: Callable[[], float] = time.monotonic):
        self.max_age_s, self.pad_cells, self.pad_packs, self.full = max_age_s, pad_cells, pad_packs, full
        self._monotonic = monotonic
        self._latest: dict[str, tuple[Message, float]] = {}
        self._arrived_since_record = False
        self._alive = False

    def take(self, msg: Message) -> None:
        if msg.topic in RECORD_TOPICS:
            self._latest[msg.topic] = (msg, self._monotonic())
            self._arrived_since_record = True

    def make(self) -> tuple[float, dict] | None:
        if not self._arrived_since_record:
            return None
        now = self._monotonic()
        fresh = {topic: msg for topic, (msg, at) in self._latest.items() if now - at <= self.max_age_s}
        record = build_record(fresh.get("bms.snapshot"), fresh.get("gps.fix"), self.pad_cells, self.pad_packs,
                              self.full, not self._alive)
        if record is not None:
            self._arrived_since_record = False
            self._alive = not self._alive
        return record


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
        self._floor_ts = clock.floor_timestamp() if floor_ts is None else floor_ts
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
