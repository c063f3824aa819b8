"""The NMEA rules with sentences: every "unknown" case, every kind of bad input."""

import datetime as dt
import functools

import pytest

from services.gps_reader import nmea


def s(body: str) -> bytes:
    """A sentence with a correct checksum."""
    return f"${body}*{functools.reduce(lambda a, c: a ^ ord(c), body, 0):02X}".encode()


def epoch(*bodies: str) -> dict:
    assembler = nmea.EpochAssembler()
    for body in bodies:
        sentence, _ = nmea.parse_line(s(body))
        assert assembler.add(sentence) is None, "one epoch expected"
    return nmea.fix_fields(assembler.flush(), assembler.date)


RMC = "GPRMC,120000.00,A,4722.61400,N,00832.50200,E,{kn},{course},261126,,,{mode}"
GGA = "GPGGA,120000.00,4722.61400,N,00832.50200,E,{q},08,1.01,412.3,M,47.1,M,,"


def rmc(kn="10.000", course="90.0", mode="A", status="A"):
    return RMC.format(kn=kn, course=course, mode=mode).replace(",A,4722", f",{status},4722")


def test_a_valid_fix_has_speed_position_and_time():
    fix = epoch(rmc("10.000"), GGA.format(q=1))
    assert fix["valid"] and fix["speed_km_h"] == 18.52 and fix["course_deg"] == 90.0
    assert fix["lat"] == pytest.approx(47.3769) and fix["lon"] == pytest.approx(8.5417)
    assert fix["alt_m"] == 412.3 and fix["sats"] == 8 and fix["hdop"] == 1.01 and fix["fix_quality"] == 1
    assert fix["gps_utc"] == 1795694400.0  # 2026-11-26 12:00:00 UTC


def test_a_real_standstill_is_zero_not_unknown():
    fix = epoch(rmc("0.000", course=""))
    assert fix["valid"] and fix["speed_km_h"] == 0.0 and fix["course_deg"] is None


@pytest.mark.parametrize("bodies", [
    pytest.param(["GPRMC,,V,,,,,,,,,,N", "GPVTG,,,,,,,,,N", "GPGGA,,,,,,0,00,99.99,,,,,,",
                  "GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99"], id="no-fix"),
    pytest.param([rmc("0.00", status="V")], id="status-V-with-a-speed-and-mode-A"),
    pytest.param([rmc(mode="N")], id="mode-N"),
    pytest.param([rmc(mode="E")], id="mode-E-dead-reckoning"),
    pytest.param([rmc(), GGA.format(q=0)], id="gga-quality-0"),
    pytest.param([rmc(), GGA.format(q=6)], id="gga-quality-6"),
    pytest.param([rmc(), "GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99"], id="gsa-no-fix"),
    pytest.param(["GPVTG,90.0,T,,M,10.0,N,18.5,K,N"], id="vtg-mode-N-alone"),
])
def test_unknown_speed_and_invalid_fix(bodies):
    fix = epoch(*bodies)
    assert fix["valid"] is False
    assert fix.get("speed_km_h") is None and fix.get("lat") is None and fix.get("lon") is None


@pytest.mark.parametrize("kn", ["", "abc", "-5.0", "200.0", "nan"])
def test_empty_bad_or_impossible_speed_is_unknown(kn):
    fix = epoch(rmc(kn))
    assert fix["valid"] and fix["speed_km_h"] is None


def test_vtg_gives_the_speed_when_the_epoch_has_no_rmc():
    fix = epoch("GPGGA,120000.00,4722.61400,N,00832.50200,E,1,08,1.01,412.3,M,47.1,M,,",
                "GPVTG,77.5,T,93.3,M,5.200,N,9.7,K,A")
    assert fix["speed_km_h"] == round(5.2 * 1.852, 3), "knots x 1.852, as RMC, not the device-rounded km/h"
    assert fix["course_deg"] == 77.5
    only_kmh = epoch("GPGGA,120000.00,4722.61400,N,00832.50200,E,1,08,1.01,412.3,M,47.1,M,,",
                     "GPVTG,77.5,T,,M,,N,9.7,K,A")
    assert only_kmh["speed_km_h"] == 9.7


