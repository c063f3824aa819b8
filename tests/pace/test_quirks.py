"""The field quirks of docs/pace.md, built with the package's own encoders."""

import pytest

from common import pace
from common.pace import AnalogPack, StatusPack


def analog(cells=16, temps=6, mv=3300, current=-225, extra=b"", full=10000, design=10000, p=3, missing=0):
    pack = AnalogPack(cells_mv=tuple(mv + i for i in range(cells)), temps_dk=tuple(2980 + i for i in range(temps)),
                      current_10ma=current, voltage_mv=mv * cells, remaining_10mah=5000, user_count=p,
                      full_10mah=full, cycles=12, design_10mah=design, extra=extra)
    if missing:
        pack = AnalogPack(**{**pack.__dict__, "design_10mah": None})
    return pack


def reply(info: bytes, rtn: int = 0, adr: int = 1) -> pace.Frame:
    return pace.parse_frame(pace.encode_frame(rtn, info, adr=adr))


def test_blocks_with_14_byte_tails_are_cut_by_length_not_by_scanning():
    # Tails hold 0x2710 (= 100.00 Ah), whose 0x10 equals the 16-cell count byte that scanners look for.
    tail = bytes([95]) + bytes.fromhex("2710271027102710") + bytes([99]) + bytes.fromhex("CF100000")
    packs = [analog(mv=3300 + 10 * i, extra=tail, p=9) for i in range(8)]
    decoded = pace.decode_analog(reply(pace.encode_analog(packs)))
    assert [p.cells_mv for p in decoded.packs] == [p.cells_mv for p in packs]
    assert all(p.extra == tail and p.reported_soc_pct == 95 and p.reported_soh_pct == 99 for p in decoded.packs)


def test_blocks_of_different_lengths_are_found_by_a_plausible_next_block():
    # Some firmwares omit the last pack's trailing word: blocks are not all the same size.
    packs = [analog(extra=b"\x64\x00\x00"), analog(extra=b"\x64\x00\x00"), analog(extra=b"\x64")]
    decoded = pace.decode_analog(reply(pace.encode_analog(packs)))
    assert [p.extra for p in decoded.packs] == [b"\x64\x00\x00", b"\x64\x00\x00", b"\x64"]
    assert [p.cells_mv for p in decoded.packs] == [p.cells_mv for p in packs]


def test_force_pack_offset_overrides_the_block_length():
    packs = [analog(extra=b"\x01\x02"), analog(extra=b"\x03\x04")]
    decoded = pace.decode_analog(reply(pace.encode_analog(packs)), force_pack_offset=4)
    assert [p.extra for p in decoded.packs] == [b"\x01\x02", b"\x03\x04"]


@pytest.mark.parametrize("temps", [4, 5, 8])
def test_temperature_counts_other_than_six(temps):
    decoded = pace.decode_analog(reply(pace.encode_analog([analog(temps=temps), analog(temps=temps)])))
    assert [len(p.temps_c) for p in decoded.packs] == [temps, temps]
    assert decoded.packs[1].temps_c[0] == 25.0


def test_missing_design_capacity_is_unknown_not_zero():
    # VER 20 hybrids stop after full capacity and cycles.
    frame = pace.parse_frame(pace.encode_frame(0, pace.encode_analog([analog(temps=5, missing=1)]), ver=0x20))
    pack = pace.decode_analog(frame).packs[0]
    assert pack.design_ah is None and pack.soh_pct is None
    assert pack.full_ah == 100.0 and pack.cycles == 12 and pack.soc_pct == 50.0


def test_offline_pack_sent_as_zeros_is_flagged_and_carries_no_values():
    zero = AnalogPack(cells_mv=(0,) * 16, temps_dk=(2730,) * 6, current_10ma=0, voltage_mv=0, remaining_10mah=0,
                      user_count=3, full_10mah=0, cycles=0, design_10mah=0)
    decoded = pace.decode_analog(reply(pace.encode_analog([analog(), zero, analog()])))
    offline = decoded.packs[1]
    assert not offline.online and offline.soc_pct is None and offline.soh_pct is None
    assert pace.pack_fields(2, offline, None) == {"pack": 2, "online": False}
    assert decoded.packs[2].online


