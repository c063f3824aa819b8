"""Feeds the bus as bms_reader and gps_reader would, from the simulated vehicle (sim/vehicle.py):
``python -m harness.vehicle_feed --config C [--vehicle small_ev] [--track loop] [--profile city]
[--seconds 600] [--speedup 20] [--bms-outage 300:320]``.

Messages are stamped with the model's time (start + t), published ``--speedup`` times faster
than it runs, as a replay would: a consumer that integrates over message times sees the drive as
it happened. BMS cycles every ``--bms-period`` s and fixes at ``--gps-hz``, at times that fall
between the profile's breakpoints. One pack at 51.2 V. When the drive is over it prints one JSON
line with the model's truth (``"event": "done"``) and then idles until stopped. ``--kill-at-s``
prints ``{"event": "at", ...}`` with the truth when model time passes it (for tests that kill a
consumer there).
"""

from __future__ import annotations

import json
import time

from common import messages
from common.service import Service, run
from sim.vehicle import TRACKS, VEHICLES, Drive

VOLTS, FULL_AH = 51.2, 100.0


def events(seconds: float, gps_hz: float, bms_s: float) -> list[tuple[float, str]]:
    """(model time, "gps" or "bms") of every fix and BMS cycle, merged in time order."""
    fixes = [(0.037 + i / gps_hz, "gps") for i in range(int(seconds * gps_hz))]
    cycles = [(0.011 + i * bms_s, "bms") for i in range(int(seconds / bms_s))]
    return sorted(fixes + cycles)


def truth_line(event: str, drive: Drive, start_ts: float) -> str:
    s = drive.truth
    return json.dumps({"event": event, "t": s.t, "ts": start_ts + s.t, "distance_km": s.distance_m / 1000,
                       "energy_out_wh": s.energy_out_wh, "energy_in_wh": s.energy_in_wh, "laps": s.laps,
                       "lap_times_s": list(s.lap_times_s)})


def publish(drive: Drive, kind: str, t: float, ts: float, bms, gps) -> None:
    s = drive.truth
    if kind == "gps":
        lat, lon, course = drive.track.position(s.distance_m)
        gps.publish("gps.fix", messages.GpsFix(valid=True, speed_km_h=s.speed_m_s * 3.6, course_deg=course, lat=lat,
                                               lon=lon, sats=9, hdop=0.8, fix_quality=1, gps_utc=ts), ts=ts)
        return
    bms.publish("bms.snapshot", messages.BmsSnapshot(pack_count=1, packs=[pack_of(drive)]), ts=ts)


def pack_of(drive: Drive) -> messages.Pack:
    """The one pack as the BMS would report the model's battery now."""
    s = drive.truth
    used_ah = (s.energy_out_wh - s.energy_in_wh) / VOLTS
    return messages.Pack(pack=1, current_a=-s.power_w / VOLTS, voltage_v=VOLTS, power_w=-s.power_w,
                         remaining_ah=FULL_AH * 0.9 - used_ah, full_ah=FULL_AH, soc_pct=90 - used_ah)


def main(svc: Service) -> None:
    a = svc.args
    bms = svc.bus.publisher(svc.config.bus.bms_reader, "bms_reader")
    gps = svc.bus.publisher(svc.config.bus.gps_reader, "gps_reader")
    drive = Drive(VEHICLES[a.vehicle], TRACKS[a.track], a.profile)
    outage = tuple(map(float, a.bms_outage.split(":"))) if a.bms_outage else None
    svc.wait(a.delay_s)  # the consumers' subscriptions reach the sockets
    start_ts, start = time.time(), time.monotonic()
    marked = a.kill_at_s is None
    for t, kind in events(a.seconds, a.gps_hz, a.bms_period):
        if svc.wait(start + t / a.speedup - time.monotonic()):
            return
        drive.at(t)
        if not marked and t >= a.kill_at_s:
            print(truth_line("at", drive, start_ts), flush=True)
            marked = True
        if kind == "gps" or not (outage and outage[0] <= t < outage[1]):
            publish(drive, kind, t, start_ts + t, bms, gps)
    print(truth_line("done", drive, start_ts), flush=True)
    while not svc.wait(1.0):
        pass


def _arguments(p) -> None:
    p.add_argument("--vehicle", choices=sorted(VEHICLES), default="small_ev")
    p.add_argument("--track", choices=sorted(TRACKS), default="loop")
    p.add_argument("--profile", default="city")
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--speedup", type=float, default=20.0)
    p.add_argument("--gps-hz", type=float, default=5.0)
    p.add_argument("--bms-period", type=float, default=0.33)
    p.add_argument("--bms-outage", default=None, help="FROM:TO model seconds without BMS messages")
    p.add_argument("--kill-at-s", type=float, default=None)
    p.add_argument("--delay-s", type=float, default=1.0)


if __name__ == "__main__":
    run("vehicle_feed", main, add_arguments=_arguments)