def test_rmc_wins_over_vtg_and_an_empty_rmc_speed_falls_back_to_vtg():
    assert epoch(rmc("10.000"), "GPVTG,90.0,T,,M,11.000,N,20.372,K,A")["speed_km_h"] == 18.52
    assert epoch(rmc(""), "GPVTG,90.0,T,,M,11.000,N,20.372,K,A")["speed_km_h"] == 20.372


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "BD", "IN"])
def test_any_talker(talker):
    assert epoch(rmc().replace("GPRMC", f"{talker}RMC"))["speed_km_h"] == 18.52


def test_nmea41_nav_status_v_does_not_invalidate_a_good_fix():
    # u-blox 8 ends every good RMC with mode A and navigational status V (pynmea2's is_valid says False).
    fix = epoch("GNRMC,091503.00,A,4801.59431,N,00810.35047,E,6.560,282.59,101015,,,A,V")
    assert fix["valid"] and fix["speed_km_h"] == round(6.56 * 1.852, 3)


def test_a_new_utc_time_or_a_repeated_sentence_closes_the_epoch():
    assembler = nmea.EpochAssembler()
    first, _ = nmea.parse_line(s(rmc()))
    later, _ = nmea.parse_line(s(rmc().replace("120000.00", "120001.00")))
    nofix, _ = nmea.parse_line(s("GPRMC,,V,,,,,,,,,,N"))
    assert assembler.add(first) is None
    assert assembler.add(later).time == 12 * 3600
    assembler.flush()
    assembler.add(nofix)
    assert assembler.add(nofix) is not None, "no-fix sentences have no time; a second RMC starts an epoch"


def _feed(assembler, *bodies):
    """Add each sentence; the epochs they closed."""
    return [c for b in bodies if (c := assembler.add(nmea.parse_line(s(b))[0])) is not None]


@pytest.mark.parametrize("stall_after", range(1, 4))
def test_an_epoch_closed_early_by_a_stall_is_rejoined_by_the_rest_of_its_burst(stall_after):
    # A stall inside the burst makes the reader flush the epoch; the rest of the burst carries the
    # same UTC time (GGA) or none (VTG, GSA) and must end up in the same epoch, complete.
    burst = [GGA.format(q=1), "GPGSA,A,3,02,05,12,,,,,,,,,,1.85,1.01,1.55", "GPVTG,90.0,T,,M,10.000,N,18.520,K,A",
             rmc("10.000")]
    assembler = nmea.EpochAssembler()
    assert _feed(assembler, *burst[:stall_after]) == []
    early = assembler.flush()
    assert _feed(assembler, *burst[stall_after:]) == []
    rejoined = assembler.flush()
    assert rejoined is early and set(rejoined.by_type) == {"GGA", "GSA", "VTG", "RMC"}
    fix = nmea.fix_fields(rejoined, assembler.date)
    assert fix["valid"] and fix["speed_km_h"] == 18.52 and fix["sats"] == 8 and fix["gps_utc"] == 1795694400.0


def test_two_epochs_of_one_second_stay_two_and_a_new_second_is_never_rejoined():
    assembler = nmea.EpochAssembler()
    _feed(assembler, rmc("10.000"))
    first = assembler.flush()
    _feed(assembler, rmc("12.000"))  # a second RMC with the same time: a new epoch, not the same one
    second = assembler.flush()
    assert second is not first and nmea.speed_km_h(second) == round(12 * 1.852, 3)
    _feed(assembler, GGA.format(q=1).replace("120000.00", "120001.00"))
    assert assembler.flush() is not second


