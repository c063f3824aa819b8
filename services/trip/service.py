"""The trip computer service: bms.snapshot and gps.fix in, trip.state out every second.

A thin shell around services/trip/core.py: every message is fed in the order it arrives with the
time its publisher stamped it (a replay at ten times the speed is then integrated right), the
counters are saved once a second (store.py) and given back to the core after a restart. Commands
(common/command.py): ``reset`` starts a new trip (the totals go on), ``state`` is the last
trip.state. The core is touched from the command thread only under the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from common import clock, messages
from common import config as configmod
from common.health import Every
from common.service import Service
from services.trip.core import Counters, Laps, Settings, StartLine, Trip
from services.trip.store import Store, StoreError

TOPICS = ["bms.snapshot", "gps.fix"]
RECV_MAX = 1000  # messages taken per loop turn, so a flood cannot starve the publishing


def settings(cfg: configmod.TripConfig) -> Settings:
    line = cfg.start_line
    return Settings(max_gap_s=cfg.max_gap_s, recent_km=cfg.recent_km, min_rate_km=cfg.min_rate_km,
                    auto_reset_parked_h=cfg.auto_reset_parked_h or None, parked_current_a=cfg.parked_current_a,
                    start_line=None if line is None else StartLine(line.lat, line.lon, line.heading_deg, line.width_m))


def restored(saved, s: Settings) -> Trip:
    """The counters as saved; what another version wrote keeps at least the totals' known fields."""
    if not isinstance(saved, dict) or not saved:
        return Trip(s, Counters(started_ts=clock.now()))
    try:
        return Trip(s, Counters(**saved["trip"]), Counters(**saved["total"]), Laps(**saved["laps"]))
    except (KeyError, TypeError):
        total = saved.get("total")
        keep = {k: v for k, v in total.items() if k in Counters.__dataclass_fields__} if isinstance(total, dict) else {}
        try:
            return Trip(s, Counters(started_ts=clock.now()), Counters(**keep))
        except TypeError:
            return Trip(s, Counters(started_ts=clock.now()))


class TripService:
    def __init__(self, svc: Service):
        self.svc, cfg = svc, svc.section
        try:
            self.store = Store(cfg.state_path)
        except StoreError as e:
            raise configmod.ConfigError(f"trip.state_path: {e}") from None
        if self.store.error:
            svc.log.error("%s", self.store.error)
        self.trip = restored(self.store.saved, settings(cfg))
        if self.trip.parked_too_long(clock.now()):  # before any message can say the car is awake
            svc.log.info("new trip: parked for %g h", cfg.auto_reset_parked_h)
            self.trip.reset(clock.now())
        self.lock = threading.Lock()
        self._latest: tuple[float, float] | None = None  # (newest message ts, monotonic time it came)
        self.pub = svc.publisher()
        self.sub = svc.subscriber(TOPICS)
        self.every = Every(1.0)
        svc.commands.add("reset", self._reset, "start a new trip (the totals go on)")

    def _reset(self, args: dict) -> dict:
        with self.lock:
            self.trip.reset(clock.now())
            self.store.save(self.trip.saved())
            self.svc.log.info("new trip (by command)")
            return {"trip_started_ts": self.trip.trip.started_ts}

    def run(self) -> None:
        try:
            while not self.svc.stopping:
                msg = self.sub.recv(0.1)
                taken = 0
                while msg is not None:
                    with self.lock:
                        self._take(msg)
                    taken += 1
                    msg = self.sub.recv(0.0) if taken < RECV_MAX else None
                if self.every.due():
                    with self.lock:
                        self._tick()
        finally:
            with self.lock:
                self.store.save(self.trip.saved())
                self.store.close()

    def _now(self) -> float:
        """Now on the publishers' clock: the newest message's stamp plus the time since it came
        (the wall clock before any), so a replay at speed is judged on its own time."""
        if self._latest is None:
            return clock.now()
        ts, at = self._latest
        return ts + time.monotonic() - at

    def _take(self, msg: messages.Message) -> None:
        if self._latest is None or msg.ts > self._latest[0]:
            self._latest = (msg.ts, time.monotonic())
        d = msg.data
        if msg.topic == "bms.snapshot":
            self.trip.bms(msg.ts, d.packs)
        else:
            self.trip.fix(msg.ts, d.valid, d.speed_km_h, d.lat, d.lon)

    def _tick(self) -> None:
        now = self._now()
        if self.trip.parked_too_long(now):
            self.svc.log.info("new trip: parked for %g h", self.svc.section.auto_reset_parked_h)
            self.trip.reset(clock.now())
        self.store.save(self.trip.saved())
        if self.store.state == "failed":
            self.svc.log.warning("%s", self.store.error)
        state = {k: _rounded(v) for k, v in self.trip.state(now).items()}
        self.pub.publish("trip.state", messages.TripState(**state, store_state=self.store.state,
                                                          store_error=self.store.error))


def _rounded(value):
    return round(value, 6) if isinstance(value, float) else value


def prepare(svc: Service) -> Callable[[], None]:
    return TripService(svc).run
