"""The one table of PACE read commands: what each asks, how its reply decodes and encodes.

Every user of a command reads it from here: the reader's schedule (``group``), the decode CLI
(``decode`` and ``as_fields``), the simulator (``encode`` of the value its model gives, or of
``sample``) and the wire-time benchmark (``reply_bytes``). Adding a read command is one
``register`` call.

``group`` says when the reader asks: ``cycle`` every poll cycle, ``capacity`` every
``capacity_every`` cycles, ``info`` at start and every ``info_every_s``, ``config`` at start and
every ``config_every_s``. ``per_pack`` commands carry the pack (or FF) as their request INFO;
the others concern the pack the line is wired to. ``fits`` says whether a reply's INFO could
answer the request at all, which is how a stale reply (the answer to an earlier request,
delivered late by a bridge) is told from a broken one.

``family`` is the reply layout family a command belongs to (common/pace/families.py): ``25``
for PACE v2.5 (and the VER 20 hybrids that use its layout), ``20-eg4`` and ``20-seplos`` for
the vendor layouts, whose analog and status commands are asked instead. ``block`` marks the
commands whose replies are pack blocks (``analog`` or ``status``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.pace import config as settings
from common.pace import decode as d
from common.pace import families as fam
from common.pace.config import datetime_info
from common.pace.errors import PaceError
from common.pace.frame import ALL_PACKS, CID1_LITHIUM, VER_25, Frame, encode_frame

GROUPS = ("cycle", "capacity", "info", "config")


def _no_info(_pack: int) -> bytes:
    return b""


def _pack_info(pack: int) -> bytes:
    return bytes([pack])


@dataclass(frozen=True)
class ReadCommand:
    name: str
    cid2: int
    # (reply, the request's pack byte or None when not known, force_pack_offset) -> value
    decode: Callable[..., Any]
    encode: Callable[[Any], bytes]
    as_fields: Callable[[Any], dict]
    group: str = "info"
    per_pack: bool = False
    request_info: Callable[[int], bytes] = _no_info
    # A reply INFO length this command can have (None: any, e.g. the variable pack blocks).
    reply_bytes: Callable[[bytes], bool] | None = None
    sample: Any = None
    ver: int = VER_25
    cid1: int = CID1_LITHIUM
    family: str = "25"
    block: str | None = None
    # The request INFO names the addressed pack itself (Seplos), not the stack's FF.
    info_is_adr: bool = False

    def request(self, adr: int, pack: int = ALL_PACKS) -> bytes:
        info = self.request_info(adr if self.info_is_adr else pack)
        return encode_frame(self.cid2, info, adr=adr, ver=self.ver, cid1=self.cid1)

    def fits(self, frame: Frame, pack: int | None = ALL_PACKS, offset: int = 0) -> bool:
        """Whether ``frame`` can be this command's answer (an error reply always can)."""
        if frame.rtn != 0:
            return True
        if self.reply_bytes is not None:
            return self.reply_bytes(frame.info)
        try:
            self.decode(frame, pack, offset)
        except PaceError:
            return False
        return True


COMMANDS: dict[str, ReadCommand] = {}


def register(command: ReadCommand) -> ReadCommand:
    if command.group not in GROUPS:
        raise ValueError(f"{command.name}: group {command.group!r} is not one of {GROUPS}")
    COMMANDS[command.name] = command
    return command


def unregister(name: str) -> None:
    COMMANDS.pop(name, None)


def by_cid2(cid2: int, family: str = "25") -> ReadCommand | None:
    return next((c for c in COMMANDS.values() if c.cid2 == cid2 and c.family == family), None)


def in_group(group: str, family: str = "25") -> list[ReadCommand]:
    return [c for c in COMMANDS.values() if c.group == group and c.family == family]


def _sized(*lengths: int) -> Callable[[bytes], bool]:
    return lambda info: len(info) in lengths


def _text_info(text: str, size: int = 20) -> bytes:
    return text.encode("ascii")[:size].ljust(size, b" ")