BAD = [
    (s(rmc())[:-2] + b"00", "checksum"),
    (s(rmc()).split(b"*")[0], "checksum"),  # no checksum at all
    (b"RMC,120000.00,A,4722.61400,N", "partial"),
    (b"\xb5b\x01\x07\\\x00\xff\xfe", "junk"),
    (b"$GPRMC,12\xff\xfe0000", "junk"),
    (s("GPXYZ,1,2,3"), "unknown"),
    (b"$" + b"A" * 1100, "too_long"),
    (b"$GPRMC,1*7", "parse"),
]


@pytest.mark.parametrize(("line", "kind"), BAD, ids=[k for _, k in BAD])
def test_bad_input_is_a_named_error(line, kind):
    with pytest.raises(nmea.BadSentence) as e:
        nmea.parse_line(line)
    assert e.value.kind == kind


def test_junk_before_a_sentence_is_reported_and_the_sentence_kept():
    sentence, junk = nmea.parse_line(b"\x00\x13noise" + s(rmc()))
    assert junk and sentence.sentence_type == "RMC"


def test_splitter_handles_partial_lines_any_line_end_and_endless_binary():
    splitter = nmea.LineSplitter()
    assert splitter.feed(b"$GPRMC,1") == []
    assert splitter.feed(b"23\r\n$GPVTG\n\r$GPGGA\r") == [b"$GPRMC,123", b"$GPVTG", b"$GPGGA"]
    assert splitter.feed(b"\xff" * 1000) == [], "a line is counted when it ends"
    assert splitter.feed(b"\xff" * 1000) == []
    ended = splitter.feed(b"tail of the flood\n$GPZDA\n")
    assert [(b.kind, b.count) for b in ended[:-1]] == [("junk", 1)] and ended[-1] == b"$GPZDA", "one report per run"


UBX = b"\xb5\x62\x01\x07\x5c\x00" + bytes(range(0x80, 0xE0)) + b"\r\x0a\x24\x00"  # NAV-PVT-like, with CR, LF and '$'
STREAM = [s(rmc()), s(GGA.format(q=1)), s("GPGSA,A,3,02,05,12,15,18,21,24,29,,,,,1.85,1.01,1.55")]


def _split(chunks, json=False) -> tuple[list[bytes], dict]:
    splitter, lines, bad = nmea.LineSplitter(json=json), [], {}
    for chunk in chunks:
        for item in splitter.feed(chunk):
            if isinstance(item, bytes):
                lines.append(item)
            else:
                bad[item.kind] = bad.get(item.kind, 0) + item.count
    return lines, bad


@pytest.mark.parametrize("how", ["whole", "byte_by_byte", "stalls"])
def test_sentences_come_out_whole_however_the_bytes_arrive(how):
    data = b"".join(line + b"\r\n" for line in STREAM)
    chunks = {"whole": [data], "byte_by_byte": [data[i:i + 1] for i in range(len(data))],
              "stalls": [data[:17], data[17:18], data[18:90], data[90:]]}[how]
    assert _split(chunks) == (STREAM, {})


@pytest.mark.parametrize("at", [0, 1, 5, len(UBX) - 1])
def test_a_binary_frame_between_sentences_costs_no_sentence(at):
    # u-blox receivers send UBX frames and NMEA on one port, with no line end after the frame.
    data = STREAM[0] + b"\r\n" + UBX + STREAM[1] + b"\r\n" + STREAM[2] + b"\r\n"
    lines, bad = _split([data[:len(STREAM[0]) + 2 + at], data[len(STREAM[0]) + 2 + at:]])
    assert lines == STREAM
    assert sum(bad.values()) >= 1 and set(bad) <= {"junk", "partial"}


def test_a_lost_line_end_costs_only_the_sentence_it_cut():
    lines, bad = _split([STREAM[0][:30] + STREAM[1] + b"\r\n" + STREAM[2] + b"\r\n"])
    assert lines == STREAM[1:] and bad == {"partial": 1}


