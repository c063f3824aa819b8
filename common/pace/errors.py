"""Errors of the PACE protocol package. Callers catch PaceError; ``kind`` names the error for counting.

What the line does (a lost port, no reply at all) is not a protocol error: those are the
transport errors of common.device."""


class PaceError(Exception):
    """Base of every error this package raises."""

    kind = "decode"


class FrameError(PaceError):
    """Bytes that are not a well-formed frame: no SOI/EOI, wrong length, non-hex text."""

    kind = "framing"


class ChecksumError(FrameError):
    """CHKSUM (or, as LengthChecksumError, LCHKSUM) does not match the frame's text."""

    kind = "checksum"


class LengthChecksumError(ChecksumError):
    """LCHKSUM does not match LENID (a BMS answers it with RTN 03, not 02)."""


class DeviceError(PaceError):
    """The BMS answered with a non-zero return code (RTN). The reply carries no data."""

    kind = "rtn"

    def __init__(self, rtn: int, adr: int | None = None):
        self.rtn = rtn
        self.adr = adr
        super().__init__(f"BMS returned RTN {rtn:02X} ({rtn_name(rtn)})")


class DecodeError(PaceError):
    """A valid frame whose INFO does not fit the layout of the command it answers."""

    kind = "decode"


_RTN_NAMES = {
    0x00: "normal",
    0x01: "version error",
    0x02: "CHKSUM error",
    0x03: "LCHKSUM error",
    0x04: "CID2 not defined",
    0x05: "command format error",
    0x06: "invalid data",
    0x07: "no data",
    0x09: "operation or write error",
    0x90: "address error",
    0x91: "communication error",
    0xE1: "CID1 error",
    0xE2: "command failed",
    0xE3: "equipment fault",
    0xE4: "no permission",
}


def rtn_name(rtn: int) -> str:
    """The meaning of a return code (SPEC, with the v2.0 documents' names for the codes it leaves open)."""
    return _RTN_NAMES.get(rtn, "undefined")
