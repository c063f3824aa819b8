"""The view model (pure): what a driver sees for snapshots, fixes and statuses."""

import msgspec
import pytest

from common import messages as m
from common.viewmodel import ViewModel, temp_labels
from harness.samples import UPLINK_FIX, UPLINK_SNAPSHOT, uplink_pack


def msg(topic, data):
    return m.Message(topic, "test", 0, 0.0, data)


def model(*items, at=100.0):
    vm = ViewModel()
    for topic, data in items:
        vm.update(msg(topic, data), at)
    return vm


def snapshot(*packs):
    return m.BmsSnapshot(pack_count=len(packs), packs=list(packs))


def quiet(pack, **changes):
    """The pack with no alarm at all, then ``changes``."""
    return msgspec.structs.replace(pack, **{"warnings": [], "protections": [], "faults": [], "cell_alarms": {},
                                            **changes})


def test_speed_in_big_digits_and_no_gps_in_words_when_unknown():
    assert model(("gps.fix", UPLINK_FIX)).view(100.5).speed.text == "42"
    for fix in (m.GpsFix(valid=False), m.GpsFix(valid=True, speed_km_h=None), m.GpsFix(valid=False, speed_km_h=30.0)):
        assert model(("gps.fix", fix)).view(100.5).speed.text == "NO GPS"
    assert ViewModel().view(0).speed.text == "NO GPS"
    standstill = model(("gps.fix", m.GpsFix(valid=True, speed_km_h=0.0))).view(100.5).speed
    assert standstill.text == "0" and not standstill.stale


def test_stale_values_are_greyed_with_their_age_never_shown_as_live():
    vm = model(("gps.fix", UPLINK_FIX), ("bms.snapshot", UPLINK_SNAPSHOT))
    fresh = vm.view(101.0)
    assert not fresh.soc.stale and fresh.soc.level != "stale"
    old = vm.view(112.0)
    assert old.speed.stale and old.speed.level == "stale"
    assert old.soc.stale and old.soc.level == "stale" and old.soc.full == "48 % (12s)" and old.soc.age == "12s"
    assert old.voltage.full.endswith("(12s)") and old.power_state == "unknown"


def test_the_stale_limit_follows_the_period_of_the_source():
    vm = ViewModel()
    for t in (0.0, 5.0, 10.0):  # a BMS polled every 5 s
        vm.update(msg("bms.snapshot", UPLINK_SNAPSHOT), t)
    assert not vm.view(10 + 12).soc.stale, "12 s is less than three periods of about 5 s"
    assert vm.view(10 + 20).soc.stale


@pytest.mark.parametrize(("soc", "level"), [(8.0, "alarm"), (22.0, "caution"), (75.0, "good")])
def test_soc_bar_coloured_by_level(soc, level):
    pack = quiet(uplink_pack(1), remaining_ah=soc, full_ah=100.0)
    view = model(("bms.snapshot", snapshot(pack))).view(100.2)
    assert view.soc.level == level and view.soc_fraction == pytest.approx(soc / 100)


def test_power_charging_and_discharging_are_clearly_different():
    charging = model(("bms.snapshot", snapshot(quiet(uplink_pack(1), power_w=2500.0, current_a=47.0)))).view(100.1)
    assert charging.power.text == "+2.5 kW" and charging.power_state == "charging" and charging.power.level == "charging"
    driving = model(("bms.snapshot", snapshot(quiet(uplink_pack(1), power_w=-6100.0)))).view(100.1)
    assert driving.power.text == "-6.1 kW" and driving.power_state == "discharging" and driving.power.level is None, "discharging is normal: orange means a protection"
    assert model(("bms.snapshot", snapshot(quiet(uplink_pack(1), power_w=0.4)))).view(100.1).power_state == "idle"