def test_an_over_long_run_is_dropped_and_the_next_sentence_kept():
    lines, bad = _split([b"$" + b"A" * 5000 + STREAM[0] + b"\r\n"])
    assert lines == [STREAM[0]] and bad == {"too_long": 1}


def test_a_long_proprietary_sentence_is_not_an_error():
    sats = ",".join(f"{n:02d},U,{n * 7 % 360:03d},{n % 90:02d},{30 + n % 20},064" for n in range(1, 33))
    pubx = s(f"PUBX,03,32,{sats}")
    assert len(pubx) > 400
    lines, bad = _split([pubx + b"\r\n"])
    assert lines == [pubx] and bad == {}
    sentence, _ = nmea.parse_line(pubx)
    assert not nmea.is_fix_data(sentence)


def test_gpsd_json_lines_pass_even_with_a_dollar_inside_but_only_from_gpsd():
    data = b'{"class":"VERSION","release":"$3.25"}\n' + STREAM[0] + b"\r\n"
    assert _split([data], json=True) == ([b'{"class":"VERSION","release":"$3.25"}', STREAM[0]], {})
    # On a serial line a '{' is just a byte: a UBX frame holding LF and '{' costs no sentence.
    assert _split([b"\n{\x01" + STREAM[0] + b"\r\n"]) == ([STREAM[0]], {"junk": 1})


@pytest.mark.parametrize("data", [b"\r{a}\n{b}\n" + STREAM[0] + b"\r\n", b"abc\x00\nxyz\r\n" + STREAM[0] + b"\r\n",
                                  b"$" + b"A" * 1500 + b"\xff\n\xfe\n" + STREAM[0] + b"\n"])
def test_cutting_the_bytes_anywhere_gives_the_same_lines_and_counts(data):
    whole = _split([data], json=True)
    assert whole[0][-1] == STREAM[0]
    for cut in range(1, len(data)):
        assert _split([data[:cut], data[cut:]], json=True) == whole, cut
    assert _split([data[i:i + 1] for i in range(len(data))], json=True) == whole


def test_junk_lines_are_counted_one_by_one_but_reported_at_once():
    lines, bad = _split([b"GPRMC,noise*00\r\n" * 300 + STREAM[0] + b"\r\n"])
    assert lines == [STREAM[0]] and bad == {"partial": 300}


def test_a_leap_second_has_its_time_after_23_59_59():
    assembler = nmea.EpochAssembler()
    closed = _feed(assembler, rmc().replace("120000.00", "235959.00").replace("261126", "311226"),
                   rmc().replace("120000.00", "235960.00").replace("261126", "311226"),
                   rmc().replace("120000.00", "000000.00").replace("261126", "010127"))
    assert [c.time for c in closed] == [86399.0, 86400.0]
    leap = nmea.fix_fields(closed[1], dt.date(2026, 12, 31))
    assert leap["gps_utc"] == dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp() and leap["speed_km_h"] == 18.52


def test_a_text_sentence_is_no_fix_data():
    sentence, _ = nmea.parse_line(s("GPTXT,01,01,02,ANTSTATUS=OK"))
    assert not nmea.is_fix_data(sentence)


def test_proprietary_sentences_are_valid_but_not_fix_data_and_queries_are_refused():
    sentence, _ = nmea.parse_line(s("PMTK001,604,3"))
    assert not nmea.is_fix_data(sentence)
    garmin, _ = nmea.parse_line(s("PGRME,15.0,M,45.0,M,25.0,M"))
    assert not nmea.is_fix_data(garmin)
    with pytest.raises(nmea.BadSentence) as e:
        nmea.parse_line(s("CCGPQ,GGA"))
    assert e.value.kind == "unknown"


def _cycle(second: int) -> list[str]:
    t = f"1200{second:02d}.00"
    return [rmc().replace("120000.00", t), GGA.format(q=1).replace("120000.00", t), f"GPGLL,4722.61400,N,00832.50200,E,{t},A,A"]


