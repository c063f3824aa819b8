"""Feeds the bus as bms_reader and gps_reader would: ``python -m harness.feed --config C [--period S]``.

Publishes UPLINK_SNAPSHOT, a bms.info and UPLINK_FIX (stamped with the current UTC) every period,
from one process that binds both readers' endpoints (and with --links the link and uplink statuses,
binding the uplink's endpoint too). With --empty-when FILE the snapshots have no packs while FILE exists.
"""

import os
import time

import msgspec

from common import messages
from common.service import Service, run
from harness.samples import SAMPLES, UPLINK_FIX, UPLINK_SNAPSHOT

INFO = messages.BmsInfo(protocol_version="25", address=1, software_version="P16S100A-FEED-1.00",
                        bms_serial="FEEDBMS01", pack_serial="FEEDPACK01", pack_count=2)


def main(svc: Service) -> None:
    bms = svc.bus.publisher(svc.config.bus.bms_reader, "bms_reader")
    gps = svc.bus.publisher(svc.config.bus.gps_reader, "gps_reader")
    uplink = svc.bus.publisher(svc.config.bus.tb_uplink, "tb_uplink") if svc.args.links else None
    empty = messages.BmsSnapshot(pack_count=0, packs=[])
    while not svc.stopping:
        now = time.time()
        gone = svc.args.empty_when and os.path.exists(svc.args.empty_when)
        bms.publish("bms.snapshot", empty if gone else UPLINK_SNAPSHOT, ts=now)
        bms.publish("bms.info", INFO, ts=now)
        bms.publish("bms.config", SAMPLES["bms.config"], ts=now)
        gps.publish("gps.fix", msgspec.structs.replace(UPLINK_FIX, gps_utc=now), ts=now)
        if svc.args.links:
            bms.publish("bms.link", messages.Link(state="up", port="feed", last_ok_ts=now), ts=now)
            gps.publish("gps.link", messages.GpsLink(state="up", port="feed", last_ok_ts=now, sentences=1), ts=now)
            uplink.publish("uplink.status", messages.UplinkStatus(connected=True, server="feed", queued=7, sent=3,
                                                                  dropped=0, last_ack_ts=now), ts=now)
        svc.wait(svc.args.period)


if __name__ == "__main__":
    def arguments(parser):
        parser.add_argument("--period", type=float, default=0.1)
        parser.add_argument("--links", action="store_true", help="also bms.link, gps.link and uplink.status")
        parser.add_argument("--empty-when", metavar="FILE", help="snapshots without packs while FILE exists")
    run("feed", main, add_arguments=arguments)