def test_multi_pack_vehicle_view():
    p1, p2 = uplink_pack(1), uplink_pack(2)
    view = model(("bms.snapshot", snapshot(p1, p2))).view(100.1)
    assert view.current.text == f"{p1.current_a + p2.current_a:+.1f} A"
    assert view.power.text == f"{(p1.power_w + p2.power_w) / 1000:+.1f} kW"
    assert view.voltage.text == f"{(p1.voltage_v + p2.voltage_v) / 2:.1f} V"
    assert (view.cell_min.full, view.cell_max.full) == (f"{p1.cell_min_mv} mV P1", f"{p2.cell_max_mv} mV P2")
    assert (view.cell_max.text, view.cell_max.note) == (f"{p2.cell_max_mv} mV", "P2")
    assert view.cell_delta.text == f"{p2.cell_max_mv - p1.cell_min_mv} mV"
    # The cell sensors (the field table's cell_max_temp), not the 30.1 °C MOSFET: labelled "Temp max".
    assert view.temp_max.full == "23.5 °C P1" and view.temp_min.full == "21.0 °C P1"
    assert [p.number for p in view.packs] == [1, 2]
    assert view.packs[1].summary.startswith("P2 48% ")


def test_an_offline_pack_is_left_out_of_the_totals_and_marked():
    offline = m.Pack(pack=2, online=False)
    view = model(("bms.snapshot", snapshot(quiet(uplink_pack(1)), offline))).view(100.1)
    assert view.current.text == "-12.3 A" and view.packs[1].summary == "P2 offline" and not view.packs[1].online


def test_unknown_battery_values_are_dashes():
    pack = m.Pack(pack=1, cells_mv=[3300, 3310], cell_min_mv=3300, cell_max_mv=3310)
    view = model(("bms.snapshot", snapshot(pack))).view(100.1)
    assert (view.soc.text, view.power.text, view.current.text, view.voltage.text) == ("--",) * 4
    assert view.soc_fraction is None and view.temp_max.text == "--" and view.cell_delta.text == "10 mV"
    assert view.banner.text == "alarm state unknown"


@pytest.mark.parametrize(("changes", "severity", "level", "words"), [
    ({"warnings": ["cell_high_voltage"]}, "WARNING", "caution", "cell high voltage"),
    ({"protections": ["discharge_overcurrent"]}, "PROTECTION", "warning", "discharge overcurrent"),
    ({"faults": ["ntc_fault"]}, "FAULT", "alarm", "ntc fault"),
    ({"faults": ["cell_fault"], "protections": ["short_circuit"], "warnings": ["low_power"]}, "FAULT", "alarm",
     "FAULT: cell fault  |  PROTECTION: short circuit  |  WARNING: low power"),
])
def test_alarm_banner_by_severity(changes, severity, level, words):
    pack = msgspec.structs.replace(quiet(uplink_pack(1)), **changes)
    banner = model(("bms.snapshot", snapshot(pack))).view(100.1).banner
    assert banner.text.startswith(severity) and words in banner.text and banner.level == level


def test_no_alarms_and_fully_charged_is_not_an_alarm():
    pack = quiet(uplink_pack(1), protections=["fully_charged"])
    banner = model(("bms.snapshot", snapshot(pack))).view(100.1).banner
    assert banner.text == "no alarms"


def test_a_new_alarm_flashes_the_banner_for_a_while():
    vm = model(("bms.snapshot", snapshot(quiet(uplink_pack(1)))), at=100)
    assert not vm.view(100.1).banner_flash
    vm.update(msg("bms.snapshot", snapshot(quiet(uplink_pack(1), faults=["ntc_fault"]))), 101)
    assert vm.view(101.5).banner_flash and not vm.view(104.5).banner_flash
    vm.update(msg("bms.snapshot", snapshot(quiet(uplink_pack(1), faults=["ntc_fault"]))), 105)
    assert not vm.view(105.1).banner_flash, "the same alarm again is not new"


def test_health_strip_states_ages_and_queue():
    vm = model(("bms.link", m.Link(state="up", port="x")), ("gps.link", m.GpsLink(state="down", port="y")),
               ("uplink.status", m.UplinkStatus(connected=False, server="s", queued=120, sent=0, dropped=0,
                                                error="connection refused")))
    bms, gps, uplink = vm.view(101.0).health
    assert (bms.state, bms.level) == ("up", "good") and bms.age_text == "never", "no good data yet"
    assert (gps.state, gps.level) == ("down", "alarm")
    assert (uplink.state, uplink.level) == ("offline", "alarm")
    assert vm.view(101.0).queued.text == "120 queued"
    later = vm.view(110.0)
    assert later.health[0].state == "up?" and later.health[0].level == "stale" and later.queued.stale
    assert ViewModel().view(0).health[0].state == "no data"


