"""Every frame of tests/data/pace/vectors.json through splitter and decoders, against its expected values.

The tests read the file; no expected number is copied here. Conventions: tests/data/pace/README.md.
"""

import json
import re

import pytest

from common import pace
from common.pace.commands import COMMANDS
from harness.proc import DATA

VECTORS = json.loads((DATA / "pace/vectors.json").read_text())
FRAMES = [v for v in VECTORS if not v.get("info_only")]
VALID = [v for v in FRAMES if v["checksum_ok"] and v["lchksum_ok"] and v["length_ok"]]
INVALID = [v for v in FRAMES if v not in VALID]
REPLIES = [v for v in VECTORS if v["direction"] == "response"]
LONG_WORDS = {"below lower limit": "low", "above upper limit": "high", "other fault": "other"}


def ids(vectors):
    return [v["id"] for v in vectors]


def split(data: bytes, chunk: int | None = None) -> tuple[list, pace.FrameSplitter]:
    splitter = pace.FrameSplitter()
    step = chunk or len(data)
    events = [e for i in range(0, len(data), step) for e in splitter.feed(data[i:i + step])]
    return events, splitter


def frame_of(vector) -> pace.Frame:
    if vector.get("info_only"):
        return pace.Frame(0x25, 0, 0x46, 0, bytes.fromhex(vector["frame"]))
    events, _ = split(vector["frame"].encode())
    assert len(events) == 1 and isinstance(events[0], pace.Frame), events
    return events[0]


def request_info(vector):
    return int(vector["request_info"], 16) if vector.get("request_info") else None


@pytest.mark.parametrize("vector", VALID, ids=ids(VALID))
def test_valid_frame_is_split_whole_byte_by_byte_and_inside_junk(vector):
    raw = vector["frame"].encode()
    whole, _ = split(raw)
    assert len(whole) == 1 and isinstance(whole[0], pace.Frame)
    one_by_one, _ = split(raw, 1)
    assert one_by_one == whole
    junk_before, junk_after = b"\x00\xffnoise\r\n~\r~~12", b"\r\n~garbage"
    wrapped, splitter = split(junk_before + raw + junk_after + raw, 7)
    frames = [e for e in wrapped if isinstance(e, pace.Frame)]
    assert frames == whole * 2
    assert all(isinstance(e, pace.BadFrame) for e in wrapped if e not in frames)
    assert splitter.junk_bytes > 0


@pytest.mark.parametrize("vector", VALID, ids=ids(VALID))
def test_header_matches(vector):
    frame = frame_of(vector)
    header = vector["expected"].get("header")
    if header is None:
        pytest.skip("no header in this vector")
    assert f"{frame.ver:02X}" == header["ver"]
    assert frame.adr == header["adr"]
    assert f"{frame.cid1:02X}" == header["cid1"]
    assert f"{frame.cid2:02X}" == header["cid2_or_rtn"]
    assert len(frame.info) * 2 == header["lenid"]


@pytest.mark.parametrize("vector", INVALID, ids=ids(INVALID))
def test_invalid_frame_is_reported_with_a_reason_and_never_decoded(vector):
    events, splitter = split(vector["frame"].encode())
    assert not any(isinstance(e, pace.Frame) for e in events)
    bad = [e for e in events if isinstance(e, pace.BadFrame)]
    assert len(bad) == 1 and str(bad[0].error)
    if not vector["lchksum_ok"]:
        assert isinstance(bad[0].error, pace.ChecksumError) and "LCHKSUM" in str(bad[0].error)
    with pytest.raises(pace.FrameError):
        pace.parse_frame(vector["frame"].encode())


@pytest.mark.parametrize("vector", [v for v in VALID if v["direction"] == "request"],
                         ids=ids([v for v in VALID if v["direction"] == "request"]))
def test_request_building_reproduces_captured_requests(vector):
    frame = frame_of(vector)
    built = pace.encode_frame(frame.cid2, frame.info, adr=frame.adr, ver=frame.ver, cid1=frame.cid1)
    assert built == vector["frame"].encode()


