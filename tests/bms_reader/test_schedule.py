"""The reader's pure cores: the schedule of requests and the clock decision, fed event sequences."""

import datetime as dt

import pytest

from common import pace
from common.clock import Clock
from common.pace import commands
from common.pace.__main__ import decode_line
from services.bms_reader.clocksync import MIN_INTERVAL_S, ClockSync
from services.bms_reader.schedule import BACKOFF_FIRST_S, BACKOFF_MAX_S, RETRY_S, Schedule


def names(asks) -> list[str]:
    return [a.command.name for a in asks]


def schedule(addressing="master", addresses=(1,), capacity_every=10, info_every_s=600, config_every_s=3600):
    return Schedule(addressing, list(addresses), capacity_every, info_every_s, config_every_s)


def test_auto_tries_each_family_in_turn_until_a_reply_settles_one():
    s = schedule()
    assert s.family is None and s.asking == "25"
    first = s.plan(0.0)
    s.silent(first[0], 0.0)  # no answer to the v2.5 analog request
    assert s.skip(first[1])  # that address is silent for the rest of the cycle
    second = s.plan(1.0)
    assert names(second) == ["eg4_analog", "eg4_status"]
    assert {(a.command.ver, a.command.cid1) for a in second} == {(0x20, 0x4A)}
    s.refused(second[0], 0x02)  # a checksum error: the BMS took the frame for its own
    assert names(s.plan(2.0)) == ["eg4_analog", "eg4_status"]
    s.refused(second[0], 0x03)  # an LCHKSUM error: the frame reached the BMS as its own
    assert names(s.plan(2.0)) == ["eg4_analog", "eg4_status"]
    s.refused(second[0], 0xE1)  # CID1 error: not EG4
    assert names(s.plan(2.0)) == ["seplos_analog"]
    third = s.plan(3.0)
    s.silent(third[0], 3.0)
    assert names(s.plan(4.0))[:2] == ["analog", "status"]  # round again


def test_a_reply_the_candidate_cannot_decode_moves_auto_on():
    s = schedule()
    s.undecoded(s.plan(0.0)[0])
    assert s.asking == "20-eg4"
    s.settle("20-eg4")
    s.undecoded(s.plan(1.0)[0])
    assert s.asking == "20-eg4"  # a settled family counts it and stays


def test_a_settled_family_is_kept_and_the_other_families_asks_are_skipped():
    s = schedule()
    planned = s.plan(0.0)
    s.answered(planned[0])
    s.settle("20-eg4")
    assert all(s.skip(a) for a in planned[1:])  # the v2.5 status, capacities, info, settings
    later = s.plan(1.0)
    assert names(later) == ["eg4_analog", "eg4_status"]
    s.silent(later[0], 1.0)
    assert names(s.plan(2.0)) == ["eg4_analog", "eg4_status"]  # a lost reply does not unsettle it
    assert names(s.plan(700.0)) == ["eg4_analog", "eg4_status"]  # no v2.5 info or settings commands


def test_a_configured_family_is_asked_from_the_start():
    s = Schedule("master", [1], 10, 600, 3600, "20-seplos")
    assert s.family == "20-seplos" and names(s.plan(0.0)) == ["seplos_analog"]


def test_the_first_cycle_asks_every_group_and_the_next_only_the_cycle_group():
    s = schedule()
    first = names(s.plan(0.0))
    assert first[:3] == ["analog", "status", "capacities"]
    assert set(first) == {c.name for c in commands.COMMANDS.values() if c.family == "25"}
    assert names(s.plan(1.0)) == ["analog", "status"]
    assert "software_version" in names(s.plan(601.0)) and "datetime" not in names(s.plan(602.0))
    assert "datetime" in names(s.plan(3601.0))


def test_master_addressing_asks_the_whole_stack_with_ff():
    asks = schedule(addresses=(1,)).plan(0.0)
    assert asks[0].request == pace.encode_frame(0x42, bytes([pace.ALL_PACKS]), adr=1)


def test_per_address_asks_each_address_for_itself():
    asks = [a for a in schedule("per_address", (1, 2, 3)).plan(0.0) if a.command.group == "cycle"]
    assert [(a.adr, a.pack, a.command.name) for a in asks] == [
        (adr, adr, name) for adr in (1, 2, 3) for name in ("analog", "status")]
    assert asks[2].request == pace.encode_frame(0x42, bytes([2]), adr=2)


def test_a_silent_address_costs_one_timeout_then_backs_off_doubling():
    s = schedule("per_address", (1, 2))
    now, gaps, last_asked = 0.0, [], None
    for _ in range(400):
        asks = s.plan(now)
        for ask in asks:
            if s.skip(ask):
                continue
            if ask.adr == 2:
                s.silent(ask, now)
            else:
                s.answered(ask)
        asked_2 = [a for a in asks if a.adr == 2]
        if asked_2:
            # Only the first request of the silent address goes out; the rest are skipped.
            assert all(s.skip(a) for a in asked_2[1:])
            if last_asked is not None:
                gaps.append(now - last_asked)
            last_asked = now
        assert any(a.adr == 1 for a in asks), "the live address is asked every cycle"
        now += 1.0
    assert gaps[0] >= BACKOFF_FIRST_S * 0.8 and max(gaps) <= BACKOFF_MAX_S * 1.2 + 1
    assert gaps[-1] > gaps[0] * 4, gaps


def test_rtn_04_on_a_setting_marks_it_unsupported_at_once():
    s = schedule()
    for ask in s.plan(0.0):
        if ask.command.name == "sleep":
            s.refused(ask, 0x04)
        else:
            s.answered(ask)
    assert s.unsupported == {"sleep"}
    assert "sleep" not in names(s.plan(3601.0)) and "balancing" in names(s.plan(7202.0))