def test_detail_page_pack_values():
    view = model(("bms.snapshot", UPLINK_SNAPSHOT)).view(100.1)
    pack = view.packs[0]
    assert pack.cells_mv == uplink_pack(1).cells_mv and pack.balancing == [2]
    assert pack.temps[4] == ("MOS", "30.1 °C") and pack.temps[5] == ("ENV", "18.2 °C")
    lines = dict(pack.lines)
    assert lines["SOH"] == "98.2 %" and lines["Cycles"] == "41" and lines["FETs"] == "CHG on / DSG on"
    assert temp_labels(4) == ["T1", "T2", "T3", "T4"]


def test_trend_keeps_ten_minutes_of_speed_power_and_soc():
    vm = ViewModel()
    for t in range(0, 700, 1):
        vm.update(msg("gps.fix", UPLINK_FIX), float(t))
        vm.update(msg("bms.snapshot", UPLINK_SNAPSHOT), float(t))
        vm.view(float(t))
    trend = vm.view(700.0).trend
    xs, ys = trend["speed"]
    assert min(xs) >= -600 and max(xs) <= 0 and set(ys) == {42.3}
    assert len(trend["soc"][0]) >= 590 and trend["power"][1][-1] < 0


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_a_number_that_is_not_finite_is_shown_as_unknown_never_as_a_figure_or_a_full_bar(bad):
    # The bus contract refuses such numbers; the display does not rely on that alone.
    pack = msgspec.structs.replace(uplink_pack(1), remaining_ah=bad, current_a=bad, power_w=bad, voltage_v=bad,
                                   soc_pct=bad, temps_c=[bad, 20.0])
    v = model(("bms.snapshot", snapshot(pack)), ("gps.fix", m.GpsFix(valid=True, speed_km_h=bad))).view(100.5)
    for shown in (v.soc, v.power, v.current, v.voltage):
        assert shown.text == "--", shown
    assert v.speed.text == "NO GPS"
    assert v.soc_fraction is None and v.power_state == "unknown"
    assert all("nan" not in text.lower() and "inf" not in text.lower() for _, text in v.packs[0].lines + v.packs[0].temps)


def test_impossible_values_are_unknown_not_drawn():
    pack = msgspec.structs.replace(uplink_pack(1), remaining_ah=-5.0, voltage_v=-1.0, cell_min_mv=-3)
    v = model(("bms.snapshot", snapshot(pack)), ("gps.fix", m.GpsFix(valid=True, speed_km_h=-4.0))).view(100.5)
    assert (v.soc.text, v.voltage.text, v.speed.text) == ("--", "--", "NO GPS") and v.soc_fraction is None
    assert v.cell_min.text == "--"
    over = msgspec.structs.replace(uplink_pack(1), remaining_ah=300.0, full_ah=100.0)
    assert model(("bms.snapshot", snapshot(over))).view(100.5).soc.text == "--", "300 % is no state of charge"


def test_settings_lines_name_units_and_never_trip_on_odd_values():
    from common.messages import BmsConfig, Message, PackConfig
    from common.viewmodel import settings_lines
    config = BmsConfig(packs=[PackConfig(address=2, settings={
        "balancing": {"balancing_threshold_mv": 3400, "balancing_delta_mv": "x"},
        "mos_overtemp": {"reserved_1": 1, "mos_overtemp_alarm_c": 90.0}})], unsupported=["sleep"])
    lines = settings_lines(Message("bms.config", "bms_reader", 1, 0.0, config), 1)
    assert lines == ["(from the BMS at address 2)", "Balancing: threshold 3400 mV, delta -- mV",
                     "Mos overtemp: alarm 90.0 °C", "Not supported: sleep"]
    assert settings_lines(None, 1) == []


