"""Decoders (and, for the simulator and tests, encoders) of the INFO of each read command.

Analog (0x42) and status (0x44) reply INFO: INFOFLAG, then the pack count when the request
asked FF (else the requested address echoed), then one block per pack laid out as ANALOG_BLOCK
and STATUS_BLOCK below (field tables in common/pace/layout.py: the one declaration of each
layout, read by the decoder, the encoder, the length checks and the wire-time benchmark).

Real firmwares add undocumented bytes after each block (a 1, 10 or 14 byte tail) and P does not
announce them; a few omit the design capacity. So the block length is not taken from P or found
by scanning for the cell-count byte (0x10 occurs inside 0x2710 = 100.00 Ah). When all blocks have
the same cell and temperature counts, the block length is the data length divided by the pack
count; otherwise each block is sized from its own C and T and the extra bytes are found by
looking for a plausible next block. ``force_pack_offset`` (hex characters) overrides both.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from common.pace.errors import DecodeError
from common.pace.frame import ALL_PACKS, Frame
from common.pace.layout import Counted, Field, Layout

TEMP_OFFSET = 2730
# Longest undocumented tail accepted after a block (seen: 14 bytes analog, 1 byte status); a longer
# remainder means the data is not this layout at all.
MAX_EXTRA = {"analog": 32, "status": 16}
MAX_PACKS = 16
MAX_CELLS = 32
MAX_TEMPS = 16

PROTECT_1 = ("cell_overvoltage", "cell_undervoltage", "pack_overvoltage", "pack_undervoltage",
             "charge_overcurrent", "discharge_overcurrent", "short_circuit", None)
PROTECT_2 = ("charge_overtemp", "discharge_overtemp", "charge_undertemp", "discharge_undertemp",
             "mos_overtemp", "env_overtemp", "env_undertemp", "fully_charged")
INSTRUCTION = ("current_limit_on", "cfet_on", "dfet_on", "pack_indicate", "reverse", "ac_in", None, "heart")
CONTROL = ("buzzer_enabled", None, None, "current_limit_low_gear", "current_limit_disabled",
           "led_warn_disabled", None, None)
FAULT = ("charge_mos_fault", "discharge_mos_fault", "ntc_fault", None, "cell_fault", "sample_fault", None, None)
WARN_1 = ("cell_high_voltage", "cell_low_voltage", "pack_high_voltage", "pack_low_voltage",
          "charge_current", "discharge_current", None, None)
WARN_2 = ("charge_high_temp", "discharge_high_temp", "charge_low_temp", "discharge_low_temp",
          "env_high_temp", "env_low_temp", "mos_high_temp", "low_power")


def flag_names(value: int, table: tuple[str | None, ...]) -> list[str]:
    """Names of the set bits, lowest first; a bit the SPEC leaves undefined is ``undefined_bitN``."""
    return [table[bit] or f"undefined_bit{bit}" for bit in range(8) if value >> bit & 1]


def flag_bits(names: list[str], table: tuple[str | None, ...]) -> int:
    """The byte with the named bits set (inverse of flag_names)."""
    return sum(1 << table.index(name) for name in names)


def alarm_word(code: int) -> str | None:
    """A per-cell/sensor/pack warning code as a word; None for 00 (normal)."""
    if code == 0:
        return None
    named = {0x01: "low", 0x02: "high", 0xF0: "other"}.get(code)
    if named:
        return named
    return f"user_0x{code:02X}" if 0x80 <= code <= 0xEF else f"undefined_0x{code:02X}"


# ---------------------------------------------------------------------------------------------
# Analog data (0x42)


@dataclass(frozen=True)
class AnalogPack:
    """One pack block of an analog reply, in the SPEC's units, which the names carry (temperatures
    in 0.1 K, capacities in 10 mAh, current in 10 mA)."""

    cells_mv: tuple[int, ...]
    temps_dk: tuple[int, ...]
    current_10ma: int
    voltage_mv: int
    remaining_10mah: int
    user_count: int
    full_10mah: int | None
    cycles: int | None
    design_10mah: int | None
    extra: bytes = b""
    # The SOC and SOH the BMS itself sends in layouts that have them (EG4, Seplos).
    bms_soc_pct: float | None = None
    bms_soh_pct: float | None = None
    # Further fields of a vendor layout, (name, raw value) pairs: kept so a reply re-encodes as sent.
    vendor: tuple[tuple[str, int], ...] = ()

    @property
    def online(self) -> bool:
        """False for a pack the master lists but that reports nothing (every cell 0 mV)."""
        return any(self.cells_mv)

    @property
    def temps_c(self) -> list[float]:
        return [round((raw - TEMP_OFFSET) / 10, 1) for raw in self.temps_dk]

    @property
    def current_a(self) -> float:
        return round(self.current_10ma / 100, 2)

    @property
    def voltage_v(self) -> float:
        return self.voltage_mv / 1000

    @property
    def power_w(self) -> float:
        return round(self.voltage_v * self.current_a, 2)

    @property
    def remaining_ah(self) -> float:
        return self.remaining_10mah / 100

    @property
    def full_ah(self) -> float | None:
        return None if self.full_10mah is None else self.full_10mah / 100

    @property
    def design_ah(self) -> float | None:
        return None if self.design_10mah is None else self.design_10mah / 100

    @property
    def soc_pct(self) -> float | None:
        """remaining / full; None when full is 0 or absent."""
        return round(self.remaining_10mah / self.full_10mah * 100, 2) if self.full_10mah else None

    @property
    def soh_pct(self) -> float | None:
        """full / design, unclamped (a new pack can exceed 100); None when a divisor is 0 or absent."""
        return round(self.full_10mah / self.design_10mah * 100, 2) if self.full_10mah and self.design_10mah else None

    @property
    def cell_min_mv(self) -> int | None:
        return min(self.cells_mv) if self.cells_mv else None

    @property
    def cell_max_mv(self) -> int | None:
        return max(self.cells_mv) if self.cells_mv else None

    @property
    def cell_delta_mv(self) -> int | None:
        return max(self.cells_mv) - min(self.cells_mv) if self.cells_mv else None

    @property
    def reported_soc_pct(self) -> float | None:
        """The BMS's own SOC: a field of its layout, or the byte that 1-, 10- and 14-byte
        firmware tails start with (field-observed)."""
        if self.bms_soc_pct is not None:
            return self.bms_soc_pct
        if len(self.extra) in (1, 10, 14) and self.extra[0] <= 100:
            return float(self.extra[0])
        return None

    @property
    def reported_soh_pct(self) -> float | None:
        """The BMS's own SOH: a field of its layout, or the SOH byte of the 14-byte tail of
        280 Ah-class firmwares (field-observed)."""
        if self.bms_soh_pct is not None:
            return self.bms_soh_pct
        if len(self.extra) == 14 and self.extra[9] <= 150:
            return float(self.extra[9])
        return None


ANALOG_BLOCK = Layout(
    Counted("cells_mv"), Counted("temps_dk"), Field("current_10ma", signed=True), Field("voltage_mv"),
    Field("remaining_10mah"), Field("user_count", 1),
    # Some firmwares (VER 20 hybrids) stop early: keep what fits, the rest is unknown.
    Field("full_10mah", optional=True), Field("cycles", optional=True), Field("design_10mah", optional=True),
    tail=True)

STATUS_BLOCK = Layout(
    Counted("cell_codes", 1), Counted("temp_codes", 1), Field("charge_current_code", 1),
    Field("total_voltage_code", 1), Field("discharge_current_code", 1),
    *(Field(name, 1) for name in ("protect_1", "protect_2", "instruction", "control", "fault", "balance_1",
                                  "balance_2", "warn_1", "warn_2")),
    tail=True)


def _plausible_counts(layout: Layout, data: bytes, pos: int) -> bool:
    counts = layout.counts_at(data, pos)
    return counts is not None and 1 <= counts[0] <= MAX_CELLS and 1 <= counts[1] <= MAX_TEMPS


def _analog_min_len(data: bytes, pos: int) -> int | None:
    """The SPEC length of the analog block at ``pos`` from its own C and T, or None if implausible
    (counts out of range, or a cell voltage that is neither 0 nor 0.5-5.5 V)."""
    if not _plausible_counts(ANALOG_BLOCK, data, pos):
        return None
    for i in range(pos + 1, pos + 1 + 2 * data[pos], 2):
        mv = data[i] << 8 | data[i + 1]
        if mv and not 500 <= mv <= 5500:
            return None
    return ANALOG_BLOCK.spec_length(data, pos) - pos


def _status_min_len(data: bytes, pos: int) -> int | None:
    if not _plausible_counts(STATUS_BLOCK, data, pos):
        return None
    return STATUS_BLOCK.spec_length(data, pos) - pos


def _analog_block(data: bytes, start: int, end: int) -> AnalogPack:
    return AnalogPack(**ANALOG_BLOCK.decode(data, start, end))


def _split_blocks(data: bytes, count: int, min_len, force_offset_chars: int, kind: str) -> list[tuple[int, int]]:
    """(start, end) of each of ``count`` pack blocks in ``data`` (which starts at the first block)."""
    if force_offset_chars:
        spans, pos = [], 0
        for _ in range(count):
            need = min_len(data, pos)
            if need is None:
                raise DecodeError(f"no {kind} block at byte {pos} with force_pack_offset {force_offset_chars}")
            end = min(len(data), pos + need + force_offset_chars // 2)
            spans.append((pos, end))
            pos = end
        return spans
    if len(data) % count == 0:
        size = len(data) // count
        starts = range(0, len(data), size)
        # Uniform blocks: each holds its own fields (give or take a missing design capacity) and a tail.
        if all((need := min_len(data, s)) is not None and need - 2 <= size <= need + MAX_EXTRA[kind]
               for s in starts):
            return [(s, s + size) for s in starts]
    return _scan_blocks(data, count, min_len, kind)


def _scan_blocks(data: bytes, count: int, min_len, kind: str) -> list[tuple[int, int]]:
    """Block spans when sizes differ: each block ends where a plausible next one begins."""
    spans, pos = [], 0
    for index in range(count):
        need = min_len(data, pos)
        if need is None:
            raise DecodeError(f"pack {index + 1}: no plausible {kind} block at byte {pos}")
        if index == count - 1:
            if not need - 2 <= len(data) - pos <= need + MAX_EXTRA[kind]:
                raise DecodeError(f"pack {index + 1}: {len(data) - pos} bytes left for a {kind} block of {need}")
            spans.append((pos, len(data)))
            break
        cells = data[pos]
        for nxt in range(pos + need - 2, min(len(data), pos + need + 40)):
            if data[nxt] == cells and (after := min_len(data, nxt)) is not None and nxt + after - 2 <= len(data):
                break
        else:
            raise DecodeError(f"pack {index + 2}: cannot find where its {kind} block starts")
        spans.append((pos, nxt))
        pos = nxt
    return spans


def _pack_header(frame: Frame, request_info: int | None, kind: str) -> tuple[int, int, bool, int]:
    """INFOFLAG, count/echo byte, whether it is a count, and the number of blocks."""
    data = frame.info
    if len(data) < 3:
        raise DecodeError(f"{kind} INFO of {len(data)} bytes is too short")
    infoflag, second = data[0], data[1]
    if infoflag > 1:
        # EG4-style v2.0 replies start with 0x10 here; their layout is not PACE v2.5.
        raise DecodeError(f"INFOFLAG 0x{infoflag:02X} is not 00/01: not the PACE v2.5 {kind} layout "
                          "(a VER 20 vendor layout: set bms_reader.protocol to auto, 20-eg4 or 20-seplos)")
    if request_info is not None and request_info != ALL_PACKS:
        return infoflag, second, False, 1
    if 1 <= second <= MAX_PACKS:
        return infoflag, second, True, second
    if request_info == ALL_PACKS:
        raise DecodeError(f"pack count {second} is outside 1-{MAX_PACKS}")
    return infoflag, second, False, 1


def decode_analog(frame: Frame, request_info: int | None = ALL_PACKS, force_pack_offset: int = 0) -> PackReply:
    """Decode a 0x42 reply into AnalogPacks. ``request_info`` is the COMMAND byte that was sent
    (FF = all packs; None = not known: a plausible count is taken as one). ``force_pack_offset``
    is in hex characters, as the original option. Raises DeviceError, DecodeError."""
    return _decode_packs(frame, request_info, force_pack_offset, "analog")


def encode_analog(packs: list[AnalogPack], infoflag: int = 0, count_byte: int | None = None) -> bytes:
    """INFO of an analog reply (for the simulator and round-trip tests)."""
    return _encode_packs(ANALOG_BLOCK, packs, infoflag, count_byte)


def _encode_packs(layout: Layout, packs, infoflag: int, count_byte: int | None) -> bytes:
    head = bytes([infoflag, len(packs) if count_byte is None else count_byte])
    return head + b"".join(layout.encode(p.__dict__) for p in packs)


# ---------------------------------------------------------------------------------------------
# Status (0x44)


@dataclass(frozen=True)
class CodedStatus:
    """What every status layout starts with: a warning code per cell and per sensor, read the same
    way, and the pack-level codes a layout names in ``_pack_codes``."""

    cell_codes: tuple[int, ...]
    temp_codes: tuple[int, ...]

    def _pack_codes(self) -> dict[str, int]:
        return {}

    @property
    def cell_alarms(self) -> dict[int, str]:
        return {i + 1: w for i, c in enumerate(self.cell_codes) if (w := alarm_word(c))}

    @property
    def temp_alarms(self) -> dict[int, str]:
        return {i + 1: w for i, c in enumerate(self.temp_codes) if (w := alarm_word(c))}

    @property
    def pack_alarms(self) -> dict[str, str]:
        return {name: w for name, c in self._pack_codes().items() if (w := alarm_word(c))}


@dataclass(frozen=True)
class StatusPack(CodedStatus):
    charge_current_code: int
    total_voltage_code: int
    discharge_current_code: int
    protect_1: int
    protect_2: int
    instruction: int
    control: int
    fault: int
    balance_1: int
    balance_2: int
    warn_1: int
    warn_2: int
    extra: bytes = b""

    @property
    def protections(self) -> list[str]:
        return flag_names(self.protect_1, PROTECT_1) + flag_names(self.protect_2, PROTECT_2)

    @property
    def warnings(self) -> list[str]:
        return flag_names(self.warn_1, WARN_1) + flag_names(self.warn_2, WARN_2)

    @property
    def faults(self) -> list[str]:
        return flag_names(self.fault, FAULT)

    @property
    def indicators(self) -> list[str]:
        return flag_names(self.instruction, INSTRUCTION)

    @property
    def control_flags(self) -> list[str]:
        """Control state with the SPEC's polarity (PBmsTools reads bits 4 and 5 the other way)."""
        return flag_names(self.control, CONTROL)

    @property
    def charge_fet(self) -> bool:
        return bool(self.instruction & 0x02)

    @property
    def discharge_fet(self) -> bool:
        return bool(self.instruction & 0x04)

    @property
    def balancing(self) -> list[int]:
        """Balancing cells, 1-based, as the SPEC lays them out (byte 1 bit 0 = cell 1). The field
        mapping is unconfirmed (one reader swaps the bytes); status_raw keeps both bytes."""
        word = self.balance_2 << 8 | self.balance_1
        return [bit + 1 for bit in range(16) if word >> bit & 1]

    def _pack_codes(self) -> dict[str, int]:
        return {"charge_current": self.charge_current_code, "pack_voltage": self.total_voltage_code,
                "discharge_current": self.discharge_current_code}

    @property
    def status_raw(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in _STATE_BYTES}


