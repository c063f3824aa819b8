"""A PACE BMS on a pty or a TCP port: speaks the v2.5 read commands for a simulated stack.

    python -m sim.pace_bms --pty [--link /tmp/ttyBMS] | --tcp PORT  [options]

The first stdout line is JSON saying where it listens (``{"event": "listening", "device": ...}``).
Replies start after the request has taken its wire time plus ``--response-delay-ms`` and are paced
at ``--baud``, so a reader meets real timing. Faults (``--fault KIND``, repeatable) are injected
every ``--fault-every`` replies in turn, or at random with ``--fault-prob``; with ``--events`` each
reply and fault is printed as a JSON line, so a test can compare what a reader saw with what was
sent. ``--vectors FILE`` answers with captured frames instead of the simulated battery.
``--family 20-eg4|20-seplos`` speaks a VER 20 vendor layout instead, answering another family's
frames with the VER or CID1 error code (``--foreign silent``: not at all).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import time

from common import pace
from common.clock import Timebase
from common.pace import commands, families
from sim import vehicle
from sim.battery import Battery
from sim.faults import FaultPlan, add_fault_arguments
from sim.port import SimPort, add_port_arguments, announce, serve, wire_seconds

FAULTS = ("no_answer", "corrupt", "checksum", "split", "junk", "drop", "rtn", "truncated")
# What a correct reader counts each fault as (split is no error: the reader must reassemble).
FAULT_KINDS = {"no_answer": "timeout", "corrupt": "checksum", "checksum": "checksum", "split": None,
               "junk": "junk", "drop": "io", "rtn": "rtn", "truncated": "framing"}
JUNK = b"\x00\xff\x13AT+noise\r\n"
SOFTWARE_VERSION = "P16S100A-SIM-1.00"


def _tail(size: int, pack: pace.AnalogPack) -> bytes:
    """Extra bytes as field firmwares append them (docs/pace.md, "Extra bytes after each pack block")."""
    soc = round(pack.remaining_10mah / pack.full_10mah * 100) if pack.full_10mah else 0
    design = (pack.design_10mah or 0).to_bytes(2, "big")
    if size == 14:
        soh = round(pack.full_10mah / pack.design_10mah * 100) if pack.full_10mah and pack.design_10mah else 0
        return bytes([soc]) + design * 4 + bytes([min(soh, 255)]) + pack.voltage_mv.to_bytes(2, "big") + b"\0\0"
    if size == 10:
        return bytes([soc]) + design * 4 + b"\x64"
    return bytes([soc])[:size]


SET_DATETIME = 0xB2


class _Refused(Exception):
    """The simulated BMS answers with this RTN instead of data."""

    def __init__(self, rtn: int):
        self.rtn = rtn


class SimClock:
    """The BMS's own clock: it starts ``offset_s`` off the system clock and drifts ``ppm``."""

    def __init__(self, offset_s: float, ppm: float):
        self.ppm = ppm
        self._set_at = time.time()
        self._base = self._set_at + offset_s

    def now(self) -> dt.datetime:
        elapsed = time.time() - self._set_at
        # Local time, as PBmsTools sets it from a PC.
        return dt.datetime.fromtimestamp(self._base + elapsed * (1 + self.ppm / 1e6)).replace(microsecond=0)

    def set(self, when: dt.datetime) -> None:
        self._set_at = time.time()
        self._base = when.timestamp()


