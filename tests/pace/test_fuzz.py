"""Property tests: no input makes the protocol raise anything but its own named errors."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import pace
from common.pace.commands import COMMANDS
from tests.pace.test_vectors import VALID

FRAMES = [v["frame"].encode() for v in VALID]
REPLY_FRAMES = [v["frame"].encode() for v in VALID if v["direction"] == "response"]
DECODERS = [
    lambda f: pace.decode_analog(f, pace.ALL_PACKS), lambda f: pace.decode_analog(f, 1),
    lambda f: pace.decode_analog(f, None), lambda f: pace.decode_status(f, pace.ALL_PACKS),
    lambda f: pace.decode_status(f, None), lambda f: pace.decode_analog(f, pace.ALL_PACKS, force_pack_offset=6),
    pace.decode_text, pace.decode_serials, pace.decode_pack_count, pace.decode_capacities, pace.decode_datetime,
    # Every command of the table, its decoder and its stale-reply check.
    *(lambda f, c=c: c.decode(f, None) for c in COMMANDS.values()),
    *(lambda f, c=c: c.fits(f) for c in COMMANDS.values()),
]
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_everything(frame: pace.Frame) -> None:
    for decoder in DECODERS:
        try:
            decoder(frame)
        except pace.PaceError:
            pass


def run_splitter(chunks: list[bytes]) -> list:
    splitter = pace.FrameSplitter()
    events = []
    for chunk in chunks:
        events += splitter.feed(chunk)
    for event in events:
        assert isinstance(event, (pace.Frame, pace.BadFrame))
        if isinstance(event, pace.BadFrame):
            assert isinstance(event.error, pace.FrameError) and str(event.error)
        else:
            decode_everything(event)
    return events


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_arbitrary_bytes_only_give_frames_or_bad_frames(chunks):
    run_splitter(chunks)


@FUZZ
@given(st.binary(max_size=600))
def test_parse_frame_raises_only_frame_errors(data):
    try:
        decode_everything(pace.parse_frame(data))
    except pace.FrameError:
        pass


@FUZZ
@given(st.sampled_from(FRAMES), st.data())
def test_mutated_real_frames_raise_only_named_errors(frame, data):
    raw = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    run_splitter([bytes(raw[:cut]), bytes(raw[cut:])])


@FUZZ
@given(st.sampled_from(REPLY_FRAMES), st.data())
def test_valid_frames_with_mutated_info_decode_or_raise_named_errors(frame, data):
    parsed = pace.parse_frame(frame)
    info = bytearray(parsed.info)
    if info:
        for _ in range(data.draw(st.integers(1, 6))):
            info[data.draw(st.integers(0, len(info) - 1))] = data.draw(st.integers(0, 255))
    info = info[: data.draw(st.integers(0, len(info)))]
    rebuilt = pace.parse_frame(pace.encode_frame(parsed.cid2, bytes(info), adr=parsed.adr))
    decode_everything(rebuilt)


JUNK = st.binary(max_size=60)


@FUZZ
@given(st.lists(st.tuples(JUNK, st.sampled_from(FRAMES)), min_size=1, max_size=6), JUNK, st.integers(1, 64))
def test_valid_frames_interleaved_with_junk_are_all_recovered(pairs, tail, chunk):
    stream = b"".join(junk + frame for junk, frame in pairs) + tail
    events = run_splitter([stream[i:i + chunk] for i in range(0, len(stream), chunk)])
    frames = [e for e in events if isinstance(e, pace.Frame)]
    assert frames == [pace.parse_frame(frame) for _, frame in pairs]
