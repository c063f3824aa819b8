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
from common.pace import families
from common.pace.commands import COMMANDS, by_cid2
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


def _guess_command(frame: pace.Frame) -> str | None:
    """The read command whose reply layout fits; None when none does (INFO shown raw). Only the
    commands whose replies tell themselves apart are guessed: settings replies need --command."""
    info = frame.info
    if len(info) == 1:
        return "pack_count" if 1 <= info[0] <= 16 else None
    if len(info) < 3:
        return None
    if len(info) == 6:
        return "datetime" if _decodes("datetime", frame) else "capacities"
    if len(info) in (20, 40) and all(32 <= b < 127 or b == 0 for b in info):
        return "software_version" if len(info) == 20 else "serials"
    family = _family(frame)
    if family != "25":
        return _guess_in(family, frame)
    try:
        pace.decode_analog(frame, None)
        return "analog"
    except DecodeError as analog_error:
        try:
            pace.decode_status(frame, None)
            return "status"
        except DecodeError as status_error:
            raise DecodeError(f"fits neither the analog layout ({analog_error}) "
                              f"nor the status layout ({status_error})") from None


def _guess_in(family: str, frame: pace.Frame) -> str | None:
    """The command of a vendor family whose layout the reply has."""
    return next((c.name for c in COMMANDS.values() if c.family == family and _decodes(c.name, frame)), None)


def _family(frame: pace.Frame) -> str:
    """The layout family of a reply: EG4's own CID1, else what its analog layout says (v2.5 when
    it fits none, so that the error names the v2.5 layouts)."""
    if frame.cid1 == families.CID1_EG4:
        return "20-eg4"
    return families.identify(frame) or "25"


def _decodes(name: str, frame: pace.Frame) -> bool:
    try:
        COMMANDS[name].decode(frame, None)
    except DecodeError:
        return False
    return True


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
        cmd = (by_cid2(command, _family(frame)) or by_cid2(command)) if command is not None \
            else COMMANDS.get(_guess_command(frame) or "")
        if cmd is None and command is not None:
            raise DecodeError(f"no read command with CID2 {command:02X} (known: {_known()})")
        out["command"] = None if cmd is None else f"{cmd.cid2:02X}"
        if cmd is None:
            return {**out, "info": frame.info.hex().upper()}
        return {**out, "name": cmd.name, **cmd.as_fields(cmd.decode(frame, request_info, force_pack_offset))}
    except pace.PaceError as e:
        detail = {"detail": str(e)}
        if isinstance(e, pace.DeviceError):
            detail["rtn"] = f"{e.rtn:02X}"
        return {"ok": False, "error": e.kind, **detail}


def _known() -> str:
    return ", ".join(f"{c.cid2:02X}" for c in COMMANDS.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.pace", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    dec = sub.add_parser("decode", help="decode frames from stdin, one per line, to JSON lines")
    dec.add_argument("--command", type=_hex_byte, help="CID2 the replies answer, hex (any read command of common/pace/commands.py)")
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
