"""Telemetry records from the latest bus values (their clock is common/clock.py's Clock).

A record is ``(ts, values)``: the values of the latest bms.snapshot, gps.fix and trip.state
(with the full key set) that arrived no more than ``max_value_age_s`` ago, keyed by common/fields.py; unknown values are left out. ``ts``
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

import time
from collections.abc import Callable

from common import fields
from common.messages import Message

RECORD_TOPICS = ("bms.snapshot", "gps.fix", "trip.state")


def build_record(snapshot: Message | None, fix: Message | None, pad_cells: int, pad_packs: int, full: bool,
                 alive: bool, trip: Message | None = None) -> tuple[float, dict] | None:
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
    if trip is not None and full and (trip_values := fields.trip_values(trip.data)):
        values.update(trip_values)
        seen.append(trip.ts)
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
                              self.full, not self._alive, fresh.get("trip.state"))
        if record is not None:
            self._arrived_since_record = False
            self._alive = not self._alive
        return record