def test_the_worst_alarm_in_full_with_a_count_of_the_rest_and_all_by_priority():
    one = quiet(uplink_pack(1), warnings=["cell_high_voltage", "low_power"])
    two = quiet(uplink_pack(2), protections=["discharge_overcurrent"], faults=["ntc_fault"])
    view = model(("bms.snapshot", snapshot(one, two))).view(100.1)
    assert view.alarm.text == "FAULT: ntc fault P2  +3 more" and view.alarm.level == "alarm"
    assert view.alarms == [("fault", "P2 ntc fault"), ("protection", "P2 discharge overcurrent"),
                           ("warning", "P1 cell high voltage"), ("warning", "P1 low power")]
    single = model(("bms.snapshot", snapshot(quiet(uplink_pack(1), warnings=["low_power"])))).view(100.1)
    assert single.alarm.text == "WARNING: low power"


def test_a_lost_bms_says_its_alarms_are_unknown_not_that_there_are_none():
    vm = model(("bms.snapshot", snapshot(quiet(uplink_pack(1)))))
    assert vm.view(100.1).alarm.text == "no alarms" and vm.view(100.1).banner.text == "no alarms"
    lost = vm.view(130.0)
    assert lost.alarm.text == lost.banner.text == "BMS lost: alarms unknown" and lost.alarm.stale


def test_a_value_the_bms_flags_as_outside_its_limits_takes_the_flags_level():
    pack = quiet(uplink_pack(1), warnings=["cell_high_voltage", "charge_high_temp"], protections=["cell_undervoltage"])
    view = model(("bms.snapshot", snapshot(pack))).view(100.1)
    assert (view.cell_max.level, view.temp_max.level, view.cell_min.level) == ("caution", "caution", "warning")
    assert view.voltage.level is None and view.temp_min.level is None
    over = quiet(uplink_pack(1), warnings=["discharge_current"], protections=["discharge_overcurrent"])
    view = model(("bms.snapshot", snapshot(over))).view(100.1)
    assert view.current.level == view.power.level == "warning", "the worst of the flags"


def test_the_health_ages_are_the_time_since_good_data_not_since_the_last_message():
    vm = ViewModel()
    for t in (100.0, 101.0, 102.0, 107.0):  # the GPS lost at 100 s; its link says so every second
        vm.update(m.Message("gps.link", "gps_reader", 0, 1000.0 + t, m.GpsLink(state="down", port="y",
                                                                                 last_ok_ts=1100.0)), t)
    gps = vm.view(107.5).health[1]
    assert (gps.state, gps.age_text) == ("down", "8s"), "7.5 s since the last good sentence, not <2s"


def test_an_uplink_connected_but_acknowledging_nothing_is_stalled():
    def status(t, queued, last_ack):
        return m.Message("uplink.status", "tb_uplink", 0, t, m.UplinkStatus(
            connected=True, server="s", queued=queued, sent=0, dropped=0, last_ack_ts=last_ack))
    vm = ViewModel()
    vm.update(status(1000.0, 3, 995.0), 100.0)
    assert vm.view(100.5).health[2].state == "connected"
    vm.update(status(1045.0, 90, 995.0), 145.0)
    uplink = vm.view(145.2).health[2]
    assert (uplink.state, uplink.level, uplink.age_text) == ("stalled", "warning", "50s")
    vm.update(status(1046.0, 0, 995.0), 146.0)
    assert vm.view(146.2).health[2].state == "connected", "nothing waiting: nothing to acknowledge"
    never = ViewModel()  # connected, records waiting, never an acknowledgement: stalled after a while
    never.update(status(1000.0, 5, None), 100.0)
    assert never.view(100.5).health[2].state == "connected"
    never.update(status(1031.0, 60, None), 131.0)
    assert never.view(131.5).health[2].state == "stalled"


def test_the_detail_pages_alarm_lines_group_the_packs_that_share_an_alarm():
    packs = [quiet(uplink_pack(n), faults=["ntc_fault"], warnings=["low_power"] if n in (2, 3, 7) else [])
             for n in range(1, 17)]
    view = model(("bms.snapshot", snapshot(*packs))).view(100.1)
    assert view.alarm_groups == [("fault", "ntc fault P1-16"), ("warning", "low power P2-3, P7")]
    assert len(view.alarms) == 19 and view.alarm.text == "FAULT: ntc fault P1-16  +1 more"
