"""The settings commands (common/pace/config.py) against the captures of tests/data/pace/config_vectors.json.

Frames there are stored without their CR. Every expected value is read from the file.
"""

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import pace
from common.pace import config
from harness.proc import DATA

VECTORS = json.loads((DATA / "pace/config_vectors.json").read_text())
CONFIG = [v for v in VECTORS if int(v["command"], 16) in config.BY_CID2]
REPLIES = [v for v in CONFIG if v["direction"] == "response"]
REQUESTS = [v for v in CONFIG if v["direction"] == "request"]
CLOCK = {(v["command"], v["direction"]): v for v in VECTORS if v["command"] in ("B1", "B2")}
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NO_SOI = st.binary(max_size=40).map(lambda b: b.replace(b"~", b""))


def ids(vectors):
    return [v["id"] for v in vectors]


def wire(vector) -> bytes:
    return vector["frame"].encode() + b"\r"


def command_of(vector) -> config.ConfigCommand:
    return config.BY_CID2[int(vector["command"], 16)]


def split(data: bytes, chunk: int) -> list:
    splitter = pace.FrameSplitter()
    return [e for i in range(0, len(data), chunk) for e in splitter.feed(data[i:i + chunk])]


def test_every_command_has_its_capture_and_every_capture_its_command():
    assert sorted(int(v["command"], 16) for v in REPLIES) == sorted(config.BY_CID2)
    assert sorted(ids(REQUESTS)) == sorted(v["id"].replace("-resp", "-req") for v in REPLIES)


@pytest.mark.parametrize("vector", VECTORS, ids=ids(VECTORS))
def test_capture_is_a_valid_frame(vector):
    frame = pace.parse_frame(wire(vector))
    if vector["direction"] == "request":
        assert frame.cid2 == int(vector["command"], 16)
        assert frame.info.hex().upper() == vector.get("request_info", "")


@pytest.mark.parametrize("vector", REPLIES, ids=ids(REPLIES))
def test_reply_decodes_to_the_captured_values(vector):
    command = command_of(vector)
    assert config.decode_config(command, pace.parse_frame(wire(vector))) == vector["expected"]


@pytest.mark.parametrize("vector", REPLIES, ids=ids(REPLIES))
def test_reply_fed_byte_by_byte_decodes_the_same(vector):
    events = split(wire(vector), 1)
    assert len(events) == 1 and isinstance(events[0], pace.Frame)
    assert config.decode_config(command_of(vector), events[0]) == vector["expected"]


@pytest.mark.parametrize("vector", REPLIES, ids=ids(REPLIES))
def test_reply_wrapped_in_junk_is_found_and_decoded(vector):
    events = split(b"\x00\xffnoise\r\n~\r~~12" + wire(vector) + b"\r\n~garbage", 5)
    frames = [e for e in events if isinstance(e, pace.Frame)]
    assert len(frames) == 1
    assert config.decode_config(command_of(vector), frames[0]) == vector["expected"]


@PROPS
@given(st.sampled_from(REPLIES), NO_SOI, NO_SOI, st.integers(1, 32))
def test_reply_between_any_junk_without_soi_decodes(vector, before, after, chunk):
    frames = [e for e in split(before + wire(vector) + after, chunk) if isinstance(e, pace.Frame)]
    assert [config.decode_config(command_of(vector), f) for f in frames] == [vector["expected"]]


@pytest.mark.parametrize("vector", REPLIES, ids=ids(REPLIES))
def test_captured_values_encode_back_to_the_captured_info(vector):
    info = pace.parse_frame(wire(vector)).info
    assert config.encode_config(command_of(vector), vector["expected"]) == info


@pytest.mark.parametrize("vector", REPLIES, ids=ids(REPLIES))
def test_simulated_bms_reports_the_captured_values(vector):
    assert command_of(vector).sim_default == vector["expected"]


