"""bms_reader: polls a PACE BMS (every pack of the stack) and publishes bms.snapshot/info/link.

Each poll cycle asks analog data (0x42) and status (0x44) for all packs (COMMAND FF),
capacities (0xA6) every ``capacity_every`` cycles, and version (0xC1), serials (0xC2) and the
pack count (0x90) at start and every ``info_every_s``. A cycle starts when the previous one has
ended or ``scan_interval`` after the previous start, whichever is later. A snapshot is published
whenever the analog reply came; a status reply that failed leaves its fields None, never zeros.
A timeout ends the cycle early (a sleeping BMS would only cost more timeouts); other errors are
counted and the next request goes on. A lost port is reopened with capped back-off; the service
never exits for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from common import messages, pace
from common.device import DeviceReader, NoReply, PortLost, TransportError
from common.service import Service
from services.bms_reader.link import Link

INFO_RETRY_S = 30.0
INFO_PUBLISH_S = 60.0


@dataclass
class Cycle:
    """What one poll cycle got. A value is None when its request failed or was not made."""

    started: float
    analog: pace.PackReply | None = None
    analog_ts: float | None = None
    status: pace.PackReply | None = None
    capacities: pace.Capacities | None = None
    info: dict = field(default_factory=dict)
    info_failed: bool = False
    last_frame: pace.Frame | None = None


class BmsReader(DeviceReader):
    """Polls on the shared device loop (common/device.py). A long reply (12 packs take 1.5 s at
    9600 baud) does not hold a stop up: the link calls ``idle`` between reads."""

    def __init__(self, svc: Service):
        super().__init__(svc, svc.section.url, svc.section.reopen_max_s)
        self.cfg = svc.section
        self.pub = svc.publisher()
        self.link: Link | None = None
        self.cycles = 0
        self.info: dict = {}
        self.info_sent_at = 0.0
        self.info_due_at = 0.0
        self.next_start = 0.0

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
        self.cycles += 1
        cycle = Cycle(started)
        try:
            self._run_cycle(cycle)
        finally:
            if cycle.analog is not None:
                self._publish_snapshot(cycle)
            self._update_info(cycle)

    def _run_cycle(self, cycle: Cycle) -> None:
        cfg = self.cfg
        info_due = time.monotonic() >= self.info_due_at
        steps = [("analog", pace.analog_request(cfg.bms_address),
                  lambda f: pace.decode_analog(f, pace.ALL_PACKS, cfg.force_pack_offset)),
                 ("status", pace.status_request(cfg.bms_address),
                  lambda f: pace.decode_status(f, pace.ALL_PACKS, cfg.force_pack_offset))]
        if self.cycles % cfg.capacity_every == 1 or cfg.capacity_every == 1:
            steps.append(("capacities", pace.build_request(pace.Command.CAPACITIES, cfg.bms_address),
                          pace.decode_capacities))
        if info_due:
            steps += [("software_version", pace.build_request(pace.Command.VERSION, cfg.bms_address), pace.decode_text),
                      ("serials", pace.build_request(pace.Command.SERIALS, cfg.bms_address), pace.decode_serials),
                      ("pack_count", pace.build_request(pace.Command.PACK_COUNT, cfg.bms_address),
                       pace.decode_pack_count)]
        for name, request, decode in steps:
            junk_before = self.link.junk_events
            try:
                frame = self.link.transact(request, self.idle)
                value = decode(frame)
            except PortLost:
                raise
            except (pace.PaceError, TransportError) as e:
                self.health.fail(e.kind, f"{name}: {e}")
                cycle.info_failed |= name in ("software_version", "serials", "pack_count") and e.kind != "rtn"
                if isinstance(e, NoReply):
                    break
                continue
            finally:
                if self.link and self.link.junk_events > junk_before:
                    self.health.fail("junk", f"{name}: bytes outside any frame were dropped")
            self.health.ok()
            self.backoff.reset()
            cycle.last_frame = frame
            if name == "analog":
                cycle.analog, cycle.analog_ts = value, time.time()
            elif name == "status":
                cycle.status = value
            elif name == "capacities":
                cycle.capacities = value
            elif name == "serials":
                cycle.info.update(bms_serial=value.bms_serial, pack_serial=value.pack_serial)
            else:
                cycle.info[name] = value
        if info_due:
            self.info_due_at = time.monotonic() + (INFO_RETRY_S if cycle.info_failed else self.cfg.info_every_s)

    def _publish_snapshot(self, cycle: Cycle) -> None:
        analog = cycle.analog
        status = cycle.status.packs if cycle.status else ()
        packs = []
        for index, block in enumerate(analog.packs):
            number = index + 1 if analog.is_count else analog.count_byte
            fields = pace.pack_fields(number, block, status[index] if index < len(status) else None)
            if index == 0 and cycle.capacities and block.online and fields.get("design_ah") is None:
                fields["design_ah"] = cycle.capacities.design_ah  # firmwares without it in 0x42
            packs.append(messages.Pack(**fields))
        snapshot = messages.BmsSnapshot(pack_count=len(packs), packs=packs,
                                        poll_s=round(time.monotonic() - cycle.started, 4))
        self.pub.publish("bms.snapshot", snapshot, ts=cycle.analog_ts)
        if analog.is_count:
            self.info.setdefault("pack_count_from_analog", len(packs))

    def _update_info(self, cycle: Cycle) -> None:
        frame = cycle.last_frame
        if frame is not None:
            cycle.info.update(protocol_version=f"{frame.ver:02X}", address=frame.adr)
        merged = {**self.info, **cycle.info}
        changed = merged != self.info
        self.info = merged
        if changed or (self.info and time.monotonic() - self.info_sent_at >= INFO_PUBLISH_S):
            count = merged.get("pack_count") or merged.get("pack_count_from_analog")
            self.pub.publish("bms.info", messages.BmsInfo(
                protocol_version=merged.get("protocol_version"), address=merged.get("address"),
                software_version=merged.get("software_version"), bms_serial=merged.get("bms_serial"),
                pack_serial=merged.get("pack_serial"), pack_count=count))
            self.info_sent_at = time.monotonic()

def main(svc: Service) -> None:
    BmsReader(svc).run()