def test_soc_and_soh_are_unknown_when_a_divisor_is_zero_and_soh_may_exceed_100():
    assert analog(full=0).soc_pct is None and analog(full=0).soh_pct is None
    assert analog(design=0).soh_pct is None and analog(design=0).soc_pct == 50.0
    assert analog(full=11000, design=10000).soh_pct == 110.0


@pytest.mark.parametrize(("raw", "amps"), [(0xFF1F, -2.25), (0xFFFF, -0.01), (0x8000, -327.68), (0x7FFF, 327.67), (0, 0.0)])
def test_signed_current(raw, amps):
    signed = raw - 0x10000 if raw & 0x8000 else raw
    assert pace.decode_analog(reply(pace.encode_analog([analog(current=signed)]))).packs[0].current_a == amps


def test_second_byte_is_a_count_only_when_ff_was_asked():
    info = pace.encode_analog([analog()], count_byte=3)  # reply to "pack 3 only"
    decoded = pace.decode_analog(reply(info), request_info=3)
    assert not decoded.is_count and decoded.count_byte == 3 and len(decoded.packs) == 1
    with pytest.raises(pace.DecodeError):
        pace.decode_analog(reply(info), request_info=pace.ALL_PACKS)


def test_pack_count_out_of_range_is_a_decode_error():
    # Seen over RS485: the count byte came back as FF (Tertiush/bmspace#45).
    with pytest.raises(pace.DecodeError, match="outside"):
        pace.decode_analog(reply(pace.encode_analog([analog()], count_byte=0xFF)))


def test_reply_address_may_differ_from_the_request():
    frame = reply(pace.encode_analog([analog()]), adr=0)
    assert frame.adr == 0 and len(pace.decode_analog(frame).packs) == 1


def test_non_zero_rtn_is_a_device_error_and_never_decoded():
    with pytest.raises(pace.DeviceError) as e:
        pace.decode_analog(reply(pace.encode_analog([analog()]), rtn=0x04))
    assert e.value.rtn == 4 and e.value.kind == "rtn" and "CID2 not defined" in str(e.value)


def test_lower_case_hex_is_accepted():
    raw = pace.encode_frame(0, pace.encode_analog([analog()]), adr=1)
    body = raw[1:-5].lower()  # the sender's checksum covers the characters it sent
    lowered = b"~" + body + b"%04x\r" % pace.frame.chksum(body)
    assert pace.parse_frame(lowered) == pace.parse_frame(raw)


def test_status_blocks_with_one_extra_byte_and_flags():
    status = StatusPack(cell_codes=(0,) * 15 + (2,), temp_codes=(0, 0, 0, 0, 0x81, 0x33), charge_current_code=0,
                        total_voltage_code=1, discharge_current_code=0xF0, protect_1=0x40, protect_2=0x80,
                        instruction=0x06, control=0, fault=0x04, balance_1=0x81, balance_2=0x01, warn_1=0x01,
                        warn_2=0x80, extra=b"\x11")
    decoded = pace.decode_status(reply(pace.encode_status([status, status]))).packs
    assert decoded == (status, status)
    pack = decoded[0]
    assert pack.cell_alarms == {16: "high"}
    assert pack.temp_alarms == {5: "user_0x81", 6: "undefined_0x33"}
    assert pack.pack_alarms == {"pack_voltage": "low", "discharge_current": "other"}
    assert pack.protections == ["short_circuit", "fully_charged"]
    assert pack.warnings == ["cell_high_voltage", "low_power"] and pack.faults == ["ntc_fault"]
    assert pack.balancing == [1, 8, 9] and pack.charge_fet and pack.discharge_fet


def test_pack_fields_use_the_contract_names():
    fields = pace.pack_fields(1, analog(), StatusPack((0,) * 16, (0,) * 6, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0))
    from common.messages import Pack
    Pack(**fields)  # every key is a field of the bus definition
    assert fields["current_a"] == -2.25 and fields["charge_fet"] is True and fields["warnings"] == []


def test_an_odd_lenid_is_a_frame_error_not_a_crash():
    # LENID 1 with a right LCHKSUM and CHKSUM: INFO cannot be bytes.
    events = pace.FrameSplitter().feed(b"~25014600F001AFD56\r")
    assert events and all(isinstance(e, pace.BadFrame) for e in events)
    with pytest.raises(pace.FrameError, match="odd"):
        pace.parse_frame(b"~25014600F001AFD56\r")