class PaceDevice:
    def __init__(self, args: argparse.Namespace, port: SimPort):
        self.args = args
        self.port = port
        packs = len(args.addresses) if args.addresses else args.packs
        self.battery = Battery(packs, args.cells, args.temps, seed=args.seed, frozen=args.freeze)
        for number in args.offline:
            self.battery.packs[number - 1].online = False
        self.rng = random.Random(args.seed)
        self.faults = FaultPlan(args)
        self.replies = 0
        self.vectors = _load_vectors(args.vectors) if args.vectors else None
        self._last_advance = time.monotonic()
        self.clock = SimClock(args.clock_offset_s, args.clock_drift_ppm)
        self.addresses: list[int] = args.addresses or []
        self.backlog: list[bytes] = []
        self._held_in = b""
        self._thawed = True
        self._first_request_at: float | None = None
        self._started = time.monotonic()
        self.vehicle = vehicle.drive_of(args, time.time())
        # The vehicle's time runs --speedup times faster from its start, as the battery's does.
        self.timebase = Timebase(args.speedup, self.vehicle[1]) if self.vehicle else None

    def serve(self) -> None:
        splitter = pace.FrameSplitter()
        first_byte_at = 0.0
        while True:
            data = self._held_in + self.port.recv(0.2)
            self._held_in = b""
            self._flush_backlog()
            if self._frozen():
                # The bridge holds what the reader sends too; the BMS sees it when the freeze ends.
                self._held_in, self._thawed = data, False
                continue
            if not self._thawed:
                self._thawed = True
                announce(event="thaw", held_bytes=len(data), replies_held=len(self.backlog), t=round(time.time(), 3))
            if not data:
                continue
            if splitter.pending == 0:
                first_byte_at = time.monotonic()
            for event in splitter.feed(data):
                if isinstance(event, pace.Frame):
                    if self.args.echo:  # a half-duplex RS485 adapter hears what it sends
                        self.port.send(pace.encode_frame(event.cid2, event.info, event.adr, event.ver, event.cid1), None)
                    self.answer(event, first_byte_at + wire_seconds(18 + 2 * len(event.info), self.args.baud))
                elif isinstance(event.error, pace.ChecksumError):
                    rtn = 0x03 if isinstance(event.error, pace.LengthChecksumError) else 0x02
                    self.write(pace.encode_frame(rtn, adr=self.args.address), first_byte_at)
                first_byte_at = time.monotonic()

    def answer(self, request: pace.Frame, request_done_at: float) -> None:
        if self.args.events:
            announce(event="request", command=f"{request.cid2:02X}", adr=request.adr, ver=f"{request.ver:02X}",
                     cid1=f"{request.cid1:02X}", t=round(time.time(), 3))
        if self.addresses and (request.adr not in self.addresses or request.adr in self.args.dead):
            return  # on a shared RS485 bus only the addressed pack speaks; a dead one is silent
        if self._foreign_rtn(request) and self.args.foreign == "silent":
            return  # a firmware that ignores frames of another protocol family
        now = time.monotonic()
        if self._first_request_at is None:
            self._first_request_at = now
        self.battery.advance((now - self._last_advance) * self.args.speedup, self._vehicle_power(request))
        self._hold_current(now)
        self._last_advance = now
        self.replies += 1
        wanted = self.args.fault_command is None or request.cid2 == self.args.fault_command
        fault = self.faults.next() if wanted else None
        if fault:
            announce(event="fault", n=self.replies, kind=fault, counted_as=FAULT_KINDS[fault],
                     command=f"{request.cid2:02X}", t=round(time.time(), 3))
        if fault == "no_answer":
            return
        if fault == "drop":
            self.port.drop()
            return
        reply = self._reply(request) if fault != "rtn" else self._frame(0x02)
        if fault == "corrupt":
            i = 13 + self.rng.randrange(max(1, len(reply) - 18))
            reply = reply[:i] + (b"A" if reply[i:i + 1] != b"A" else b"B") + reply[i + 1:]
        elif fault == "checksum":
            reply = reply[:-5] + b"%04X\r" % ((int(reply[-5:-1], 16) + 1) & 0xFFFF)
        elif fault == "truncated":
            reply = reply[: max(14, len(reply) // 2)]
        self.write(reply, request_done_at, split=fault == "split", junk=fault == "junk")

    def _frozen(self) -> bool:
        """Inside the bridge freeze: requests and replies are held, as a TCP bridge that stalls
        keeps them; afterwards the held replies go at once and the held requests are answered in
        turn at the line's pace, so stale replies keep coming for a while."""
        if self.args.freeze_at_s is None or self._first_request_at is None:
            return False
        start = self._first_request_at + self.args.freeze_at_s
        return start <= time.monotonic() < start + self.args.freeze_for_s

    def _flush_backlog(self) -> None:
        if self.backlog and not self._frozen():
            held, self.backlog = self.backlog, []
            self.port.send(b"".join(held), None)

    def write(self, data: bytes, request_done_at: float, split: bool = False, junk: bool = False) -> None:
        time.sleep(max(0.0, request_done_at + self.args.response_delay_ms / 1000 - time.monotonic()))
        if self._frozen():
            self.backlog.append(data)
            return
        self._flush_backlog()
        if junk:
            self.port.send(JUNK, self.args.baud)
        if split:
            half = len(data) // 2
            self.port.send(data[:half], self.args.baud)
            time.sleep(0.05)
            data = data[half:]
        self.port.send(data, self.args.baud)
        if self.args.events:
            announce(event="sent", n=self.replies, t_end=round(time.time(), 4))

    def _frame(self, rtn: int, info: bytes = b"") -> bytes:
        adr = self.args.address if self.args.reply_adr is None else self.args.reply_adr
        ver = 0x20 if self.args.ver20 or self.args.family != "25" else 0x25
        cid1 = families.CID1_EG4 if self.args.family == "20-eg4" else pace.frame.CID1_LITHIUM
        return pace.encode_frame(rtn, info, adr=adr, ver=ver, cid1=cid1)

    def _foreign_rtn(self, request: pace.Frame) -> int | None:
        """The SPEC's error code for a request of another family than --family: VER error 01,
        CID1 error E1. A v2.5 BMS takes any VER (the hybrids' VER 20 requests included)."""
        if self.args.family == "25":
            return None
        cid1 = families.CID1_EG4 if self.args.family == "20-eg4" else pace.frame.CID1_LITHIUM
        if request.cid1 != cid1:
            return 0xE1
        return 0x01 if request.ver != families.VER_20 else None

    def _vehicle_power(self, request: pace.Frame) -> float | None:
        """The simulated vehicle's battery power now (--vehicle), its truth printed with each analog
        reply (--events)."""
        if self.vehicle is None:
            return None
        drive, start = self.vehicle
        stamp = self.timebase.now()
        drive.at(stamp - start)
        if self.args.events and request.cid2 == 0x42:
            announce(**vehicle.truth_event(drive, stamp), deliverable_wh=round(self.battery.deliverable_wh(), 2))
        return drive.truth.power_w

    def _hold_current(self, now: float) -> None:
        """--current-a fixes every pack's current, until --idle-after-s, after which none flows."""
        amps = self.args.current_a
        if self.args.idle_after_s is not None and now - self._started >= self.args.idle_after_s:
            amps = 0.0
        if amps is not None:
            for pack in self.battery.packs:
                pack.current_a = amps if pack.online else 0.0

    def _reply(self, request: pace.Frame) -> bytes:
        if self.vectors is not None:
            return self._captured(request)
        if (rtn := self._foreign_rtn(request)) is not None:
            return self._frame(rtn)
        if request.cid2 == SET_DATETIME and self.args.family == "25":
            return self._set_clock(request)
        command = commands.by_cid2(request.cid2, self.args.family)
        if command is None or request.cid2 in self.args.unsupported:
            return self._frame(0x04)
        try:
            value = self._value(command, request)
        except _Refused as e:
            return self._frame(e.rtn)
        return self._frame(0, command.encode(value))

    def _value(self, command: commands.ReadCommand, request: pace.Frame):
        """What the simulated BMS answers ``command`` with: its model's value, or the table's sample."""
        model = {"analog": self._packs, "status": self._packs, "eg4_analog": self._packs, "eg4_status": self._packs,
                 "seplos_analog": self._packs, "pack_count": self._pack_count,
                 "software_version": lambda c, r: SOFTWARE_VERSION,
                 "serials": lambda c, r: pace.Serials(f"SIMBMS{self.args.seed:010d}", f"SIMPACK{self.args.seed:08d}"),
                 "capacities": self._capacities, "datetime": lambda c, r: self.clock.now()}.get(command.name)
        if model is not None:
            return model(command, request)
        if command.sample is None:
            raise _Refused(0x04)
        return command.sample

    def _packs(self, command: commands.ReadCommand, request: pace.Frame) -> pace.PackReply:
        # EG4 requests carry no INFO: they ask the addressed pack.
        which = request.info[0] if request.info else request.adr if command.family == "20-eg4" else pace.ALL_PACKS
        if self.addresses:
            # Daisy-chained RS485: each pack answers for itself at its own address.
            numbers, count_byte = [self.addresses.index(request.adr) + 1], which
        else:
            numbers = range(1, len(self.battery.packs) + 1) if which == pace.ALL_PACKS else [which]
            count_byte = len(self.battery.packs) if which == pace.ALL_PACKS else which
        if any(not 1 <= n <= len(self.battery.packs) for n in numbers):
            raise _Refused(0x06)
        if command.block == "analog":
            packs = [self._analog(n - 1) for n in numbers]
            self._report(f"{command.cid2:02X}", numbers, packs, None)
        else:
            packs = [self.battery.status(n - 1, bytes(self.args.status_extra)) for n in numbers]
            self._report(f"{command.cid2:02X}", numbers, None, packs)
        return pace.PackReply(0, count_byte, which == pace.ALL_PACKS, tuple(packs))

    def _pack_count(self, command, request: pace.Frame) -> int:
        return len(self.battery.packs) if request.adr in (0, 1) and not self.addresses else 1

    def _capacities(self, command, request: pace.Frame) -> pace.Capacities:
        first = self.battery.analog(self.addresses.index(request.adr) if self.addresses else 0)
        return pace.Capacities(first.remaining_ah, first.full_ah or 0.0, first.design_ah or 0.0)

    def _set_clock(self, request: pace.Frame) -> bytes:
        try:
            when = pace.decode_datetime(pace.Frame(request.ver, request.adr, request.cid1, 0, request.info))
        except pace.DecodeError:
            return self._frame(0x06)
        self.clock.set(when)
        announce(event="clock_set", to=when.isoformat(), t=round(time.time(), 3),
                 current_a=[p.current_a for p in self.battery.packs])
        return self._frame(0)

    def _analog(self, index: int) -> pace.AnalogPack:
        args = self.args
        pack = self.battery.analog(index, design=not args.ver20, user_count=9 if args.tail == 14 else 3)
        if args.tail:
            pack = pace.AnalogPack(**{**pack.__dict__, "extra": _tail(args.tail, pack)})
        return pack

    def _report(self, command: str, numbers, analog, status) -> None:
        if self.args.events:
            packs = [pace.pack_fields(n, a, s) for n, a, s in
                     zip(numbers, analog or [None] * len(numbers), status or [None] * len(numbers))]
            announce(event="reply", n=self.replies, command=command, t=round(time.time(), 3), packs=packs)

    def _captured(self, request: pace.Frame) -> bytes:
        key = (f"{request.cid2:02X}", request.info.hex().upper() or None)
        frames = self.vectors.get(key) or self.vectors.get((key[0], None))
        if not frames:
            return self._frame(0x04)
        frames.append(frames.pop(0))
        return frames[-1]


def _load_vectors(path: str) -> dict[tuple[str, str | None], list[bytes]]:
    """Valid captured replies by (command, request COMMAND byte)."""
    table: dict[tuple[str, str | None], list[bytes]] = {}
    for v in json.loads(open(path, encoding="utf-8").read()):
        if (v["direction"] == "response" and v.get("command") and not v.get("info_only")
                and v["checksum_ok"] and v["lchksum_ok"] and v["length_ok"]):
            table.setdefault((v["command"], v.get("request_info")), []).append(v["frame"].encode())
    return table


def _arguments() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim.pace_bms", description=__doc__.split("\n\n")[0])
    add_port_arguments(p)
    p.add_argument("--packs", type=int, default=1, choices=range(1, 17), metavar="1-16")
    p.add_argument("--cells", type=int, default=16, choices=range(8, 17), metavar="8-16")
    p.add_argument("--temps", type=int, default=6, choices=range(4, 9), metavar="4-8")
    p.add_argument("--baud", type=int, default=9600, help="pace replies at this rate (0 = no pacing)")
    p.add_argument("--response-delay-ms", type=float, default=20.0, help="delay between request and reply")
    p.add_argument("--address", type=int, default=1, help="this BMS's DIP address (ADR of replies)")
    p.add_argument("--speedup", type=float, default=1.0,
                   help="battery time (and with --vehicle the drive's) runs this much faster")
    p.add_argument("--freeze", action="store_true", help="keep every value constant")
    add_fault_arguments(p, FAULTS, "replies")
    p.add_argument("--fault-command", type=lambda x: int(x, 16), default=None, help="only replies to this CID2 (hex)")
    p.add_argument("--tail", type=int, choices=(0, 1, 10, 14), default=0, help="extra bytes after each analog block")
    p.add_argument("--status-extra", type=int, default=0, help="extra bytes after each status block")
    p.add_argument("--reply-adr", type=int, default=None, help="answer with this ADR whatever was asked")
    p.add_argument("--offline", type=int, action="append", default=[], help="this pack sends only zeros")
    p.add_argument("--ver20", action="store_true", help="VER 20 replies without design capacity (Itel-style)")
    p.add_argument("--family", choices=families.FAMILIES, default="25",
                   help="reply layout family: PACE v2.5, or the VER 20 layouts of EG4 and Seplos")
    p.add_argument("--foreign", choices=("error", "silent"), default="error",
                   help="a request of another family: answered with the VER/CID1 error code, or ignored")
    p.add_argument("--echo", action="store_true", help="echo each request first, as RS485 adapters do")
    p.add_argument("--vectors", help="answer with the captured replies of this vectors.json")
    p.add_argument("--unsupported", type=lambda x: int(x, 16), action="append", default=[],
                   help="answer this CID2 (hex) with RTN 04, as a firmware that does not know it")
    p.add_argument("--clock-offset-s", type=float, default=0.0, help="the BMS clock starts this far off")
    p.add_argument("--clock-drift-ppm", type=float, default=0.0, help="and drifts this much")
    p.add_argument("--addresses", type=lambda x: [int(a) for a in x.split(",")], default=None,
                   help="RS485 daisy chain: one pack per address (1,2,3), each answering only at its own")
    p.add_argument("--current-a", type=float, default=None, help="every pack's current, fixed")
    p.add_argument("--idle-after-s", type=float, default=None, help="no current flows from this time on")
    p.add_argument("--freeze-at-s", type=float, default=None,
                   help="a bridge freeze this long after the first request: replies are held, then sent at once")
    p.add_argument("--freeze-for-s", type=float, default=15.0, help="how long the freeze lasts")
    p.add_argument("--dead", type=int, action="append", default=[], help="this address never answers")
    p.add_argument("--events", action="store_true", help="print each reply and fault as a JSON line")
    vehicle.add_vehicle_arguments(p)
    return p


def main() -> None:
    args = _arguments().parse_args()
    serve(args, lambda port: PaceDevice(args, port).serve())


if __name__ == "__main__":
    main()