def test_the_cycle_end_is_learnt_and_an_epoch_is_complete_on_its_last_sentence():
    assembler = nmea.EpochAssembler()
    completions = []
    for second in range(6):
        for body in _cycle(second):
            assembler.add(nmea.parse_line(s(body))[0])
            completions.append(assembler.complete)
    # Three epochs closed by the next one's start vote GLL in; from the fourth each GLL completes its epoch.
    assert completions[:11] == [False] * 11
    assert completions[11:] == [True, False, False, True, False, False, True]
    assert assembler.cycle_end.type == "GLL"


def test_a_sentence_after_the_learnt_end_unlearns_it_and_rejoins_the_epoch():
    assembler = nmea.EpochAssembler()
    for second in range(4):
        for body in _cycle(second):
            assembler.add(nmea.parse_line(s(body))[0])
    assert assembler.complete
    early = assembler.flush(early=True)
    assembler.add(nmea.parse_line(s("GPGSA,A,3,02,05,12,15,18,21,24,29,,,,,1.85,1.01,1.55"))[0])
    assert assembler.cycle_end.type is None and not assembler.complete
    again = assembler.flush()
    assert again is early and len(again.gsa) == 1, "the late GSA belongs to the epoch it followed"


def _publish_like_the_reader(cycles: list[list[str]]) -> list[nmea.Epoch]:
    """What the reader publishes: an epoch closed by the next, one complete on its cycle's last
    sentence, and, after each burst, the open epoch on the quiet line."""
    assembler, published = nmea.EpochAssembler(), []
    for bodies in cycles:
        for body in bodies:
            closed = assembler.add(nmea.parse_line(s(body))[0])
            if closed is not None:
                published.append(closed)
            if assembler.complete:
                published.append(assembler.flush(early=True))
        if assembler.current is not None:
            published.append(assembler.flush())
    return [e for e in published if e is not None]


def _at(second: int, body: str) -> str:
    return body.replace("120000.00", f"1200{second:02d}.00")


GSV = "GPGSV,{n},{i},08,02,45,120,38,05,30,200,35,12,60,080,41,15,20,310,30"


def test_a_cycle_ending_in_a_run_of_gsv_is_never_learnt_and_each_epoch_published_once():
    cycles = [[_at(i, rmc()), _at(i, GGA.format(q=1))] + [GSV.format(n=n, i=k) for k in range(1, n + 1)]
              for i, n in enumerate([3, 3, 2, 3, 2, 2, 3, 3])]
    published = _publish_like_the_reader(cycles)
    assert len(published) == len(cycles) and len({id(e) for e in published}) == len(cycles)


def test_a_cycle_that_starts_without_a_time_keeps_each_sentence_in_its_own_epoch():
    speeds = [f"{10 + i}.000" for i in range(12)]
    vtg = "GPVTG,90.0,T,,M,{kn},N,,K,A"
    cycles = [[vtg.format(kn=kn), _at(i, rmc(kn)), _at(i, GGA.format(q=1))] for i, kn in enumerate(speeds)]
    published = _publish_like_the_reader(cycles)
    for epoch in published:
        rmc_knots, vtg_knots = epoch.by_type["RMC"].spd_over_grnd, epoch.by_type["VTG"].spd_over_grnd_kts
        assert float(rmc_knots) == float(vtg_knots), "a VTG of another cycle in this epoch"
    assert len(published) == len(cycles)


def test_a_lost_last_sentence_unlearns_and_no_epoch_goes_out_without_it():
    lost = (5, 9, 13)  # three losses far apart are no three cycles in a row ending in VTG
    cycles = [[_at(i, rmc()), "GPVTG,90.0,T,,M,10.000,N,,K,A"] + ([] if i in lost else [_at(i, GGA.format(q=1))])
              for i in range(18)]
    published = _publish_like_the_reader(cycles)
    for i, epoch in zip(range(18), published):
        assert ("GGA" in epoch.by_type) == (i not in lost), i
    assert len(published) == 18
