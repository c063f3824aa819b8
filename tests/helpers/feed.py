"""Feeds the bus as bms_reader and gps_reader would: ``python -m tests.helpers.feed --config C [--period S]``.

Publishes UPLINK_SNAPSHOT, a bms.info and UPLINK_FIX (stamped with the current UTC) every period,
from one process that binds both readers' endpoints.
"""

import time

import msgspec

from common import messages
from common.service import Service, run
from tests.helpers.samples import UPLINK_FIX, UPLINK_SNAPSHOT

INFO = messages.BmsInfo(protocol_version="25", address=1, software_version="P16S100A-FEED-1.00",
                        bms_serial="FEEDBMS01", pack_serial="FEEDPACK01", pack_count=2)


def main(svc: Service) -> None:
    bms = svc.bus.publisher(svc.config.bus.bms_reader, "bms_reader")
    gps = svc.bus.publisher(svc.config.bus.gps_reader, "gps_reader")
    while not svc.stopping:
        now = time.time()
        bms.publish("bms.snapshot", UPLINK_SNAPSHOT, ts=now)
        bms.publish("bms.info", INFO, ts=now)
        gps.publish("gps.fix", msgspec.structs.replace(UPLINK_FIX, gps_utc=now), ts=now)
        svc.wait(svc.args.period)


if __name__ == "__main__":
    run("feed", main, add_arguments=lambda p: p.add_argument("--period", type=float, default=0.1))
