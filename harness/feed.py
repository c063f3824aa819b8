"""Feeds the bus as bms_reader and gps_reader would: ``python -m harness.feed --config C [--period S]``.

Publishes UPLINK_SNAPSHOT, a bms.info and UPLINK_FIX (stamped with the current UTC) every period,
from one process that binds both readers' endpoints (and with --links the link and uplink statuses,
binding the uplink's endpoint too). With --empty-when FILE the snapshots have no packs while FILE exists.
--packs N publishes N packs like the sample's; --alarms gives them faults, protections and warnings
of every kind the driver page knows (the display's crowded state).
"""

import os
import time

import msgspec

from common import messages
from common.service import Service, run
from harness.samples import SAMPLES, UPLINK_FIX, UPLINK_SNAPSHOT, uplink_pack

INFO = messages.BmsInfo(protocol_version="25", address=1, software_version="P16S100A-FEED-1.00",
                        bms_serial="FEEDBMS01", pack_serial="FEEDPACK01", pack_count=2)


def main(svc: Service) -> None:
    bms = svc.bus.publisher(svc.config.bus.bms_reader, "bms_reader")
    gps = svc.bus.publisher(svc.config.bus.gps_reader, "gps_reader")
    uplink = svc.bus.publisher(svc.config.bus.tb_uplink, "tb_uplink") if svc.args.links else None
    empty = messages.BmsSnapshot(pack_count=0, packs=[])
    snapshot = _snapshot(svc.args.packs, svc.args.alarms) if svc.args.packs or svc.args.alarms else UPLINK_SNAPSHOT
    while not svc.stopping:
        now = time.time()
        gone = svc.args.empty_when and os.path.exists(svc.args.empty_when)
        bms.publish("bms.snapshot", empty if gone else snapshot, ts=now)
        bms.publish("bms.info", INFO, ts=now)
        bms.publish("bms.config", SAMPLES["bms.config"], ts=now)
        gps.publish("gps.fix", msgspec.structs.replace(UPLINK_FIX, gps_utc=now), ts=now)
        if svc.args.links:
            bms.publish("bms.link", messages.Link(state="up", port="feed", last_ok_ts=now), ts=now)
            gps.publish("gps.link", messages.GpsLink(state="up", port="feed", last_ok_ts=now, sentences=1), ts=now)
            uplink.publish("uplink.status", messages.UplinkStatus(connected=True, server="feed", queued=7, sent=3,
                                                                  dropped=0, last_ack_ts=now), ts=now)
        svc.wait(svc.args.period)


ALARMS = {"faults": ["ntc_fault", "cell_fault"], "protections": ["cell_overvoltage", "discharge_overcurrent"],
          "warnings": ["cell_high_voltage", "charge_high_temp", "low_power"]}


def _snapshot(packs: int | None, alarms: bool) -> messages.BmsSnapshot:
    made = [uplink_pack(n) for n in range(1, (packs or 2) + 1)]
    if alarms:
        made = [msgspec.structs.replace(p, **ALARMS) for p in made]
    return messages.BmsSnapshot(pack_count=len(made), packs=made, poll_s=0.9)


if __name__ == "__main__":
    def arguments(parser):
        parser.add_argument("--period", type=float, default=0.1)
        parser.add_argument("--links", action="store_true", help="also bms.link, gps.link and uplink.status")
        parser.add_argument("--empty-when", metavar="FILE", help="snapshots without packs while FILE exists")
        parser.add_argument("--packs", type=int, default=None, help="this many packs (1-16) instead of the sample's two")
        parser.add_argument("--alarms", action="store_true", help="faults, protections and warnings in every pack")
    run("feed", main, add_arguments=arguments)
