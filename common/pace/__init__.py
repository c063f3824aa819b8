"""The PACE BMS serial protocol (v2.5, "paceic"), sans I/O: bytes in, typed values out.

``frame`` builds requests, validates frames and splits byte streams into frames; ``decode``
turns the INFO of each read command into typed values (and back, for the simulator). Errors are
PaceError subclasses whose ``kind`` is what bms.link counts them under.
"""

from common.pace.decode import (
    AnalogPack,
    Capacities,
    PackReply,
    Serials,
    StatusPack,
    alarm_word,
    decode_analog,
    decode_capacities,
    decode_datetime,
    decode_pack_count,
    decode_serials,
    decode_status,
    decode_text,
    encode_analog,
    encode_status,
    flag_names,
    pack_fields,
)
from common.pace.errors import (
    ChecksumError,
    DecodeError,
    DeviceError,
    FrameError,
    LengthChecksumError,
    PaceError,
    rtn_name,
)
from common.pace.frame import (
    ALL_PACKS,
    BadFrame,
    Frame,
    FrameSplitter,
    build_request,
    encode_frame,
    parse_frame,
)

__all__ = [
    "ALL_PACKS", "AnalogPack", "BadFrame", "Capacities", "ChecksumError",
    "DecodeError", "DeviceError", "Frame", "FrameError", "FrameSplitter", "LengthChecksumError", "PaceError", "Serials",
    "StatusPack", "PackReply", "alarm_word", "build_request", "decode_analog",
    "decode_capacities", "decode_datetime", "decode_pack_count", "decode_serials", "decode_status",
    "decode_text", "encode_analog", "encode_frame", "encode_status", "flag_names", "pack_fields",
    "parse_frame", "rtn_name",
]