_STATE_BYTES = ("protect_1", "protect_2", "instruction", "control", "fault", "balance_1", "balance_2",
                "warn_1", "warn_2")


def _status_block(data: bytes, start: int, end: int) -> StatusPack:
    return StatusPack(**STATUS_BLOCK.decode(data, start, end))


def decode_status(frame: Frame, request_info: int | None = ALL_PACKS, force_pack_offset: int = 0) -> PackReply:
    """Decode a 0x44 reply into StatusPacks (arguments as decode_analog)."""
    return _decode_packs(frame, request_info, force_pack_offset, "status")


@dataclass(frozen=True)
class PackReply:
    """A 0x42 or 0x44 reply: INFOFLAG, the second byte (a count when ``is_count``, else the
    requested address echoed) and one decoded block per pack."""

    infoflag: int
    count_byte: int
    is_count: bool
    packs: tuple


_LAYOUTS = {"analog": (_analog_min_len, _analog_block), "status": (_status_min_len, _status_block)}


def _decode_packs(frame: Frame, request_info: int | None, force_pack_offset: int, kind: str) -> PackReply:
    frame.check_rtn()
    min_len, block = _LAYOUTS[kind]
    infoflag, second, is_count, count = _pack_header(frame, request_info, kind)
    body = frame.info[2:]
    try:
        spans = _split_blocks(body, count, min_len, force_pack_offset, kind)
    except DecodeError:
        if request_info is not None:
            raise
        spans, is_count = _split_blocks(body, 1, min_len, force_pack_offset, kind), False
    return PackReply(infoflag, second, is_count, tuple(block(body, s, e) for s, e in spans))


