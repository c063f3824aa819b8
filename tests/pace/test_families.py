"""The VER 20 layout families (common/pace/families.py) against the captures in tests/data/pace/vectors.json.

Every expected value is read from the file (the ``vendor`` part of ``expected``, written by an
independent slicing of the hex). The valid-frame tests of test_vectors.py split these frames whole,
byte by byte and inside junk; here they are decoded, identified and re-encoded byte for byte.
"""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import pace
from common.pace import commands, families
from harness.proc import DATA

VECTORS = json.loads((DATA / "pace/vectors.json").read_text())
FAMILY = [v for v in VECTORS if "family" in v]
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ids(vectors):
    return [v["id"] for v in vectors]


def vector(name):
    return next(v for v in VECTORS if v["id"] == name)


def frame_of(v) -> pace.Frame:
    frames = [e for e in pace.FrameSplitter().feed(v["frame"].encode()) if isinstance(e, pace.Frame)]
    assert len(frames) == 1
    return frames[0]


def command(v) -> commands.ReadCommand:
    return commands.by_cid2(int(v["command"], 16), v["family"])


def test_the_data_has_a_capture_of_every_decoded_family_command():
    have = {(v["family"], v["command"]) for v in FAMILY}
    wanted = {(c.family, f"{c.cid2:02X}") for c in commands.COMMANDS.values() if c.family != "25"}
    assert wanted <= have


@pytest.mark.parametrize("v", [v for v in FAMILY if v["command"] == "42"], ids=ids([v for v in FAMILY if v["command"] == "42"]))
def test_analog_reply_is_identified_as_its_family(v):
    assert families.identify(frame_of(v)) == v["family"]


def test_eg4_analog_decodes_to_the_captured_values():
    v = vector("nk20-eg4-42-resp")
    want = v["expected"]["vendor"]
    reply = command(v).decode(frame_of(v))
    (pack,) = reply.packs
    assert (reply.infoflag, reply.count_byte, reply.is_count) == (want["infoflag"], want["group"], False)
    assert list(pack.cells_mv) == want["cells_mV"]
    assert list(pack.temps_dk) == want["temps_raw_0.1K"] and pack.temps_c == want["temps_C"]
    assert pack.current_a == want["current_A"] and pack.voltage_v == want["voltage_V"]
    assert pack.voltage_mv == want["voltage_raw_10mV"] * 10
    assert abs(pack.voltage_mv - want["cells_sum_mV"]) < 100  # the 10 mV unit: cells add up to it
    assert (pack.remaining_ah, pack.full_ah, pack.cycles) == (want["remain_Ah"], want["full_Ah"], want["cycles"])
    assert pack.design_ah is None and pack.soh_pct is None
    assert pack.soc_pct == want["soc_calc_pct"]
    assert (pack.reported_soc_pct, pack.reported_soh_pct) == (want["bms_soc_pct"], want["bms_soh_pct"])
    assert (pack.cell_min_mv, pack.cell_max_mv, pack.cell_delta_mv) == (
        want["cell_min_mV"], want["cell_max_mV"], want["cell_diff_mV"])
    vendor = dict(pack.vendor)
    assert vendor["charged_10mah"] == want["charged_raw_10mAh"] and vendor["discharges"] == want["discharges"]


def test_eg4_status_decodes_to_the_captured_values():
    v = vector("nk20-eg4-44-resp")
    want = v["expected"]["vendor"]
    (status,) = command(v).decode(frame_of(v)).packs
    assert list(status.cell_codes) == want["cell_codes"] and list(status.temp_codes) == want["temp_codes"]
    assert status.status_raw["fet_state"] == want["fet_state"] and status.status_raw["system_state"] == want["system_state"]
    assert status.charge_fet and status.discharge_fet
    assert status.indicators == ["dfet_on", "cfet_on", "charging"]
    assert status.warnings == status.protections == status.faults == [] and status.balancing == []
    fields = pace.pack_fields(1, None, status)
    assert fields["charge_fet"] is True and fields["protections"] == []


