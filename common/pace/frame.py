"""PACE frames: checksums, building, validating, and a splitter for byte streams.

Frame layout (character offsets; every field but SOI and EOI is upper-case ASCII hex):

    0    SOI      '~'
    1-2  VER      protocol version, 25 for v2.5
    3-4  ADR      pack address 0-15
    5-6  CID1     device type, 46 = lithium battery
    7-8  CID2     command in a request, return code (RTN) in a reply
    9    LCHKSUM  length checksum nibble
    10-12 LENID   number of INFO characters (twice the data bytes)
    13-  INFO     LENID characters
         CHKSUM   4 characters, at 13 + LENID
         EOI      CR, at 17 + LENID; a frame is 18 + LENID characters long

LCHKSUM: the sum of LENID's three nibbles modulo 16, two's complement in 4 bits.
CHKSUM: the sum of the ASCII codes of every character between SOI and CHKSUM, modulo 65536,
two's complement in 16 bits, sent zero-padded. Received hex may be lower case.

The splitter is fed whatever the port delivers (a byte at a time, half a frame, two frames with
junk between) and returns whole frames. It drops bytes before '~', knows the length as soon as
the 13-character header is in, and on any fault resynchronises on the next '~' after the bad
frame's SOI, so a valid frame glued behind a cut one is not lost. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.pace.errors import ChecksumError, DeviceError, FrameError, LengthChecksumError

SOI = 0x7E
EOI = 0x0D
HEADER_CHARS = 13
OVERHEAD_CHARS = 18
MAX_LENID = 0xFFF
VER_25 = 0x25
CID1_LITHIUM = 0x46
ALL_PACKS = 0xFF

_HEX = frozenset(b"0123456789ABCDEFabcdef")


@dataclass(frozen=True)
class Frame:
    """A validated frame. ``cid2`` is the command in a request and RTN in a reply."""

    ver: int
    adr: int
    cid1: int
    cid2: int
    info: bytes

    @property
    def rtn(self) -> int:
        return self.cid2

    def check_rtn(self) -> Frame:
        """Return self if RTN is 00, else raise DeviceError."""
        if self.cid2 != 0:
            raise DeviceError(self.cid2, self.adr)
        return self


def lchksum(lenid: int) -> int:
    total = (lenid & 0xF) + ((lenid >> 4) & 0xF) + ((lenid >> 8) & 0xF)
    return (-total) & 0xF


def chksum(text: bytes) -> int:
    """CHKSUM of the characters between SOI and CHKSUM."""
    return (-sum(text)) & 0xFFFF


def encode_frame(cid2: int, info: bytes = b"", adr: int = 0, ver: int = VER_25, cid1: int = CID1_LITHIUM) -> bytes:
    """The wire bytes of a frame with INFO data bytes ``info`` (hex-encoded here)."""
    info_hex = info.hex().upper().encode("ascii")
    lenid = len(info_hex)
    if lenid > MAX_LENID:
        raise ValueError(f"INFO of {len(info)} bytes does not fit LENID")
    body = b"%02X%02X%02X%02X%X%03X" % (ver, adr, cid1, cid2, lchksum(lenid), lenid) + info_hex
    return b"~" + body + b"%04X\r" % chksum(body)


def build_request(cid2: int, adr: int = 1, info: bytes = b"") -> bytes:
    """A request frame (the commands themselves are in common/pace/commands.py)."""
    return encode_frame(cid2, info, adr=adr)


def _hex_field(raw: bytes, start: int, end: int, name: str) -> int:
    part = raw[start:end]
    if not part or not _HEX.issuperset(part):
        raise FrameError(f"{name} {part!r} is not hex")
    return int(part, 16)


def expected_length(raw: bytes) -> int:
    """Total frame length from a header (at least 13 characters, starting at SOI).

    Raises FrameError for a non-hex header and LengthChecksumError for a wrong LCHKSUM.
    """
    for start, name in ((1, "VER"), (3, "ADR"), (5, "CID1"), (7, "CID2"), (9, "LENGTH")):
        _hex_field(raw, start, start + (4 if name == "LENGTH" else 2), name)
    length = int(raw[9:13], 16)
    lenid = length & MAX_LENID
    if length >> 12 != lchksum(lenid):
        raise LengthChecksumError(f"LCHKSUM {length >> 12:X} does not match LENID {lenid:03X} (expected {lchksum(lenid):X})")
    if lenid % 2:
        raise FrameError(f"LENID {lenid} is odd: INFO is hex text, two characters a byte")
    return OVERHEAD_CHARS + lenid


def parse_frame(raw: bytes) -> Frame:
    """Validate one complete frame (SOI ... EOI) and return it. Raises FrameError or ChecksumError."""
    if len(raw) < OVERHEAD_CHARS:
        raise FrameError(f"{len(raw)} characters, shorter than any frame (18)")
    if raw[0] != SOI:
        raise FrameError(f"starts with 0x{raw[0]:02X}, not SOI '~'")
    total = expected_length(raw)
    if len(raw) != total:
        raise FrameError(f"{len(raw)} characters, LENGTH says {total}")
    if raw[-1] != EOI:
        raise FrameError(f"ends with 0x{raw[-1]:02X}, not EOI (CR)")
    body_end = total - 5
    info_hex = raw[HEADER_CHARS:body_end]
    if not _HEX.issuperset(info_hex):
        raise FrameError("INFO is not hex text")
    received = _hex_field(raw, body_end, body_end + 4, "CHKSUM")
    computed = chksum(raw[1:body_end])
    if received != computed:
        raise ChecksumError(f"CHKSUM {received:04X}, computed {computed:04X}")
    return Frame(ver=int(raw[1:3], 16), adr=int(raw[3:5], 16), cid1=int(raw[5:7], 16),
                 cid2=int(raw[7:9], 16), info=bytes.fromhex(info_hex.decode("ascii")))


@dataclass(frozen=True)
class BadFrame:
    """Bytes from SOI on that did not make a valid frame, and why."""

    raw: bytes
    error: FrameError


class FrameSplitter:
    """Reassembles frames from arbitrary chunks of a byte stream.

    ``feed(data)`` returns the frames and bad frames completed by ``data``, in stream order.
    ``junk_bytes`` counts bytes dropped outside any frame (noise, another master's traffic).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._checked = 1  # characters after SOI already known to be hex
        self.junk_bytes = 0

    def reset(self) -> None:
        """Forget a partial frame (call before a new request: a late reply must not count)."""
        self.junk_bytes += len(self._buf)
        self._buf.clear()
        self._checked = 1

    @property
    def pending(self) -> int:
        """Characters of an unfinished frame held (0 when idle)."""
        return len(self._buf)

    def expected_total(self) -> int | None:
        """The length of the frame being received, once its header is in."""
        if len(self._buf) < HEADER_CHARS:
            return None
        try:
            return expected_length(bytes(self._buf[:HEADER_CHARS]))
        except FrameError:
            return None

    def feed(self, data: bytes) -> list[Frame | BadFrame]:
        self._buf += data
        out: list[Frame | BadFrame] = []
        while self._buf:
            if self._buf[0] != SOI:
                start = self._buf.find(b"~")
                dropped = len(self._buf) if start < 0 else start
                self.junk_bytes += dropped
                del self._buf[:dropped]
                self._checked = 1
                continue
            event = self._take_frame()
            if event is None:
                break
            out.append(event)
        return out

    def _take_frame(self) -> Frame | BadFrame | None:
        """One frame or bad frame from the buffer start (at SOI), or None if more bytes are needed."""
        buf = self._buf
        total = None
        if len(buf) >= HEADER_CHARS:
            try:
                total = expected_length(bytes(buf[:HEADER_CHARS]))
            except FrameError as e:
                return self._bad(e, HEADER_CHARS)
        limit = len(buf) if total is None else min(len(buf), total - 1)
        # Everything between SOI and EOI is hex text, so any other byte means this frame was cut.
        for i in range(self._checked, limit):
            if buf[i] not in _HEX:
                what = "CR" if buf[i] == EOI else "'~'" if buf[i] == SOI else f"0x{buf[i]:02X}"
                expected = f", LENGTH says {total}" if total else ""
                return self._bad(FrameError(f"{what} at character {i}{expected}: frame cut short"), i)
        self._checked = max(self._checked, limit)
        if total is None or len(buf) < total:
            return None
        raw = bytes(buf[:total])
        try:
            frame = parse_frame(raw)
        except FrameError as e:
            return self._bad(e, total)
        del buf[:total]
        self._checked = 1
        return frame

    def _bad(self, error: FrameError, upto: int) -> BadFrame:
        """Report the frame at the buffer start as bad and resynchronise on the next '~' after SOI."""
        raw = bytes(self._buf[:upto])
        nxt = self._buf.find(b"~", 1)
        del self._buf[: (len(self._buf) if nxt < 0 else nxt)]
        self._checked = 1
        return BadFrame(raw, error)