def encode_status(packs: list[StatusPack], infoflag: int = 0, count_byte: int | None = None) -> bytes:
    return _encode_packs(STATUS_BLOCK, packs, infoflag, count_byte)


# ---------------------------------------------------------------------------------------------
# Small replies


def decode_text(frame: Frame) -> str:
    """C1 (version) text: ASCII with trailing spaces and NULs stripped."""
    return frame.check_rtn().info.decode("ascii", errors="replace").rstrip(" \x00")


@dataclass(frozen=True)
class Serials:
    bms_serial: str | None
    pack_serial: str | None


def decode_serials(frame: Frame) -> Serials:
    """C2: the first 20 characters are the BMS serial, the next 20 (if sent) the pack serial."""
    info = frame.check_rtn().info

    def text(part: bytes) -> str | None:
        return part.decode("ascii", errors="replace").strip(" \x00") or None
    return Serials(text(info[:20]), text(info[20:40]))


def decode_pack_count(frame: Frame) -> int:
    info = frame.check_rtn().info
    if len(info) != 1:
        raise DecodeError(f"pack count reply has {len(info)} bytes, expected 1")
    if not 1 <= info[0] <= MAX_PACKS:
        raise DecodeError(f"pack count {info[0]} is outside 1-{MAX_PACKS}")
    return info[0]