def test_seplos_analog_decodes_to_the_captured_values():
    v = vector("nk20-seplos-42-resp-reconstructed")
    want = v["expected"]["vendor"]
    (pack,) = command(v).decode(frame_of(v)).packs
    assert list(pack.cells_mv) == want["cells_mV"]
    assert list(pack.temps_dk) == want["temps_raw_0.1K"] and pack.temps_c == want["temps_C"]
    assert pack.current_a == want["current_A"] and pack.voltage_v == want["voltage_V"]
    assert abs(pack.voltage_mv - want["cells_sum_mV"]) < 100
    assert (pack.remaining_ah, pack.full_ah, pack.design_ah, pack.cycles) == (
        want["remain_Ah"], want["full_Ah"], want["design_Ah"], want["cycles"])
    assert (pack.soc_pct, pack.soh_pct) == (want["soc_calc_pct"], want["soh_calc_pct"])
    assert pack.reported_soc_pct == want["bms_soc_permille"] / 10
    assert pack.reported_soh_pct == want["bms_soh_permille"] / 10
    assert dict(pack.vendor)["port_voltage_mv"] == want["port_voltage_raw_10mV"] * 10


def test_pylon_like_reply_reads_as_v25_with_an_offline_pack():
    v = vector("nk20-pylon-42-resp")
    want = v["expected"]["vendor"]
    assert families.identify(frame_of(v)) == "25"
    reply = pace.decode_analog(frame_of(v), None)
    (pack,) = reply.packs
    assert pack.user_count == want["user_defined_count_P"] and pack.design_10mah is None
    assert not pack.online and list(pack.temps_dk) == want["temps_raw_0.1K"]


@pytest.mark.parametrize("v", [v for v in FAMILY if v["family"] != "25"], ids=ids([v for v in FAMILY if v["family"] != "25"]))
def test_reply_re_encodes_byte_for_byte(v):
    cmd, frame = command(v), frame_of(v)
    assert cmd.encode(cmd.decode(frame)) == frame.info
    rebuilt = pace.encode_frame(0, cmd.encode(cmd.decode(frame)), adr=frame.adr, ver=frame.ver, cid1=frame.cid1)
    assert rebuilt == v["frame"].encode()


@pytest.mark.parametrize("v", [v for v in FAMILY if v["family"] != "25"], ids=ids([v for v in FAMILY if v["family"] != "25"]))
def test_a_cut_or_lengthened_reply_is_a_decode_error_never_a_wrong_value(v):
    cmd, frame = command(v), frame_of(v)
    for info in (frame.info[:-1], frame.info + b"\x00", frame.info[:10]):
        with pytest.raises(pace.DecodeError):
            cmd.decode(pace.Frame(frame.ver, frame.adr, frame.cid1, 0, info))


def test_v25_replies_are_never_taken_for_a_vendor_family():
    v25 = [v for v in VECTORS if v["direction"] == "response" and v["command"] == "42" and "packs" in v["expected"]
           and v["checksum_ok"] and v["lchksum_ok"] and v["length_ok"] and not v.get("info_only")]
    assert v25
    for v in v25:
        assert families.identify(frame_of(v)) in ("25", None), v["id"]


# Found by an adversarial review: v2.5 replies with a vendor marker byte in the same place.
V25_LOOKALIKES = {
    # VER 25, P = 10 (counting the words of a 14-byte tail): Seplos's length and 0x0A.
    "seplos": "~2501460010960001100CE40CE40CE40CE40CE40CE40CE40CE40CE40CE40CE40CE40CE40CE40CE40CE4060BA50BA50BA50BA5"
              "0BA50BA5FF6ACE401F400A2710007B271050271027102710271062CE400000DC9D\r",
    # A 2-pack v2.5 stack whose second pack's first cell is 0x0F6E mV: EG4's length and 0x0F.
    "eg4": "~2501460030B200020A0F3C0F3C0F3C0F3C0F3C0F3C0F3C0F3C0F3C0F3C040BA50BA50BA50BA5FF6A98581388032710000C27100A"
           "0F6E0F3C0F3C0F3C0F3C0F3C0F3C0F3C0F3C0F3C040BA50BA50BA50BA5FF6A98581388032710000C271050D613\r",
}


@pytest.mark.parametrize("name", V25_LOOKALIKES)
def test_a_v25_reply_with_a_vendor_marker_in_place_is_still_v25(name):
    frame = pace.parse_frame(V25_LOOKALIKES[name].encode())
    assert pace.decode_analog(frame).packs
    assert families.identify(frame) == "25"


