"""Block layouts declared once, as field tables, the way pynmea2 declares sentences.

A Layout is a sequence of big-endian fields. The same declaration decodes INFO bytes, encodes
them back (for the simulator and round-trip tests) and says how long a block is, so a layout is
never written twice. Field values are ``raw * scale + offset``; a field's name carries the unit
of that value (``voltage_mv``, ``current_10ma``, ``delay_s``).

``Counted`` is a count byte followed by that many items (a block's cells and temperatures).
``optional`` fields may be missing at the end of a short block (firmwares that stop early).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import log10

from common.pace.errors import DecodeError


@dataclass(frozen=True)
class Field:
    name: str
    size: int = 2
    signed: bool = False
    scale: float = 1
    offset: float = 0
    optional: bool = False

    @property
    def _decimals(self) -> int:
        """Decimals the scale implies: 0.1 -> 1, 0.001 -> 3, 1 -> 0."""
        return max(0, round(-log10(self.scale))) if self.scale < 1 else 0

    def value(self, raw: int) -> float | int:
        if self.scale == 1 and self.offset == int(self.offset):
            return raw + int(self.offset)
        return round(raw * self.scale + self.offset, self._decimals)

    def raw(self, value: float) -> int:
        return round((value - self.offset) / self.scale)

    def decode_at(self, data: bytes, pos: int) -> int | float:
        return self.value(int.from_bytes(data[pos:pos + self.size], "big", signed=self.signed))

    def encode(self, value: float) -> bytes:
        try:
            return self.raw(value).to_bytes(self.size, "big", signed=self.signed)
        except OverflowError:
            raise ValueError(f"{self.name} = {value} does not fit {self.size} byte(s)") from None


@dataclass(frozen=True)
class Counted:
    """One count byte, then that many ``size``-byte items (a tuple of raw values)."""

    name: str
    size: int = 2


class Layout:
    """An ordered field table. ``tail`` keeps bytes after the last field as ``extra`` (firmwares
    append undocumented ones); without it such bytes are a DecodeError."""

    def __init__(self, *fields: Field | Counted, tail: bool = False):
        self.fields = fields
        self.tail = tail

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def size(self) -> int | None:
        """Total bytes of a fixed layout (all fields present); None when it has counted parts."""
        if any(isinstance(f, Counted) for f in self.fields):
            return None
        return sum(f.size for f in self.fields)

    def spec_length(self, data: bytes, pos: int = 0) -> int | None:
        """The length of the block at ``pos`` with every field present, its counts read from
        ``data``; None when the data ends before a count."""
        for f in self.fields:
            if isinstance(f, Counted):
                if pos >= len(data):
                    return None
                pos += 1 + data[pos] * f.size
            else:
                pos += f.size
        return pos

    def length_for(self, **counts: int) -> int:
        """The length of a block with these counts (``cells_mv=16, ...``): for the wire-time figures."""
        return sum(1 + counts[f.name] * f.size if isinstance(f, Counted) else f.size for f in self.fields)

    def counts_at(self, data: bytes, pos: int = 0) -> list[int] | None:
        """The counts of the Counted parts of the block at ``pos`` (None if the data ends first)."""
        counts = []
        last = max(i for i, f in enumerate(self.fields) if isinstance(f, Counted))
        for f in self.fields[:last + 1]:
            if isinstance(f, Counted):
                if pos >= len(data):
                    return None
                counts.append(data[pos])
                pos += 1 + data[pos] * f.size
            else:
                pos += f.size
        return counts

    def decode(self, data: bytes, start: int = 0, end: int | None = None) -> dict:
        end = len(data) if end is None else end
        pos, out = start, {}
        for f in self.fields:
            if isinstance(f, Field) and f.optional and end - pos < f.size:
                out[f.name] = None
                continue
            pos = self._take(f, data, pos, end, out)
        if self.tail:
            out["extra"] = bytes(data[pos:end])
        elif pos != end:
            raise DecodeError(f"{end - pos} byte(s) after the last field ({self.fields[-1].name})")
        return out

    @staticmethod
    def _take(f: Field | Counted, data: bytes, pos: int, end: int, out: dict) -> int:
        if isinstance(f, Counted):
            if pos >= end:
                raise DecodeError(f"INFO ends before the count of {f.name} (byte {pos})")
            count, pos = data[pos], pos + 1
            need = count * f.size
            if pos + need > end:
                raise DecodeError(f"INFO ends inside {f.name} (byte {pos}, need {need}, have {end - pos})")
            out[f.name] = tuple(int.from_bytes(data[i:i + f.size], "big") for i in range(pos, pos + need, f.size))
            return pos + need
        if pos + f.size > end:
            raise DecodeError(f"INFO ends inside {f.name} (byte {pos}, need {f.size}, have {end - pos})")
        out[f.name] = f.decode_at(data, pos)
        return pos + f.size

    def encode(self, values: dict) -> bytes:
        out = bytearray()
        for f in self.fields:
            value = values[f.name]
            if isinstance(f, Counted):
                out.append(len(value))
                out += b"".join(v.to_bytes(f.size, "big") for v in value)
            elif value is not None or not f.optional:
                out += f.encode(value)
        if self.tail:
            out += values.get("extra", b"")
        return bytes(out)