def test_checksum_arithmetic_matches_the_spec_example():
    vector = next(v for v in VECTORS if v["id"] == "spec-chksum-example")
    text = vector["frame"][1:-5].encode()
    assert f"{sum(text) & 0xFFFF:04X}" == vector["expected"]["ascii_sum_before_invert"]
    assert f"{pace.frame.chksum(text):04X}" == vector["expected"]["chksum_calc"]


ANALOG = [v for v in REPLIES if v["command"] == "42" and "packs" in v["expected"]]


@pytest.mark.parametrize("vector", ANALOG, ids=ids(ANALOG))
def test_analog_reply_decodes_to_expected_values(vector):
    exp = vector["expected"]
    reply = pace.decode_analog(frame_of(vector), request_info(vector))
    assert reply.infoflag == exp["infoflag"]
    if "pack_count" in exp:
        assert reply.is_count and reply.count_byte == exp["pack_count"] == len(reply.packs)
    else:
        assert not reply.is_count and reply.count_byte == exp["command_echo"]
    assert len(reply.packs) == len(exp["packs"])
    for pack, want in zip(reply.packs, exp["packs"]):
        assert list(pack.cells_mv) == want["cells_mV"]
        assert list(pack.temps_dk) == want["temps_raw_0.1K"]
        assert pack.temps_c == want["temps_C"]
        assert pack.current_10ma == want["current_raw_10mA"] and pack.current_a == want["current_A"]
        assert pack.voltage_mv == want["voltage_mV"] and pack.voltage_v == want["voltage_V"]
        assert pack.remaining_ah == want["remain_Ah"]
        assert pack.user_count == want["user_defined_count_P"]
        assert pack.full_ah == want["full_Ah"] and pack.cycles == want["cycles"]
        assert pack.design_ah == want.get("design_Ah")
        assert pack.soc_pct == want["soc_calc_pct"] and pack.soh_pct == want["soh_calc_pct"]
        assert (pack.cell_min_mv, pack.cell_max_mv, pack.cell_delta_mv) == (
            want["cell_min_mV"], want["cell_max_mV"], want["cell_diff_mV"])
        assert pack.power_w == want["power_W"]
        assert pack.extra.hex().upper() == want.get("extra_hex", "").upper()
        tail = want.get("tail_interpretation", {})
        if "soc_byte_pct" in tail:
            assert pack.reported_soc_pct == tail["soc_byte_pct"]


STATUS = [v for v in REPLIES if v["command"] == "44" and "packs" in v["expected"]]


def _words(long_form: dict) -> dict:
    out = {}
    for index, text in long_form.items():
        m = re.fullmatch(r"(user defined|undefined) 0x([0-9A-F]{2})", text)
        out[int(index)] = LONG_WORDS.get(text) or f"{'user' if m.group(1) == 'user defined' else 'undefined'}_0x{m.group(2)}"
    return out


@pytest.mark.parametrize("vector", STATUS, ids=ids(STATUS))
def test_status_reply_decodes_to_expected_values(vector):
    exp = vector["expected"]
    reply = pace.decode_status(frame_of(vector), request_info(vector))
    assert reply.infoflag == exp["infoflag"]
    assert len(reply.packs) == len(exp["packs"]) == exp.get("pack_count", 1)
    for pack, want in zip(reply.packs, exp["packs"]):
        assert list(pack.cell_codes) == want["cell_warn_raw"]
        assert list(pack.temp_codes) == want["temp_warn_raw"]
        assert pack.cell_alarms == _words(want["cell_warnings"])
        assert pack.temp_alarms == _words(want["temp_warnings"])
        pack_codes = {"charge_current": want["charge_current_warn"], "pack_voltage": want["total_voltage_warn"],
                      "discharge_current": want["discharge_current_warn"]}
        assert pack.pack_alarms == {k: LONG_WORDS.get(v, v) for k, v in pack_codes.items() if v != "normal"}
        assert pack.protections == want["protect_1_flags"] + want["protect_2_flags"]
        assert pack.warnings == want["warn_1_flags"] + want["warn_2_flags"]
        assert pack.faults == want["fault_flags"]
        assert pack.indicators == want["instruction_flags"]
        assert pack.control_flags == want["control_flags_spec"]
        assert pack.balancing == want["balancing_cells_spec"]
        assert pack.charge_fet == ("cfet_on" in want["instruction_flags"])
        assert pack.discharge_fet == ("dfet_on" in want["instruction_flags"])
        raw = pack.status_raw
        for name, key in (("protect_1", "protect_state_1"), ("protect_2", "protect_state_2"),
                          ("instruction", "instruction_state"), ("control", "control_state"),
                          ("fault", "fault_state"), ("balance_1", "balance_state_1"),
                          ("balance_2", "balance_state_2"), ("warn_1", "warn_state_1"), ("warn_2", "warn_state_2")):
            assert raw[name] == want[key]
        assert pack.extra.hex().upper() == want.get("extra_hex", "").upper()