@dataclass(frozen=True)
class Capacities:
    remaining_ah: float
    full_ah: float
    design_ah: float


CAPACITIES = Layout(Field("remaining_ah", scale=0.01), Field("full_ah", scale=0.01), Field("design_ah", scale=0.01))


def decode_capacities(frame: Frame) -> Capacities:
    return Capacities(**CAPACITIES.decode(frame.check_rtn().info))


def decode_datetime(frame: Frame) -> dt.datetime:
    """B1: year-2000, month, day, hour, minute, second as plain binary bytes (not BCD)."""
    info = frame.check_rtn().info
    if len(info) != 6:
        raise DecodeError(f"date/time reply has {len(info)} bytes, expected 6")
    try:
        return dt.datetime(2000 + info[0], *info[1:])
    except ValueError as e:
        raise DecodeError(f"date/time {info.hex()}: {e}") from None


def pack_fields(number: int, analog: AnalogPack | None, status: StatusPack | None) -> dict:
    """The pack map of the bus contract (docs/contract.md) for pack ``number``.

    An offline pack (all cells 0 mV) keeps ``online: False`` and no values, its status block
    being zeros too; fields of a reply that did not come this cycle are left out (None).
    """
    out: dict = {"pack": number}
    if analog is not None:
        out["online"] = analog.online
        if not analog.online:
            return out
        out.update(
            cells_mv=list(analog.cells_mv), temps_c=analog.temps_c, current_a=analog.current_a,
            voltage_v=analog.voltage_v, power_w=analog.power_w, remaining_ah=analog.remaining_ah,
            full_ah=analog.full_ah, design_ah=analog.design_ah, cycles=analog.cycles,
            soc_pct=analog.soc_pct, soh_pct=analog.soh_pct, cell_min_mv=analog.cell_min_mv,
            cell_max_mv=analog.cell_max_mv, cell_delta_mv=analog.cell_delta_mv,
            reported_soc_pct=analog.reported_soc_pct, reported_soh_pct=analog.reported_soh_pct,
            extra_hex=analog.extra.hex().upper())
    if status is not None:
        out.update(
            warnings=status.warnings, protections=status.protections, faults=status.faults,
            indicators=status.indicators, cell_alarms=status.cell_alarms, temp_alarms=status.temp_alarms,
            pack_alarms=status.pack_alarms, balancing=status.balancing, charge_fet=status.charge_fet,
            discharge_fet=status.discharge_fet, status_raw=status.status_raw)
    return out