def _pack_reply_fields(reply: d.PackReply, analog: bool) -> dict:
    numbers = (range(1, len(reply.packs) + 1) if reply.is_count
               else [reply.count_byte if 1 <= reply.count_byte <= 15 else 1])
    packs = [d.pack_fields(n, p if analog else None, None if analog else p) for n, p in zip(numbers, reply.packs)]
    return {"pack_count": len(reply.packs) if reply.is_count else None, "packs": packs}


def _encode_reply(reply: d.PackReply, analog: bool) -> bytes:
    encode = d.encode_analog if analog else d.encode_status
    return encode(list(reply.packs), reply.infoflag, reply.count_byte)


register(ReadCommand(
    "analog", 0x42, lambda f, pack=ALL_PACKS, offset=0: d.decode_analog(f, pack, offset), lambda r: _encode_reply(r, True),
    lambda r: _pack_reply_fields(r, True), group="cycle", per_pack=True, request_info=_pack_info, block="analog"))
register(ReadCommand(
    "status", 0x44, lambda f, pack=ALL_PACKS, offset=0: d.decode_status(f, pack, offset), lambda r: _encode_reply(r, False),
    lambda r: _pack_reply_fields(r, False), group="cycle", per_pack=True, request_info=_pack_info, block="status"))
register(ReadCommand(
    "capacities", 0xA6, lambda f, *_: d.decode_capacities(f), lambda c: d.CAPACITIES.encode(c.__dict__),
    lambda c: dict(c.__dict__), group="capacity", reply_bytes=_sized(6)))
register(ReadCommand(
    "software_version", 0xC1, lambda f, *_: d.decode_text(f), _text_info,
    lambda v: {"software_version": v}, reply_bytes=_sized(20)))
register(ReadCommand(
    "serials", 0xC2, lambda f, *_: d.decode_serials(f),
    lambda s: _text_info(s.bms_serial or "") + _text_info(s.pack_serial or ""),
    lambda s: {"bms_serial": s.bms_serial, "pack_serial": s.pack_serial}, reply_bytes=_sized(20, 40)))
register(ReadCommand(
    "pack_count", 0x90, lambda f, *_: d.decode_pack_count(f), lambda n: bytes([n]),
    lambda n: {"pack_count": n}, reply_bytes=_sized(1)))
register(ReadCommand(
    "datetime", 0xB1, lambda f, *_: d.decode_datetime(f), datetime_info,
    lambda t: {"bms_clock": t.isoformat()}, group="config", reply_bytes=_sized(6)))


def _register_settings(command: settings.ConfigCommand) -> None:
    register(ReadCommand(
        command.name, command.cid2, lambda f, *_: settings.decode_config(command, f),
        lambda values: settings.encode_config(command, values), dict, group="config",
        request_info=lambda _pack: command.request_info, reply_bytes=_sized(command.layout.size),
        sample=command.sim_default))


for _command in settings.CONFIG_COMMANDS:
    _register_settings(_command)


# The vendor VER 20 families: their analog (and, where captured, status) instead of v2.5's.
# EG4 requests carry no INFO and answer for the addressed pack; Seplos's carry the address.
register(ReadCommand(
    "eg4_analog", 0x42, fam.decode_eg4_analog, fam.encode_eg4_analog, lambda r: _pack_reply_fields(r, True),
    group="cycle", ver=fam.VER_20, cid1=fam.CID1_EG4, family="20-eg4", block="analog"))
register(ReadCommand(
    "eg4_status", 0x44, fam.decode_eg4_status, fam.encode_eg4_status, lambda r: _pack_reply_fields(r, False),
    group="cycle", ver=fam.VER_20, cid1=fam.CID1_EG4, family="20-eg4", block="status"))
register(ReadCommand(
    "seplos_analog", 0x42, fam.decode_seplos_analog, fam.encode_seplos_analog, lambda r: _pack_reply_fields(r, True),
    group="cycle", request_info=_pack_info, info_is_adr=True, ver=fam.VER_20, family="20-seplos", block="analog"))