def test_silence_marks_a_setting_unsupported_only_the_second_time_running():
    s = schedule(config_every_s=10)
    for now in (0.0, 11.0):
        assert s.unsupported == set()
        for ask in s.plan(now):
            (s.silent(ask, now) if ask.command.name == "sleep" else s.answered(ask))
    assert s.unsupported == {"sleep"}


def test_a_lost_reply_between_two_answers_does_not_mark_anything():
    s = schedule(config_every_s=10)
    for now, silent in ((0.0, True), (11.0, False), (22.0, True)):
        for ask in s.plan(now):
            (s.silent(ask, now) if silent and ask.command.name == "sleep" else s.answered(ask))
    assert s.unsupported == set()


def test_a_failed_settings_read_is_retried_soon_not_after_an_hour():
    s = schedule()
    asks = s.plan(0.0)
    for ask in asks:
        s.failed(ask, 0.0) if ask.command.name == "balancing" else s.answered(ask)
    assert "balancing" not in names(s.plan(RETRY_S - 1))
    assert "balancing" in names(s.plan(RETRY_S + 1))


def test_rtn_04_on_analog_data_is_a_fault_not_an_unsupported_command():
    s = schedule()
    for ask in s.plan(0.0):
        s.refused(ask, 0x04)
    assert "analog" not in s.unsupported and "status" not in s.unsupported


# --- One table entry is all a new read command takes --------------------------------------------


@pytest.fixture
def hypothetical():
    from common.pace.layout import Field, Layout
    layout = Layout(Field("charge_limit_start_ma"), Field("enabled", 1))
    command = commands.register(commands.ReadCommand(
        "charge_limiter", 0xED, lambda f, *_: layout.decode(f.check_rtn().info), layout.encode, dict,
        group="config", reply_bytes=lambda info: len(info) == layout.size,
        sample={"charge_limit_start_ma": 100, "enabled": 1}))
    yield command
    commands.unregister("charge_limiter")


def test_a_new_read_command_is_scheduled_simulated_and_decoded_from_one_entry(hypothetical):
    import argparse

    from sim.pace_bms import PaceDevice, _arguments
    ask = next(a for a in schedule().plan(0.0) if a.command is hypothetical)
    request = pace.parse_frame(ask.request)
    assert request.cid2 == 0xED and request.adr == 1
    device = PaceDevice(_arguments().parse_args(["--tcp", "0"]), port=None)
    assert isinstance(device.args, argparse.Namespace)
    reply = device._reply(request)
    assert pace.parse_frame(reply).rtn == 0
    decoded = decode_line(reply.decode().strip(), 0xED, None, 0)
    assert decoded["ok"] and decoded["name"] == "charge_limiter"
    assert {k: decoded[k] for k in hypothetical.sample} == hypothetical.sample


# --- The clock decision ---------------------------------------------------------------------------

NOW = 1_800_000_000.0


def sync(synced=True, **kw) -> ClockSync:
    return ClockSync(Clock(synced=lambda: synced), kw.get("enabled", True), 30.0, 1.0)


def bms_time(offset_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(NOW + offset_s)


def test_the_clock_is_set_when_off_stopped_and_idle():
    decision = sync().decide(bms_time(3600), NOW, [0.2, -0.3], mono=100.0)
    assert decision.set_to == dt.datetime.fromtimestamp(NOW) and decision.drift_s == 3600


@pytest.mark.parametrize("currents, why", [([25.0], "current"), ([0.0, -12.0], "current"), ([None], "current"),
                                           ([], "current")])
def test_never_while_current_flows_or_is_unknown(currents, why):
    decision = sync().decide(bms_time(3600), NOW, currents, mono=100.0)
    assert decision.set_to is None and why in decision.note and decision.drift_s == 3600


def test_never_while_the_car_moves_and_a_stale_speed_is_unknown():
    s = sync()
    s.observe_speed(35.0, mono=100.0)
    assert s.decide(bms_time(3600), NOW, [0.0], mono=101.0).note == "the car is moving"
    assert s.decide(bms_time(3600), NOW, [0.0], mono=110.0).set_to is not None


def test_at_most_once_a_day_and_not_within_the_drift_limit():
    s = sync()
    assert s.decide(bms_time(29), NOW, [0.0], mono=1.0).set_to is None
    assert s.decide(bms_time(-3600), NOW, [0.0], mono=1.0).set_to is not None
    s.was_set(1.0)
    assert s.decide(bms_time(-3600), NOW, [0.0], mono=MIN_INTERVAL_S).set_to is None
    assert s.decide(bms_time(-3600), NOW, [0.0], mono=MIN_INTERVAL_S + 2).set_to is not None


def test_no_trusted_time_no_write_and_no_drift():
    decision = sync(synced=False).decide(bms_time(3600), NOW, [0.0], mono=1.0)
    assert decision.set_to is None and decision.drift_s is None and "no trusted time" in decision.note


def test_gps_time_is_trusted_once_fixes_agree():
    from common.messages import GpsFix, Message
    s = sync(synced=False)
    for _ in range(3):
        s.clock.observe_fix(Message("gps.fix", "gps_reader", 1, NOW, GpsFix(valid=True, gps_utc=NOW + 5)))
    decision = s.decide(bms_time(3600), NOW, [0.0], mono=1.0)
    assert decision.drift_s == 3595 and decision.set_to == dt.datetime.fromtimestamp(NOW + 5)


def test_disabled_sync_reports_the_drift_and_writes_nothing():
    decision = sync(enabled=False).decide(bms_time(3600), NOW, [0.0], mono=1.0)
    assert decision.set_to is None and decision.drift_s == 3600 and decision.note == "bms_clock_sync is off"