@pytest.mark.parametrize("vector", REQUESTS, ids=ids(REQUESTS))
def test_request_is_built_as_pbmstools_sends_it(vector):
    command = command_of(vector)
    adr = vector["expected"]["adr"]
    assert pace.encode_frame(command.cid2, command.request_info, adr=adr) == wire(vector)


@pytest.mark.parametrize("command", config.CONFIG_COMMANDS, ids=lambda c: c.name)
def test_refusal_is_a_device_error(command):
    refusal = pace.parse_frame(pace.encode_frame(0x04, b""))
    with pytest.raises(pace.DeviceError):
        config.decode_config(command, refusal)


def test_commands_and_field_names_are_unique():
    assert len(config.BY_NAME) == len(config.BY_CID2) == len(config.CONFIG_COMMANDS)
    for command in config.CONFIG_COMMANDS:
        assert len(set(command.layout.names)) == len(command.layout.names)


def field_raw(field) -> st.SearchStrategy[int]:
    bits = 8 * field.size
    return st.integers(-(1 << bits - 1), (1 << bits - 1) - 1) if field.signed else st.integers(0, (1 << bits) - 1)


@st.composite
def command_and_values(draw):
    command = draw(st.sampled_from(config.CONFIG_COMMANDS))
    return command, {f.name: f.value(draw(field_raw(f))) for f in command.layout.fields}


@PROPS
@given(command_and_values())
def test_values_round_trip_through_a_reply_frame(case):
    command, values = case
    frame = pace.parse_frame(pace.encode_frame(0, config.encode_config(command, values)))
    assert config.decode_config(command, frame) == values


@PROPS
@given(st.sampled_from(config.CONFIG_COMMANDS), st.data())
def test_any_info_of_the_right_length_round_trips_byte_for_byte(command, data):
    info = data.draw(st.binary(min_size=command.layout.size, max_size=command.layout.size))
    frame = pace.parse_frame(pace.encode_frame(0, info))
    assert config.encode_config(command, config.decode_config(command, frame)) == info


@PROPS
@given(command_and_values(), st.booleans(), st.integers(0, 255))
def test_reply_one_byte_short_or_long_is_a_decode_error(case, longer, extra):
    command, values = case
    info = config.encode_config(command, values)
    info = info + bytes([extra]) if longer else info[:-1]
    with pytest.raises(pace.DecodeError):
        config.decode_config(command, pace.parse_frame(pace.encode_frame(0, info)))


def test_b1_capture_decodes_and_a_simulated_b1_reply_carries_the_same_info():
    vector = CLOCK["B1", "response"]
    frame = pace.parse_frame(wire(vector))
    when = pace.decode_datetime(frame)
    assert when == dt.datetime.fromisoformat(vector["expected"]["datetime"])
    assert config.datetime_info(when) == frame.info


def test_b2_request_info_is_built_as_captured():
    vector = CLOCK["B2", "request"]
    info = config.datetime_info(dt.datetime.fromisoformat(vector["expected"]["datetime"]))
    assert info.hex().upper() == vector["request_info"]
    assert pace.encode_frame(0xB2, info, adr=0) == wire(vector)


def test_b2_acknowledgement_is_empty():
    vector = CLOCK["B2", "response"]
    frame = pace.parse_frame(wire(vector)).check_rtn()
    assert (frame.rtn, frame.info.hex().upper()) == (vector["expected"]["rtn"], vector["expected"]["info"])


@PROPS
@given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31, 23, 59, 59)))
def test_datetime_info_round_trips_through_the_b1_decoder(when):
    frame = pace.parse_frame(pace.encode_frame(0, config.datetime_info(when)))
    assert pace.decode_datetime(frame) == when.replace(microsecond=0)


@pytest.mark.parametrize("year", [1999, 2256])
def test_datetime_info_refuses_a_year_that_does_not_fit(year):
    with pytest.raises(ValueError):
        config.datetime_info(dt.datetime(year, 1, 1))
