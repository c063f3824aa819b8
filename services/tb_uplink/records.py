"""Telemetry records from the latest bus values, and the clock their timestamps come from.

A record is ``(ts_ms, values)``: the values of the latest bms.snapshot and gps.fix that are not
older than ``max_value_age_s``, keyed by common/fields.py; unknown values are left out. ``ts`` is
the newest observation time among the sources used; the uplink makes no record when nothing was
observed since the last one (ThingsBoard would overwrite it: same ts).

The Pi has no real-time clock: until NTP has synchronised it, or when it is more than 2 s off
the receiver's UTC, its time is not to be trusted. Then timestamps are shifted by the offset
to GPS UTC measured on the latest valid fix (no older than 30 s); with no fix they stay on the
system clock and the status says the clock is unsynced.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import statistics
import time
from collections.abc import Callable

from common import fields
from common.messages import Message

MAX_CLOCK_ERROR_S = 2.0
OFFSET_FRESH_S = 30.0
CONSISTENT_FIXES = 3
EARLIEST_PLAUSIBLE = 1_577_836_800  # 2020-01-01: anything before is a boot clock, not the date


def build_record(snapshot: Message | None, fix: Message | None, now: float, max_age_s: float,
                 pad_cells: int, pad_packs: int, full: bool, alive: bool) -> tuple[float, dict] | None:
    """(observation ts in s, values) or None when no fresh value is known."""
    values: dict = {}
    seen: list[float] = []
    if snapshot is not None and abs(now - snapshot.ts) <= max_age_s:
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
    if fix is not None and abs(now - fix.ts) <= max_age_s:
        gps = fields.gps_values(fix.data, full)
        if gps:
            values.update(gps)
            seen.append(fix.ts)
    if not values:
        return None
    values["alive"] = alive
    return max(seen), values


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("rest", ctypes.c_long * 32)]


_STA_UNSYNC = 0x40


def ntp_synced() -> bool:
    """Whether the kernel says the clock is synchronised (adjtimex; NTP, chrony and
    systemd-timesyncd clear STA_UNSYNC once they have set the time)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        timex = _Timex()
        if libc.adjtimex(ctypes.byref(timex)) < 0:
            return False
        return not timex.status & _STA_UNSYNC
    except (OSError, AttributeError):
        return False


class Clock:
    """Chooses between the system clock and GPS UTC for record timestamps. GPS time is used only
    once CONSISTENT_FIXES recent fixes agree on the offset (within 1 s), so one receiver glitch
    (a wrong date on a fix marked valid) cannot move the records."""

    def __init__(self, synced: Callable[[], bool] = ntp_synced, monotonic: Callable[[], float] = time.monotonic):
        self._synced = synced
        self._monotonic = monotonic
        self._offsets: collections.deque[tuple[float, float]] = collections.deque(maxlen=CONSISTENT_FIXES)
        self.source = "system"

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
        offset = self._offset()
        trusted = self._synced() and ts >= EARLIEST_PLAUSIBLE and (offset is None or abs(offset) <= MAX_CLOCK_ERROR_S)
        if trusted:
            self.source = "system"
            return ts
        if offset is not None:
            self.source = "gps"
            return ts + offset
        self.source = "system-unsynced"
        return ts