TEXTS = [v for v in REPLIES if v["command"] in ("C1", "C2") and "text_raw" in v["expected"]]


@pytest.mark.parametrize("vector", TEXTS, ids=ids(TEXTS))
def test_version_and_serial_replies(vector):
    frame, exp = frame_of(vector), vector["expected"]
    if vector["command"] == "C1":
        assert pace.decode_text(frame) == exp["text_stripped"]
    else:
        serials = pace.decode_serials(frame)
        assert serials.bms_serial == exp["first_20_chars_stripped"]
        assert serials.pack_serial == exp["second_20_chars_stripped"]


CLOCKS = [v for v in REPLIES if v["command"] == "B1"]
PACK_COUNTS = [v for v in REPLIES if v["command"] == "90"]


@pytest.mark.parametrize("vector", CLOCKS, ids=ids(CLOCKS))
def test_date_time_replies(vector):
    exp = vector["expected"]
    t = pace.decode_datetime(frame_of(vector))
    assert (t.year, t.month, t.day, t.hour, t.minute, t.second) == tuple(
        exp[k] for k in ("year", "month", "day", "hour", "minute", "second"))


@pytest.mark.parametrize("vector", PACK_COUNTS, ids=ids(PACK_COUNTS))
def test_pack_count_replies(vector):
    assert pace.decode_pack_count(frame_of(vector)) == vector["expected"]["pack_count"]


def test_the_vector_file_has_every_kind_of_frame_the_tests_rely_on():
    # A parametrized test over an empty list is skipped, not failed: the data must be there.
    kinds = {"valid": VALID, "invalid": INVALID, "requests": [v for v in VALID if v["direction"] == "request"],
             "analog": ANALOG, "status": STATUS, "texts": TEXTS, "clocks": CLOCKS, "pack counts": PACK_COUNTS}
    assert {name for name, found in kinds.items() if not found} == set()


def test_a_v20_frame_with_another_layout_is_rejected_not_misread():
    vector = next(v for v in VECTORS if v["id"] == "nk20-eg4-44-resp")
    assert vector["expected"]["spec_v25_decoder"].startswith("reject")
    with pytest.raises(pace.DecodeError):
        pace.decode_status(frame_of(vector))


@pytest.mark.parametrize("command", list(COMMANDS.values()), ids=list(COMMANDS))
@pytest.mark.parametrize("adr", [0, 1, 2, 15, 0xFF])
def test_requests_for_every_read_command_at_any_address_parse_back(command, adr):
    info = bytes([pace.ALL_PACKS]) if command.per_pack else bytes([adr]) if command.info_is_adr else b""
    raw = command.request(adr)
    frame = pace.parse_frame(raw)
    assert (frame.adr, frame.cid2, frame.info, frame.ver, frame.cid1) == (adr, command.cid2, info, command.ver, command.cid1)
    lenid = int(raw[10:13], 16)
    assert lenid == 2 * len(info) and len(raw) == 18 + lenid
