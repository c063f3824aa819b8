"""Records from bus values (pure): keys, units, padding, unknown and stale values, the clock."""

import msgspec
import pytest

from common import clock as common_clock
from common import fields
from common.clock import Clock
from common.messages import GpsFix, Message
from harness.samples import UPLINK_FIX, UPLINK_SNAPSHOT, uplink_pack
from services.tb_uplink.records import RecordMaker, build_record

NOW = 1_800_000_000.0  # 2027-01-15, after the software's date floor


def msg(topic, data, ts=NOW - 0.5):
    return Message(topic, "test", 0, ts, data)


def record(snapshot=UPLINK_SNAPSHOT, fix=UPLINK_FIX, pad_cells=0, pad_packs=0, full=True):
    snap = msg("bms.snapshot", snapshot, NOW - 0.5) if snapshot else None
    gps = msg("gps.fix", fix, NOW - 0.3) if fix else None
    return build_record(snap, gps, pad_cells, pad_packs, full, True)


def test_pack_one_carries_every_original_key_in_the_original_units():
    ts, values = record()
    assert ts == NOW - 0.3, "the newest observation"
    assert set(fields.ORIGINAL_KEYS) <= set(values)
    p = uplink_pack(1)
    assert values["cell_max_volt"] == p.cell_max_mv and values["cell_min_volt"] == p.cell_min_mv  # mV
    assert values["i_remaining_capacity"] == 47500  # mAh, as the original (10 mAh units x 10)
    assert values["v_pack"] == round(p.voltage_v, 2) and values["i_pack"] == -12.34 and values["soc"] == 48.4
    assert values["cell_max_temp"] == 23.5 and values["cell_min_temp"] == 21.0  # the four cell sensors
    assert values["temp_5"] == 30.1 and values["temp_6"] == 18.2
    assert (values["charge_fet"], values["discharge_fet"], values["pack_indicate"], values["heart"]) == (1, 1, 1, 0)
    assert values["balancing_1"] == "00000010" and values["balancing_2"] == "00000000"
    assert values["warning_string"] == "cell 16 high, warning: cell_high_voltage"
    assert values["analog_data_packs"] == 2 and values["warning_info_packs"] == 2 and values["total_cells"] == 16
    assert values["speed_km_h"] == 42.3 and values["alive"] is True


def test_new_keys_cells_temperatures_and_later_packs():
    _, values = record()
    assert values["v_cell_1"] == 3310 and values["v_cell_16"] == 3325 and values["temp_1"] == 21.0
    assert values["soh"] == 98.2 and values["i_design_capacity"] == 100000 and values["cell_max_diff_volt"] == 15
    assert values["pack_2_v_cell_1"] == 3320 and values["pack_2_i_pack"] == -24.68 and values["pack_2_cycles"] == 42
    assert values["latitude"] == 47.3769 and values["gps_sats"] == 8
    assert not any(k.startswith("pack_1_") for k in values)


def test_zero_padding_of_cell_and_pack_numbers():
    _, values = record(pad_cells=2, pad_packs=2)
    assert "v_cell_01" in values and "v_cell_16" in values and "v_cell_1" not in values
    assert "pack_02_v_cell_01" in values and "pack_2_soc" not in values


def test_original_key_set_only():
    _, values = record(full=False)
    assert set(values) == set(fields.ORIGINAL_KEYS) | {f"pack_2_{k}" for k in fields.ORIGINAL_KEYS
                                                        if k not in ("alive", "analog_data_packs",
                                                                     "warning_info_packs", "speed_km_h")}


def test_unknown_values_are_left_out_never_zero():
    pack = msgspec.structs.replace(uplink_pack(1), current_a=None, soc_pct=None, warnings=None, indicators=None,
                                   charge_fet=None, status_raw=None)
    snap = msgspec.structs.replace(UPLINK_SNAPSHOT, packs=[pack])
    _, values = record(snapshot=snap, fix=GpsFix(valid=False, speed_km_h=None))
    for key in ("i_pack", "soc", "warning_string", "heart", "charge_fet", "balancing_1", "speed_km_h", "latitude",
                "warning_info_packs"):
        assert key not in values
    assert values["v_pack"] > 0


def test_a_fix_that_is_not_valid_gives_no_speed_even_if_one_was_sent():
    _, values = record(fix=GpsFix(valid=False, speed_km_h=12.0, lat=1.0, lon=2.0))
    assert "speed_km_h" not in values and "latitude" not in values


class FakeTime:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def maker(mono):
    return RecordMaker(15.0, 0, 0, True, monotonic=mono)


def test_stale_values_are_left_out_and_nothing_fresh_means_no_record():
    mono = FakeTime()
    m = maker(mono)
    assert m.make() is None, "nothing arrived yet"
    m.take(msg("bms.snapshot", UPLINK_SNAPSHOT))
    mono.t += 10
    m.take(msg("gps.fix", UPLINK_FIX))
    mono.t += 10  # the snapshot arrived 20 s ago, the fix 10 s ago
    _, values = m.make()
    assert "v_pack" not in values and values["speed_km_h"] == 42.3
    m.take(msg("gps.fix", UPLINK_FIX))
    mono.t += 60
    assert m.make() is None, "what arrived is stale by now"
    assert record(snapshot=None, fix=None) is None