def test_a_stack_that_needs_force_pack_offset_is_identified_with_it():
    pack = pace.AnalogPack(cells_mv=(3300,) * 16, temps_dk=(2980,) * 6, current_10ma=-150, voltage_mv=52800,
                           remaining_10mah=5000, user_count=3, full_10mah=10000, cycles=9, design_10mah=10000,
                           extra=bytes(range(40)))
    frame = pace.Frame(0x25, 1, 0x46, 0, pace.encode_analog([pack] * 3))
    assert families.identify(frame, pace.ALL_PACKS) is None  # a 40-byte tail is beyond the decoder's guess
    assert families.identify(frame, pace.ALL_PACKS, force_pack_offset=80) == "25"


def test_the_vendor_mark_is_what_tells_a_family():
    v = vector("nk20-eg4-42-resp")
    frame = frame_of(v)
    info = bytearray(frame.info)
    mark_at = 2 + 1 + 32 + 1 + 8 + 4 + 10  # after the cycle count
    assert info[mark_at] == families.EG4_ANALOG_MARK
    info[mark_at] = 0x0E
    with pytest.raises(pace.DecodeError, match="not the EG4 analog layout"):
        families.decode_eg4_analog(pace.Frame(frame.ver, frame.adr, frame.cid1, 0, bytes(info)))


def test_eg4_requests_are_those_the_captures_show():
    assert commands.COMMANDS["eg4_analog"].request(1) == vector("nk20-eg4-42-req")["frame"].encode()
    # nkinnan's exampleReadStatusInformationRequestV20, the same shape: no INFO, CID1 4A.
    assert commands.COMMANDS["eg4_status"].request(1) == b"~20014A440000FDA0\r"


def test_an_error_reply_identifies_no_family():
    assert families.identify(pace.Frame(0x20, 1, 0x4A, 0x03, b"")) is None


CELLS = st.lists(st.integers(2500, 3650), min_size=8, max_size=16)


def _analog(cells, temps, current, remaining, full, design) -> pace.AnalogPack:
    return pace.AnalogPack(cells_mv=tuple(cells), temps_dk=tuple(temps), current_10ma=current,
                           voltage_mv=round(sum(cells), -1), remaining_10mah=min(remaining, full), user_count=3,
                           full_10mah=full, cycles=7, design_10mah=design)


@PROPS
@given(CELLS, st.lists(st.integers(2400, 3400), min_size=6, max_size=8), st.integers(-20000, 20000),
       st.integers(0, 30000), st.integers(1, 30000), st.integers(1, 30000), st.integers(1, 15))
def test_simulated_packs_round_trip_through_each_vendor_layout(cells, temps, current, remaining, full, design, adr):
    pack = _analog(cells, temps, current, remaining, full, design)
    reply = pace.PackReply(0, adr, False, (pack,))
    for name in ("eg4_analog", "seplos_analog"):
        cmd = commands.COMMANDS[name]
        (back,) = cmd.decode(pace.Frame(cmd.ver, adr, cmd.cid1, 0, cmd.encode(reply))).packs
        assert (back.cells_mv, back.temps_dk, back.current_10ma, back.voltage_mv) == (
            pack.cells_mv, pack.temps_dk, pack.current_10ma, pack.voltage_mv)
        assert (back.remaining_10mah, back.full_10mah, back.cycles) == (pack.remaining_10mah, pack.full_10mah, 7)
        assert back.soc_pct == pack.soc_pct


@PROPS
@given(st.lists(st.sampled_from([0, 1, 2, 0xF0]), min_size=8, max_size=16),
       st.lists(st.sampled_from([0, 1, 2]), min_size=6, max_size=6), st.integers(0, 255), st.integers(0, 255),
       st.integers(0, 0xFFFF), st.integers(0, 3), st.integers(0, 2**16 - 1))
def test_eg4_status_round_trips(cells, temps, voltage_event, current_event, temperature_event, fets, balancing):
    status = families.Eg4Status(
        cell_codes=tuple(cells), temp_codes=tuple(temps), current_code=0, total_voltage_code=0, balance_event=0,
        voltage_event=voltage_event, temperature_event=temperature_event, current_event=current_event,
        capacity_event=0, fet_state=fets, system_state=0, balancing_bits=balancing)
    cmd = commands.COMMANDS["eg4_status"]
    (back,) = cmd.decode(pace.Frame(0x20, 1, 0x4A, 0, cmd.encode(pace.PackReply(0x10, 1, False, (status,))))).packs
    assert back == status
    assert back.charge_fet == bool(fets & 2) and back.discharge_fet == bool(fets & 1)
    assert len(back.balancing) == bin(balancing).count("1")
