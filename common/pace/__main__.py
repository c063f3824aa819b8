"""Decode PACE frames pasted from a log.

    python -m common.pace decode [--command 42] [--request-info FF] [--force-pack-offset N] < frames.txt

Reads one frame per line (the trailing CR may be missing, or written as the two characters \\r)
and prints one JSON line per frame: ``{"ok": true, "command": "42", "packs": [...], ...}`` with
the pack fields of the bus contract, or ``{"ok": false, "error": "<kind>", "detail": "..."}``.
Without --command the command is guessed from the frame's layout.
"""

from __future__ import annotations

import argparse
import sys

import msgspec

from common import pace
from common.pace.decode import DecodeError

# Return codes a reply can carry; any other CID2 in a pasted frame is taken as a request's command.
# 0x90 is both "ADR error" and the pack-count command; a pasted 90 frame is far more often the latter.
_RTN_CODES = {*range(0x00, 0x0A), 0x91, 0xE1, 0xE2, 0xE3, 0xE4}


def _hex_byte(text: str) -> int:
    return int(text, 16)


def _frame_bytes(line: str) -> bytes:
    text = line.strip()
    if text.endswith("\\r"):
        text = text[:-2]
    return text.encode("ascii", errors="replace") + b"\r"


def _guess_command(frame: pace.Frame) -> int | None:
    """The read command whose reply layout fits; None when none does (INFO shown raw)."""
    info = frame.info
    if len(info) == 1:
        return pace.Command.PACK_COUNT if 1 <= info[0] <= 16 else None
    if len(info) < 3:
        return None
    if len(info) == 6:
        try:
            pace.decode_datetime(frame)
            return pace.Command.DATETIME
        except DecodeError:
            return pace.Command.CAPACITIES
    if len(info) in (20, 40) and all(32 <= b < 127 or b == 0 for b in info):
        return pace.Command.VERSION if len(info) == 20 else pace.Command.SERIALS
    try:
        pace.decode_analog(frame, None)
        return pace.Command.ANALOG
    except DecodeError as analog_error:
        try:
            pace.decode_status(frame, None)
            return pace.Command.STATUS
        except DecodeError as status_error:
            raise DecodeError(f"fits neither the analog layout ({analog_error}) "
                              f"nor the status layout ({status_error})") from None


def _packs(reply, request_info: int | None, analog: bool) -> list[dict]:
    numbers = (range(1, len(reply.packs) + 1) if reply.is_count
               else [reply.count_byte if 1 <= reply.count_byte <= 15 else 1])
    return [pace.pack_fields(n, p if analog else None, None if analog else p)
            for n, p in zip(numbers, reply.packs)]


def decode_line(line: str, command: int | None, request_info: int | None, force_pack_offset: int) -> dict:
    """The JSON-ready result for one pasted frame."""
    try:
        events = pace.FrameSplitter().feed(_frame_bytes(line))
        if not events:
            raise pace.FrameError("no frame: a frame starts with '~' and is 18 + LENID characters long")
        if isinstance(events[0], pace.BadFrame):
            raise events[0].error
        frame = events[0]
        out = {"ok": True, "ver": f"{frame.ver:02X}", "adr": frame.adr, "cid1": f"{frame.cid1:02X}"}
        if command is None and frame.cid2 not in _RTN_CODES:
            return {**out, "direction": "request", "command": f"{frame.cid2:02X}", "info": frame.info.hex().upper()}
        frame.check_rtn()
        cmd = command if command is not None else _guess_command(frame)
        out["command"] = None if cmd is None else f"{cmd:02X}"
        return {**out, **_decode(frame, cmd, request_info, force_pack_offset)}
    except pace.PaceError as e:
        detail = {"detail": str(e)}
        if isinstance(e, pace.DeviceError):
            detail["rtn"] = f"{e.rtn:02X}"
        return {"ok": False, "error": e.kind, **detail}


def _decode(frame: pace.Frame, cmd: int | None, request_info: int | None, force_pack_offset: int) -> dict:
    if cmd == pace.Command.ANALOG:
        reply = pace.decode_analog(frame, request_info, force_pack_offset)
        return {"pack_count": len(reply.packs) if reply.is_count else None, "packs": _packs(reply, request_info, True)}
    if cmd == pace.Command.STATUS:
        reply = pace.decode_status(frame, request_info, force_pack_offset)
        return {"pack_count": len(reply.packs) if reply.is_count else None, "packs": _packs(reply, request_info, False)}
    if cmd == pace.Command.VERSION:
        return {"software_version": pace.decode_text(frame)}
    if cmd == pace.Command.SERIALS:
        s = pace.decode_serials(frame)
        return {"bms_serial": s.bms_serial, "pack_serial": s.pack_serial}
    if cmd == pace.Command.PACK_COUNT:
        return {"pack_count": pace.decode_pack_count(frame)}
    if cmd == pace.Command.CAPACITIES:
        c = pace.decode_capacities(frame)
        return {"remaining_ah": c.remaining_ah, "full_ah": c.full_ah, "design_ah": c.design_ah}
    if cmd == pace.Command.DATETIME:
        return {"bms_clock": pace.decode_datetime(frame).isoformat()}
    return {"info": frame.info.hex().upper()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.pace", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    dec = sub.add_parser("decode", help="decode frames from stdin, one per line, to JSON lines")
    dec.add_argument("--command", type=_hex_byte, help="CID2 the replies answer, hex (42, 44, C1, C2, 90, A6, B1)")
    dec.add_argument("--request-info", type=_hex_byte, help="COMMAND byte of the 42/44 request, hex (FF = all packs)")
    dec.add_argument("--force-pack-offset", type=int, default=0, help="hex characters after each pack block")
    args = parser.parse_args(argv)
    for line in sys.stdin:
        if line.strip():
            result = decode_line(line, args.command, args.request_info, args.force_pack_offset)
            sys.stdout.buffer.write(msgspec.json.encode(result) + b"\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