def test_a_record_only_when_something_arrived_since_the_last_and_alive_toggles():
    mono = FakeTime()
    m = maker(mono)
    m.take(msg("gps.fix", UPLINK_FIX))
    first = m.make()
    assert first is not None and first[1]["alive"] is True
    assert m.make() is None, "the same observation again would overwrite the record at the same ts"
    mono.t += 1
    m.take(msg("gps.fix", UPLINK_FIX, ts=NOW + 0.5))
    assert m.make()[1]["alive"] is False


def test_a_backward_step_of_the_wall_clock_keeps_making_records():
    # NTP or a GPS-set clock moves the time back an hour: the messages' own stamps go back too.
    mono = FakeTime()
    m = maker(mono)
    stamps = [NOW, NOW + 1, NOW - 3600, NOW - 3599, NOW - 3598]
    for ts in stamps:
        mono.t += 1
        m.take(msg("gps.fix", UPLINK_FIX, ts=ts))
        m.take(msg("bms.snapshot", UPLINK_SNAPSHOT, ts=ts))
        made = m.make()
        assert made is not None and made[0] == ts and "v_pack" in made[1]


def test_an_offline_pack_is_marked_and_has_no_values():
    offline = msgspec.structs.replace(UPLINK_SNAPSHOT, packs=[uplink_pack(1), uplink_pack(2).__class__(pack=2, online=False)])
    _, values = record(snapshot=offline)
    assert values["pack_2_pack_online"] == 0 and "pack_2_v_pack" not in values and values["pack_online"] == 1


@pytest.mark.parametrize(("synced", "gps_utc", "expected", "source"), [
    (True, NOW + 0.4, NOW, "system"),            # synced and GPS agrees within 2 s
    (True, NOW + 3600, NOW, "system"),           # synced: GPS never moves the records away from NTP
    (False, NOW + 0.4, NOW + 0.9, "gps"),        # before NTP sync: GPS UTC
    (False, None, NOW, "system-unsynced"),       # no sync, no fix: the system clock, flagged
])
def test_clock_source(synced, gps_utc, expected, source):
    mono = FakeTime()
    clock = Clock(synced=lambda: synced, monotonic=mono)
    if gps_utc is not None:
        for _ in range(3):
            clock.observe_fix(msg("gps.fix", GpsFix(valid=True, gps_utc=gps_utc), ts=NOW - 0.5))
    assert clock.stamp(NOW) == pytest.approx(expected)
    assert clock.source == source


def test_an_old_gps_offset_is_not_used():
    mono = FakeTime()
    clock = Clock(synced=lambda: False, monotonic=mono)
    for _ in range(3):
        clock.observe_fix(msg("gps.fix", GpsFix(valid=True, gps_utc=NOW + 100), ts=NOW))
    mono.t += 31
    assert clock.stamp(NOW) == NOW and clock.source == "system-unsynced"


def test_gps_time_is_used_only_when_fixes_agree():
    clock = Clock(synced=lambda: False, monotonic=FakeTime())
    for utc in (NOW, NOW + 86400 * 7 * 1024, NOW):  # one fix with a GPS week-rollover date
        clock.observe_fix(msg("gps.fix", GpsFix(valid=True, gps_utc=utc), ts=NOW))
    assert clock.stamp(NOW) == NOW and clock.source == "system-unsynced"
    for _ in range(3):
        clock.observe_fix(msg("gps.fix", GpsFix(valid=True, gps_utc=NOW + 5), ts=NOW))
    assert clock.stamp(NOW) == NOW + 5 and clock.source == "gps"


def test_the_clock_looks_libc_up_once():
    common_clock._adjtimex.cache_clear()
    common_clock.ntp_synced()
    common_clock.ntp_synced()
    assert common_clock._adjtimex.cache_info().misses == 1


def test_a_boot_clock_is_never_trusted():
    clock = Clock(synced=lambda: True, monotonic=FakeTime())
    assert clock.stamp(1000.0) == 1000.0 and clock.source == "system-unsynced"
    assert "before the software's date floor" in clock.reason


ROLLED_BACK = NOW - 86400 * 7 * 1024  # the same instant as a receiver with the rollover bug reports it


@pytest.mark.parametrize("synced", [True, False])
def test_gps_time_before_the_floor_never_stamps_a_record(synced):
    clock = Clock(synced=lambda: synced, monotonic=FakeTime())
    for _ in range(3):
        clock.observe_fix(msg("gps.fix", GpsFix(valid=True, gps_utc=ROLLED_BACK), ts=NOW))
    assert clock.stamp(NOW) == NOW
    assert clock.source == ("system" if synced else "system-unsynced")
    assert clock.reason == ("the system clock is NTP-synchronised" if synced
                            else "GPS time is before the software's date floor (a week-number rollover?)")


def test_gps_time_is_used_when_the_system_clock_is_before_the_floor():
    clock = Clock(synced=lambda: True, monotonic=FakeTime())
    boot = 1_577_836_800.0  # a Pi without a real-time clock, before NTP: 2020
    for _ in range(3):
        clock.observe_fix(msg("gps.fix", GpsFix(valid=True, gps_utc=NOW), ts=boot))
    assert clock.stamp(boot + 1) == NOW + 1 and clock.source == "gps"


def test_every_key_is_documented():
    from harness.proc import REPO
    text = (REPO / "docs/thingsboard.md").read_text()
    for key in [f.key for f in fields.PACK_FIELDS + fields.GPS_FIELDS] + list(fields.ORIGINAL_KEYS):
        assert f"`{key}`" in text, key
