"""bms_reader: polls a PACE BMS (every pack of the stack) and publishes bms.snapshot/info/config/link.

What a cycle asks comes from the command table through the schedule (schedule.py): analog data
(0x42) and status (0x44) every cycle, capacities every ``capacity_every`` cycles, version,
serials and pack count every ``info_every_s``, the BMS's own settings and clock every
``config_every_s``. A cycle starts when the previous one has ended or ``scan_interval`` after
the previous start, whichever is later. A snapshot is published whenever an analog reply came; a
status reply that failed leaves its fields None, never zeros. A silent pack costs one timeout
(the rest of its requests this cycle are skipped); other errors are counted and the next
request goes on. A reply that cannot answer the request in flight (a bridge delivering a
backlog after a freeze) is counted as ``stale``, the line drained and the request asked once
more, without taking the link down. A lost port is reopened with capped back-off; the service
never exits for it. The only write ever sent is the clock (clocksync.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from common import clock, messages, pace
from common.clock import Clock, ntp_synced
from common.device import DeviceReader, NoReply, PortLost, TransportError
from common.pace import commands, families
from common.pace.config import datetime_info
from common.service import Service
from services.bms_reader.clocksync import ClockSync
from services.bms_reader.link import Link
from services.bms_reader.schedule import Ask, Schedule

INFO_PUBLISH_S = 60.0
SET_DATETIME = 0xB2


@dataclass
class Cycle:
    """What one poll cycle got, by pack number. A value is absent when its request failed or was
    not made."""

    started: float
    analog: dict[int, pace.AnalogPack] = field(default_factory=dict)
    analog_ts: float | None = None
    status: dict[int, pace.StatusPack] = field(default_factory=dict)
    pack_count: int | None = None
    capacities: pace.Capacities | None = None
    info: dict = field(default_factory=dict)
    config: dict[int, dict] = field(default_factory=dict)
    last_frame: pace.Frame | None = None


class BmsReader(DeviceReader):
    """Polls on the shared device loop (common/device.py). A long reply (12 packs take 1.5 s at
    9600 baud) does not hold a stop up: the link calls ``idle`` between reads."""

    def __init__(self, svc: Service):
        super().__init__(svc, svc.section.url, svc.section.reopen_max_s)
        self.cfg = cfg = svc.section
        self.pub = svc.publisher()
        self.link: Link | None = None
        self.info: dict = {}
        self.info_sent_at = 0.0
        self.next_start = 0.0
        addresses = cfg.addresses if cfg.stack_addressing == "per_address" else [cfg.bms_address]
        self.schedule = Schedule(cfg.stack_addressing, addresses, cfg.capacity_every, cfg.info_every_s,
                                 cfg.config_every_s, cfg.protocol)
        self.config: dict[int, messages.PackConfig] = {}
        self.config_sent_at = 0.0
        synced = {"trusted": lambda: True, "untrusted": lambda: False}.get(cfg.system_clock, ntp_synced)
        self.clock = ClockSync(Clock(synced=synced), cfg.bms_clock_sync, cfg.bms_clock_max_drift_s,
                               cfg.bms_clock_idle_current_a)
        self.gps = svc.subscriber(["gps.fix"])

    def open_port(self) -> None:
        self.link = Link(self.cfg.url, self.cfg.bms_baud, self.cfg.response_timeout_s)
        self.svc.log.info("opened %s", self.cfg.url)

    def close_port(self) -> None:
        if self.link:
            self.link.close()
        self.link = None

    def publish_link(self) -> None:
        self.pub.publish("bms.link", messages.Link(**self.health.fields()))

    def step(self) -> None:
        """One poll cycle, when it is due."""
        self.sleep(self.next_start - time.monotonic())
        if self.svc.stopping:
            return
        started = time.monotonic()
        self._poll(started)
        self.next_start = started + self.cfg.scan_interval

    def _poll(self, started: float) -> None:
        """Run a cycle and publish what it got, also when the port was lost halfway."""
        cycle = Cycle(started)
        try:
            self._run_cycle(cycle)
        finally:
            if cycle.analog:
                self._publish_snapshot(cycle)
            self._update_info(cycle)
            self._update_config(cycle)

    def tick(self) -> None:
        super().tick()
        while (msg := self.gps.recv(0)) is not None:
            if msg.topic == "gps.fix":
                self.clock.clock.observe_fix(msg)
                self.clock.observe_speed(msg.data.speed_km_h if msg.data.valid else None, time.monotonic())

    def _run_cycle(self, cycle: Cycle) -> None:
        for ask in self.schedule.plan(time.monotonic()):
            if self.schedule.skip(ask):
                self.schedule.failed(ask, time.monotonic())
                continue
            answer = self._ask(cycle, ask)
            if answer is not None:
                self._keep(cycle, *answer)

    def _ask(self, cycle: Cycle, ask: Ask) -> tuple[Ask, object] | None:
        """The ask the reply answered (another family's when it settled ``protocol: auto``) and its
        decoded value, or None when it failed (counted, and told to the schedule)."""
        name = ask.command.name
        junk_before = self.link.junk_events
        try:
            ask, frame = self._transact(ask)
            value = ask.command.decode(frame, ask.pack, self.cfg.force_pack_offset)
        except PortLost:
            raise
        except (pace.PaceError, TransportError) as e:
            self._failed(ask, e)
            return None
        finally:
            if self.link and self.link.junk_events > junk_before:
                self.health.fail("junk", f"{name}: bytes outside any frame were dropped")
        self.health.ok()
        self.backoff.reset()
        self.schedule.answered(ask)
        cycle.last_frame = frame
        return ask, value

    def _transact(self, ask: Ask) -> tuple[Ask, pace.Frame]:
        """The reply to ``ask`` (and the ask it answers, which is another family's when this reply
        settles ``protocol: auto``). One that cannot be its answer is a late reply to an earlier
        request: counted as stale, the line drained, and the request sent once more."""
        frame = self.link.transact(ask.request, self.idle)
        ask = self._settle(ask, frame)
        if not ask.command.fits(frame, ask.pack, self.cfg.force_pack_offset):
            self.health.count("stale")
            self.link.drain(self.idle)
            frame = self.link.transact(ask.request, self.idle)
        return ask, frame

    def _settle(self, ask: Ask, frame: pace.Frame) -> Ask:
        """With protocol auto, the first analog reply whose layout a family has settles the family."""
        if self.schedule.family is not None or ask.command.block != "analog":
            return ask
        sent = pace.parse_frame(ask.request).info  # the pack byte actually sent, if any
        pack = sent[0] if sent else None
        found = families.identify(frame, pack, self.cfg.force_pack_offset)
        if found is None:
            return ask
        self.schedule.settle(found)
        self.svc.log.info("protocol auto: the BMS answers in the %s layout", found)
        if found == ask.command.family:
            return ask
        return Ask(commands.by_cid2(ask.command.cid2, found), ask.adr, pace.ALL_PACKS if pack is None else pack)

    def _failed(self, ask: Ask, error: Exception) -> None:
        now = time.monotonic()
        if isinstance(error, pace.DeviceError):
            self.schedule.refused(ask, error.rtn)
        elif isinstance(error, NoReply):
            self.schedule.silent(ask, now)
        elif isinstance(error, pace.DecodeError):
            self.schedule.undecoded(ask)
        if ask.command.name in self.schedule.unsupported:
            self.svc.log.info("%s (CID2 %02X) is not supported by this BMS: not asked again", ask.command.name,
                              ask.command.cid2)
            if isinstance(error, pace.DeviceError):
                return  # "CID2 not defined" is the firmware's answer, not a fault of the link
        self.health.fail(error.kind, f"{ask.command.name}: {error}")
        self.schedule.failed(ask, now)

    def _keep(self, cycle: Cycle, ask: Ask, value) -> None:
        group = ask.command.group
        if group == "cycle":
            self._keep_packs(cycle, ask, value)
        elif group == "capacity":
            cycle.capacities = value
        elif group == "info":
            cycle.info.update(ask.command.as_fields(value))
        else:
            self._keep_setting(cycle, ask, value)

    def _keep_packs(self, cycle: Cycle, ask: Ask, reply: pace.PackReply) -> None:
        into = cycle.analog if ask.command.block == "analog" else cycle.status
        if reply.is_count:
            into.update(enumerate(reply.packs, start=1))
        else:
            # One pack: the one asked, whatever address the reply echoes (some echo 0).
            echoed = reply.count_byte if 1 <= reply.count_byte <= 15 else 1
            into[ask.adr if self.schedule.per_address else echoed] = reply.packs[0]
        if ask.command.block == "analog":
            cycle.analog_ts = cycle.analog_ts or clock.now()
            if reply.is_count:
                cycle.pack_count = len(reply.packs)

    def _keep_setting(self, cycle: Cycle, ask: Ask, value) -> None:
        settings = cycle.config.setdefault(ask.adr, {})
        settings[ask.command.name] = ask.command.as_fields(value)
        if ask.command.name == "datetime":
            self._check_clock(cycle, ask, value)

    def _check_clock(self, cycle: Cycle, ask: Ask, bms_time) -> None:
        currents = [p.current_a for p in cycle.analog.values() if p.online]
        decision = self.clock.decide(bms_time, time.time(), currents, time.monotonic())
        cycle.info.update(clock_drift_s=decision.drift_s, clock_note=decision.note)
        if decision.set_to is None:
            return
        request = pace.encode_frame(SET_DATETIME, datetime_info(decision.set_to), adr=ask.adr)
        try:
            self.link.transact(request, self.idle).check_rtn()
        except PortLost:
            raise
        except (pace.PaceError, TransportError) as e:
            self.health.fail(e.kind, f"setting the BMS clock: {e}")
            cycle.info["clock_note"] = f"setting it failed: {e}"
            return
        self.clock.was_set(time.monotonic())
        self.svc.log.info("set the BMS clock at address %d to %s (it was %+.0f s off)", ask.adr,
                          decision.set_to.isoformat(), decision.drift_s)
        cycle.info.update(clock_set_ts=time.time(), clock_note=f"set; it was {decision.drift_s:+.0f} s off")

    def _publish_snapshot(self, cycle: Cycle) -> None:
        packs = []
        numbers = sorted(cycle.analog) if not self.schedule.per_address else self.schedule.addresses
        for number in numbers:
            block = cycle.analog.get(number)
            if block is None:
                packs.append(messages.Pack(pack=number, online=False))  # a silent address
                continue
            fields = pace.pack_fields(number, block, cycle.status.get(number))
            if cycle.capacities and block.online and fields.get("design_ah") is None and number == numbers[0]:
                fields["design_ah"] = cycle.capacities.design_ah  # firmwares without it in 0x42
            packs.append(messages.Pack(**fields))
        snapshot = messages.BmsSnapshot(pack_count=len(packs), packs=packs,
                                        poll_s=round(time.monotonic() - cycle.started, 4))
        self.pub.publish("bms.snapshot", snapshot, ts=cycle.analog_ts)
        if cycle.pack_count is not None:
            self.info.setdefault("pack_count_from_analog", cycle.pack_count)

    def _update_info(self, cycle: Cycle) -> None:
        frame = cycle.last_frame
        if frame is not None:
            cycle.info.update(protocol_version=f"{frame.ver:02X}", address=frame.adr, protocol=self.schedule.family)
        merged = {**self.info, **cycle.info}
        changed = merged != self.info
        self.info = merged
        if changed or (self.info and time.monotonic() - self.info_sent_at >= INFO_PUBLISH_S):
            count = merged.get("pack_count") or merged.get("pack_count_from_analog")
            known = {k: merged.get(k) for k in ("protocol_version", "address", "software_version", "bms_serial",
                                                "pack_serial", "protocol", "clock_drift_s", "clock_set_ts",
                                                "clock_note")}
            self.pub.publish("bms.info", messages.BmsInfo(pack_count=count, **known))
            self.info_sent_at = time.monotonic()

    def _update_config(self, cycle: Cycle) -> None:
        for address, settings in cycle.config.items():
            self.config[address] = messages.PackConfig(address=address, settings=settings, read_ts=clock.now())
        if cycle.config or (self.config and time.monotonic() - self.config_sent_at >= INFO_PUBLISH_S):
            self.pub.publish("bms.config", messages.BmsConfig(
                packs=[self.config[a] for a in sorted(self.config)], unsupported=sorted(self.schedule.unsupported)))
            self.config_sent_at = time.monotonic()


def main(svc: Service) -> None:
    BmsReader(svc).run()
