"""An NMEA source on a pty or a TCP port: replays a receiver log, or drives a synthetic route.

    python -m sim.nmea --pty [--link /tmp/ttyGPS] | --tcp PORT  [--replay LOG [--speed 10]] [options]

The route mode behaves like a u-blox NEO-6M in a car: every epoch (1 Hz, or 5 Hz with --rate 5)
it sends RMC, VTG, GGA, GSA, GSV and GLL (talker GP, NMEA 2.3 mode fields), paced at --baud, for
a drive that stops, accelerates, cruises and brakes. Faults: bad checksums, junk bytes, dropped
sentences, loss of fix (the NEO-6M's empty V/N sentences) and a closed port, every
--fault-every epochs in turn or at random with --fault-prob. With --events each epoch's truth
(UTC, speed, position, validity) and each fault is printed as a JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import math
import random
import time
from pathlib import Path

from common.clock import Timebase
from sim import vehicle
from sim.faults import FaultPlan, add_fault_arguments
from sim.port import add_port_arguments, announce, serve

FAULTS = ("bad_checksum", "junk", "drop_sentence", "lose_fix", "close")
# Behaviours of real receivers and links, on every epoch while asked for (--quirk, repeatable):
# stall: a 0.3 s pause inside the RMC line (a TCP bridge, Bluetooth, Wi-Fi);
# ubx: a u-blox UBX binary frame (holding CR, LF and '$' bytes) right before the RMC;
# txt: a $GPTXT between epochs (after the burst); pubx: a long $PUBX,03 after the GLL;
# rollover: dates 1024 weeks in the past (the GPS week-number rollover bug);
# leap: the drive starts at 23:59:58 UTC and the third second is 23:59:60.
QUIRKS = ("stall", "ubx", "txt", "pubx", "rollover", "leap")
STALL_S = 0.3
# A UBX NAV-SAT-sized frame: 330 bytes whose payload holds CR, LF and '$', with no line end after it.
UBX_FRAME = b"\xb5\x62\x01\x35\x88\x01" + bytes(range(0x80, 0xC0)) + b"\r\x0a\x24\x00" + bytes(range(0x80, 0x100)) * 2
ROLLOVER = dt.timedelta(weeks=1024)
LOST_FIX_EPOCHS = 4
# (seconds into the cycle, km/h); linear between points.
SPEED_PROFILE = [(0, 0.0), (8, 0.0), (18, 50.0), (40, 52.0), (48, 80.0), (70, 78.0), (82, 30.0), (88, 30.0),
                 (96, 0.0), (100, 0.0)]
START = (47.3769, 8.5417)  # lat, lon
NO_FIX = ["GPRMC,,V,,,,,,,,,,N", "GPVTG,,,,,,,,,N", "GPGGA,,,,,,0,00,99.99,,,,,,",
          "GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99", "GPGSV,1,1,00", "GPGLL,,,,,,V,N"]


PUBX03 = "PUBX,03,24," + ",".join(f"{n:02d},U,{n * 15 % 360:03d},{10 + n * 3 % 80:02d},{30 + n % 20},064"
                                    for n in range(1, 25))


def checksum(body: str) -> str:
    return f"{functools.reduce(lambda acc, ch: acc ^ ord(ch), body, 0):02X}"


def sentence(body: str) -> bytes:
    return f"${body}*{checksum(body)}\r\n".encode("ascii")


def speed_at(t: float) -> float:
    phase = t % SPEED_PROFILE[-1][0]
    for (t0, v0), (t1, v1) in zip(SPEED_PROFILE, SPEED_PROFILE[1:]):
        if phase <= t1:
            return v0 + (v1 - v0) * (phase - t0) / (t1 - t0)
    return 0.0


def _dm(value: float, degree_digits: int) -> str:
    degrees = int(abs(value))
    minutes = (abs(value) - degrees) * 60
    return f"{degrees:0{degree_digits}d}{minutes:08.5f}"


class Route:
    """A car driving the speed profile on a slowly turning heading."""

    def __init__(self, start_s: float = 0.0) -> None:
        self.lat, self.lon = START
        self.t = start_s
        self.course = 90.0

    def step(self, dt_s: float) -> float:
        self.t += dt_s
        speed = speed_at(self.t)
        self.course = (self.course + 3.0 * dt_s) % 360
        metres = speed / 3.6 * dt_s
        self.lat += metres * math.cos(math.radians(self.course)) / 111_320
        self.lon += metres * math.sin(math.radians(self.course)) / (111_320 * math.cos(math.radians(self.lat)))
        return speed


def route_epoch(now: dt.datetime, lat: float, lon: float, speed_kmh: float, course: float,
                hms: str | None = None, date: dt.date | None = None) -> list[str]:
    """One epoch's sentences; ``hms`` and ``date`` override what the receiver says (a leap
    second, a rolled-over date)."""
    hms = hms or now.strftime("%H%M%S.") + f"{now.microsecond // 10000:02d}"
    ddmmyy = f"{date or now:%d%m%y}"
    knots = f"{speed_kmh / 1.852:.3f}"
    ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    pos = f"{_dm(lat, 2)},{ns},{_dm(lon, 3)},{ew}"
    course_txt = f"{course:.2f}" if speed_kmh > 0.5 else ""
    return [f"GPRMC,{hms},A,{pos},{knots},{course_txt},{ddmmyy},,,A",
            f"GPVTG,{course_txt},T,,M,{knots},N,{speed_kmh:.3f},K,A",
            f"GPGGA,{hms},{pos},1,08,1.01,412.3,M,47.1,M,,",
            "GPGSA,A,3,02,05,12,15,18,21,24,29,,,,,1.85,1.01,1.55",
            "GPGSV,2,1,08,02,45,120,38,05,30,200,35,12,60,080,41,15,20,310,30",
            "GPGSV,2,2,08,18,15,040,28,21,70,180,44,24,35,260,36,29,10,350,25",
            f"GPGLL,{pos},{hms},A,A"]


class NmeaSource:
    def __init__(self, args: argparse.Namespace, port):
        self.args, self.port = args, port
        self.rng = random.Random(args.seed)
        self.faults = FaultPlan(args)
        self.epochs = 0
        self.lost_fix_left = 0

    def send_epoch(self, bodies: list[str], truth: dict) -> None:
        self.epochs += 1
        fault = self.faults.next()
        if fault == "lose_fix":
            self.lost_fix_left = LOST_FIX_EPOCHS
        if self.lost_fix_left:
            self.lost_fix_left -= 1
            bodies, truth = NO_FIX, {"valid": False, "speed_km_h": None}
        if fault:
            announce(event="fault", epoch=self.epochs, kind=fault)
        if fault == "close":
            self.port.drop()
            return
        if self.args.events:
            announce(event="epoch", epoch=self.epochs, **truth)
        lines = [sentence(b) for b in bodies]
        if "pubx" in self.args.quirk:
            lines.append(sentence(PUBX03))
        if fault == "bad_checksum":
            i = self.rng.randrange(len(lines))
            lines[i] = lines[i][:-4] + (b"00" if lines[i][-4:-2] != b"00" else b"11") + b"\r\n"
        elif fault == "drop_sentence":
            del lines[self.rng.randrange(1, len(lines))]
        elif fault == "junk":
            lines.insert(self.rng.randrange(len(lines)), b"\xb5b\x01\x07\x5c\x00junk\xff\xfe\r\n")
        if "ubx" in self.args.quirk:
            lines.insert(0, UBX_FRAME)
        data = b"".join(lines)
        if "stall" in self.args.quirk:
            cut = data.index(b"$GPRMC") + 20
            self.port.send(data[:cut], self.args.baud)
            self.port.recv(STALL_S)
            data = data[cut:]
        self.port.send(data, self.args.baud)

    def drive(self) -> None:
        """Send the route's epochs in real time. On TCP the drive starts when a reader connects,
        so every epoch and fault reported went to a reader (after a ``close`` fault it goes on)."""
        self.port.wait_for_peer()
        route = Route(self.args.start_s)
        period = 1.0 / self.args.rate
        start, wall = time.monotonic(), time.time()
        # --speedup: the epochs' times (and the vehicle's) run that much faster from the drive's start.
        timebase = Timebase(self.args.speedup, wall if self.args.drive_start is None else self.args.drive_start)
        first = dt.datetime.fromtimestamp(timebase.at(wall), dt.UTC).replace(microsecond=0)
        if "leap" in self.args.quirk:
            first = first.replace(hour=23, minute=59, second=58)
        car = vehicle.drive_of(self.args, first.timestamp())
        while True:
            now, hms, date = self._label(first, self.epochs * period)
            lat, lon, speed, course, extra = self._vehicle(car, now.timestamp()) if car else \
                (*self._route(route, period), {})
            bodies = route_epoch(now, lat, lon, speed, course, hms, date)
            if self.args.rate > 1:
                bodies = bodies[:3]  # at 5 Hz a 9600 baud line only has room for RMC, VTG and GGA
            knots = float(f"{speed / 1.852:.3f}")
            self.send_epoch(bodies, {"valid": True, "utc": now.timestamp(), "speed_km_h": round(knots * 1.852, 3),
                                     "lat": round(lat, 7), "lon": round(lon, 7), **extra})
            if "txt" in self.args.quirk:
                self._pause(start + timebase.real_s((self.epochs - 0.25) * period))  # after the burst and its quiet
                self.port.send(sentence("GPTXT,01,01,02,ANTSTATUS=OK"), self.args.baud)
            self._pause(start + timebase.real_s(self.epochs * period))

    @staticmethod
    def _route(route: Route, period: float) -> tuple[float, float, float, float]:
        speed = route.step(period)
        return route.lat, route.lon, speed, route.course

    @staticmethod
    def _vehicle(car: tuple, utc: float) -> tuple[float, float, float, float, dict]:
        """The simulated vehicle at the epoch's time (--vehicle), with the model's truth."""
        drive, start = car
        truth = drive.at(utc - start)
        lat, lon, course = drive.track.position(truth.distance_m)
        event = vehicle.truth_event(drive, utc)
        return lat, lon, truth.speed_m_s * 3.6, course, {k: event[k] for k in ("distance_m", "laps", "lap_times_s")}

    def _pause(self, until: float) -> None:
        while (left := until - time.monotonic()) > 0:
            self.port.recv(min(left, 0.2))

    def _label(self, first: dt.datetime, elapsed_s: float) -> tuple[dt.datetime, str | None, dt.date | None]:
        """The epoch's UTC as POSIX time, and what the receiver says of it when a quirk makes
        that differ: 23:59:60 in a leap second (POSIX gives it the next midnight, and the second
        after it too), a date 1024 weeks back with the rollover bug."""
        now, hms, date = first + dt.timedelta(seconds=elapsed_s), None, None
        if "leap" in self.args.quirk and elapsed_s >= 3:
            now -= dt.timedelta(seconds=1)  # after the inserted second POSIX time is a second behind
        elif "leap" in self.args.quirk and elapsed_s >= 2:
            hms, date = "235960." + f"{now.microsecond // 10000:02d}", (now - dt.timedelta(days=1)).date()
        if "rollover" in self.args.quirk:
            date = (date or now.date()) - ROLLOVER
        return now, hms, date

    def replay(self, path: str) -> None:
        """Send the log's sentences, pausing 1/--speed s after each RMC, and say when all have been
        sent. On TCP the replay starts when a reader connects, so nothing is sent into the void."""
        lines = [line.strip() for line in Path(path).read_text(encoding="ascii", errors="replace").splitlines()
                 if line.startswith("$")]
        self.port.wait_for_peer()
        while True:
            for line in lines:
                self.port.send(line.encode("ascii") + b"\r\n", self.args.baud)
                if line[3:6] == "RMC":
                    self.port.recv(1.0 / self.args.speed)
            announce(event="replayed", sentences=len(lines))
            if not self.args.loop:
                while True:
                    self.port.recv(1.0)


def _arguments() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim.nmea", description=__doc__.split("\n\n")[0])
    add_port_arguments(p)
    p.add_argument("--replay", help="send this receiver log instead of the synthetic route")
    p.add_argument("--speed", type=float, default=1.0, help="with --replay: epochs per second")
    p.add_argument("--loop", action="store_true", help="with --replay: start again at the end")
    p.add_argument("--rate", type=int, choices=(1, 5), default=1, help="route epochs per second")
    p.add_argument("--speedup", type=float, default=1.0,
                   help="the route's time runs this much faster (its epochs per second of its own time)")
    p.add_argument("--start-s", type=float, default=0.0, help="start this far into the drive (it stands still at first)")
    p.add_argument("--baud", type=int, default=9600, help="pace output at this rate (0 = no pacing)")
    p.add_argument("--quirk", action="append", choices=QUIRKS, default=[],
                   help="a real receiver's behaviour, on every epoch (repeatable; see QUIRKS)")
    add_fault_arguments(p, FAULTS, "epochs")
    p.add_argument("--events", action="store_true", help="print each epoch's truth and each fault as JSON")
    vehicle.add_vehicle_arguments(p)
    return p


def main() -> None:
    args = _arguments().parse_args()

    def run(port) -> None:
        source = NmeaSource(args, port)
        source.replay(args.replay) if args.replay else source.drive()
    serve(args, run)


if __name__ == "__main__":
    main()
