"""The data-point budget planner (pure): key groups, plans, cadence, thinning, backlog, and a
simulated drive checked against the hourly limit and the forecast."""

import bisect
import dataclasses
import itertools
import math
import random

import msgspec
import pytest

from common import fields
from common.messages import Message
from harness.samples import UPLINK_FIX, UPLINK_SNAPSHOT, uplink_pack
from services.tb_uplink import budget, limits
from services.tb_uplink.budget import CELLS, CORE, GROUP_NAMES, PLANS, SLOW, STATUS, TEMPS, Thinner
from services.tb_uplink.records import build_record

NOW_S = 1_800_000_000.0
INTERVAL_S = 5.0
HOUR_MS = 3_600_000
RECORD_EXTRA_KEYS = ("alive", "analog_data_packs", "warning_info_packs")  # records.py adds them


def full_record(packs: int, pad_cells: int = 0, pad_packs: int = 0, full: bool = True) -> dict:
    """The values of a realistic record: ``packs`` packs of 16 cells and 6 temperatures, and a GPS fix."""
    snapshot = msgspec.structs.replace(UPLINK_SNAPSHOT, pack_count=packs,
                                       packs=[uplink_pack(n) for n in range(1, packs + 1)])
    _, values = build_record(Message("bms.snapshot", "test", 0, NOW_S, snapshot),
                             Message("gps.fix", "test", 0, NOW_S, UPLINK_FIX), pad_cells, pad_packs, full, True)
    return values


def cloud_cadence(packs: int, **kw) -> budget.Cadence:
    return budget.plan_cadence(PLANS["cloud"], budget.count_points(full_record(packs)), INTERVAL_S, **kw)


def drive(thinner: Thinner, values: dict, hours: float = 3.0, jitter_s: float = 0.0, stream: str = "live",
          start_ms: int = int(NOW_S * 1000)) -> list[tuple[int, dict]]:
    """(ts_ms, thinned values) of every record of a drive, one every INTERVAL_S (± jitter_s)."""
    rng = random.Random(7)
    out = []
    for i in range(round(hours * 3600 / INTERVAL_S)):
        ts_ms = start_ms + round((i * INTERVAL_S + rng.uniform(-jitter_s, jitter_s)) * 1000)
        out.append((ts_ms, thinner.thin(ts_ms, values, stream)))
    return out


def worst_hour_points(sent: list[tuple[int, dict]]) -> int:
    """The most points in any half-open hour [t, t + 1 h) of the drive (the worst starts at a record)."""
    times = [ts for ts, _ in sent]
    prefix = [0, *itertools.accumulate(len(v) for _, v in sent)]
    return max(prefix[bisect.bisect_left(times, t + HOUR_MS)] - prefix[i] for i, t in enumerate(times))


def sends_of(sent: list[tuple[int, dict]], group: str) -> list[int]:
    return [ts for ts, values in sent if any(budget.group_of(k) == group for k in values)]


# --- key groups --------------------------------------------------------------------------------

def possible_keys(pack_fields=fields.PACK_FIELDS, gps_fields=fields.GPS_FIELDS) -> list[str]:
    """Every key a record can hold: pack 1 bare, later packs prefixed (padded or not), numbered
    cells and temperatures, GPS and the record's own keys."""
    pack_keys = [f.key for f in pack_fields]
    pack_keys += [f"{base}_{n}" for base in (fields.CELL_VOLT.key, fields.TEMP.key) for n in ("1", "01", "16", "024")]
    prefixed = [f"pack_{n}_{k}" for n in ("2", "02", "15") for k in pack_keys]
    return pack_keys + prefixed + [f.key for f in gps_fields + fields.TRIP_FIELDS] + list(RECORD_EXTRA_KEYS)


def ungrouped(keys) -> list[str]:
    return [k for k in keys if budget.group_of(k) not in GROUP_NAMES]


def test_every_key_a_record_can_hold_has_a_group():
    assert ungrouped(possible_keys()) == []


def test_a_new_field_without_a_group_is_caught():
    new = fields.Field("pack_heater_on", "Heater", "", 0, lambda p: None)
    assert ungrouped(possible_keys(fields.PACK_FIELDS + (new,))) == ["pack_heater_on", "pack_2_pack_heater_on",
                                                                     "pack_02_pack_heater_on", "pack_15_pack_heater_on"]
    gps = fields.Field("gps_hdop", "HDOP", "", 1, lambda f: None)
    assert ungrouped(possible_keys(gps_fields=fields.GPS_FIELDS + (gps,))) == ["gps_hdop"]


def test_the_table_is_exactly_the_field_table_and_the_record_keys():
    assert set(budget.GROUP_BY_KEY) == {f.key for f in fields.PACK_FIELDS + fields.GPS_FIELDS + fields.TRIP_FIELDS} \
        | set(RECORD_EXTRA_KEYS)
    assert set(budget.GROUP_BY_KEY.values()) | set(budget.NUMBERED_GROUP.values()) == set(GROUP_NAMES)


@pytest.mark.parametrize("packs,pad", [(1, 0), (2, 0), (4, 2), (12, 2)])
def test_every_key_of_real_records_has_a_group(packs, pad):
    for full in (True, False):
        assert ungrouped(full_record(packs, pad, pad, full)) == []


def test_prefixes_and_numbers_take_the_group_of_the_pack_one_key():
    assert [budget.group_of(k) for k in ("soc", "pack_2_soc", "pack_02_soc", "pack_online", "pack_3_pack_online",
                                         "v_cell_1", "v_cell_01", "pack_4_v_cell_16", "temp_6", "pack_02_temp_01",
                                         "pack_2_cell_max_temp", "warning_string", "alive")] == [
        CORE, CORE, CORE, SLOW, SLOW, CELLS, CELLS, CELLS, TEMPS, TEMPS, TEMPS, STATUS, CORE]
    # GPS and record-level keys are never prefixed; keys nobody makes have no group.
    for key in ("pack_2_speed_km_h", "pack_2_alive", "v_cell", "v_cell_x", "pack_2_", "pack_x_soc", "bogus"):
        assert budget.group_of(key) is None, key


def test_count_points_of_one_and_four_packs():
    one = budget.count_points(full_record(1))
    assert one == {CORE: 10, STATUS: 7, TEMPS: 8, CELLS: 16, SLOW: 20}
    four = budget.count_points(full_record(4))
    assert four == {CORE: 4 + 4 * 6, STATUS: 4 * 7, TEMPS: 4 * 8, CELLS: 4 * 16, SLOW: 5 + 4 * 15}
    assert sum(four.values()) == len(full_record(4)) == 217
    assert budget.count_points({"not_a_key": 1, "soc": 2}) == {CORE: 2, STATUS: 0, TEMPS: 0, CELLS: 0, SLOW: 0}


# --- plans -------------------------------------------------------------------------------------

def test_plans():
    assert PLANS["ce"] == budget.Plan(None, None, None, "ce")
    cloud = PLANS["cloud"]
    assert (cloud.points_per_hour, cloud.points_per_month, cloud.messages_per_month, cloud.messages_per_hour) == (
        15_000, 1_000_000, 500_000, 7_000)
    monthly = {name: (PLANS[name].points_per_month, PLANS[name].messages_per_month)
               for name in ("prototype", "pilot", "startup", "business")}
    assert monthly == {"prototype": (10**7, 5 * 10**6), "pilot": (10**8, 5 * 10**7), "startup": (5 * 10**8, 25 * 10**7),
                       "business": (10**9, 5 * 10**8)}
    assert abs(budget.HOURS_PER_MONTH - 730.5) < 0.1


def test_plan_from_rate_limits_takes_the_tightest_window():
    plan = budget.plan_from_limits({"telemetryDataPoints": "100:1,2000:60,40000:7200", "messages": "10:1"})
    assert (plan.points_per_hour, plan.messages_per_hour, plan.points_per_month) == (20_000, 36_000, None)
    assert budget.plan_from_limits(None) == budget.Plan(None, None, None)
    with pytest.raises(limits.LimitsError):
        budget.plan_from_limits({"telemetryDataPoints": "lots"})
    with pytest.raises(ValueError):
        budget.Plan(0, None, None)


# --- the cadence -------------------------------------------------------------------------------

def test_cloud_free_one_pack_keeps_core_every_record():
    cadence = cloud_cadence(1)
    assert cadence.period_s == {CORE: 5, STATUS: 10, TEMPS: 30, CELLS: 60, SLOW: 300}
    assert not cadence.core_stretched and cadence.within_budget
    assert cadence.forecast_points_per_hour == 10 * 720 + 7 * 360 + 8 * 120 + 16 * 60 + 20 * 12 == 11_880
    assert cadence.forecast_points_per_hour <= 0.8 * 15_000 == cadence.budget_points_per_hour
    assert cadence.messages_per_hour == 720
    assert cadence.monthly_budget_lasts_h == pytest.approx(1_000_000 / 11_880)
    assert cadence.days_until_exhausted == pytest.approx(1_000_000 / 11_880 / 60 * 30.44)
    assert cadence.describe() == (
        "cloud: core every 5 s, status 10 s, temps 30 s, cells 1 min, slow 5 min: 11,880 points/h of 15,000 "
        "(budget 12,000), 720 messages/h; 1 M points and 0.5 M messages/month last 84 h of driving "
        "(43 days at 60 h/month)")


def test_cloud_free_four_packs_stretch_core_and_say_so():
    cadence = cloud_cadence(4)
    assert cadence.period_s == {CORE: 15, STATUS: 30, TEMPS: 120, CELLS: 300, SLOW: 1800}
    assert cadence.core_stretched and cadence.within_budget
    assert cadence.forecast_points_per_hour <= 12_000 < 28 * 720
    assert cadence.messages_per_hour == 240
    assert "core every 15 s (stretched: core every record would be 20,160 points/h alone)" in cadence.describe()


@pytest.mark.parametrize("packs", [1, 2, 3, 4, 6, 8, 16])
@pytest.mark.parametrize("interval_s", [0.5, 1.0, 2.0, 5.0, 7.0, 10.0, 30.0])
def test_every_cadence_keeps_the_rules(packs, interval_s):
    counts = budget.count_points(full_record(packs))
    cadence = budget.plan_cadence(PLANS["cloud"], counts, interval_s)
    periods = [cadence.period_s[g] for g in GROUP_NAMES]
    steps = [round(p / interval_s) for p in periods]
    assert all(s in budget.LADDER for s in steps) and [p / interval_s for p in periods] == pytest.approx(steps)
    assert all(s % steps[0] == 0 for s in steps), "every group rides on core's records"
    assert steps == sorted(steps), "a lower priority never goes more often"
    assert all(p >= g.finest_period_s or s == budget.LADDER[-1] for g, p, s in zip(budget.GROUPS, periods, steps))
    assert cadence.within_budget
    assert cadence.forecast_points_per_hour <= 0.8 * 15_000
    assert cadence.messages_per_hour <= 0.8 * 7_000
    assert cadence.forecast_points_per_hour == sum(budget.per_hour(counts[g], cadence.period_s[g]) for g in GROUP_NAMES)


def test_core_goes_every_record_on_a_plan_that_allows_it():
    cadence = budget.plan_cadence(budget.Plan(100_000, None, None), budget.count_points(full_record(1)), INTERVAL_S)
    assert cadence.period_s[CORE] == cadence.period_s[STATUS] == 5, "both fit every record"
    assert cadence.period_s[TEMPS] == cadence.period_s[CELLS] == 30 and cadence.period_s[SLOW] == 300, "no faster than useful"
    assert cadence.monthly_budget_lasts_h is None and cadence.days_until_exhausted is None
    assert cadence.describe().endswith("; no monthly limit")


def test_ce_is_unlimited_and_sends_everything_every_record():
    counts = budget.count_points(full_record(4))
    cadence = budget.plan_cadence(PLANS["ce"], counts, INTERVAL_S)
    assert cadence.unlimited and set(cadence.period_s.values()) == {INTERVAL_S}
    assert cadence.forecast_points_per_hour == 217 * 720 and cadence.monthly_budget_lasts_h is None
    assert cadence.describe() == "ce: every group every 5 s (unlimited): 156,240 points/h, 720 messages/h"


def test_fit_month_plans_within_the_month_at_the_assumed_driving_hours():
    counts = budget.count_points(full_record(1))
    hourly_only = budget.plan_cadence(PLANS["cloud"], counts, INTERVAL_S, drive_hours_per_month=200)
    assert hourly_only.monthly_budget_lasts_h < 200, "1 M points do not last 200 h at the hourly cadence"
    monthly = budget.plan_cadence(PLANS["cloud"], counts, INTERVAL_S, drive_hours_per_month=200, fit_month=True)
    assert monthly.forecast_points_per_hour * 200 <= 0.8 * 1_000_000
    assert monthly.monthly_budget_lasts_h >= 200 and monthly.days_until_exhausted >= budget.DAYS_PER_MONTH


def test_the_message_limit_stretches_core_on_a_short_interval():
    cadence = budget.plan_cadence(budget.Plan(None, None, None, messages_per_hour=1000), {CORE: 1}, 1.0)
    assert cadence.period_s[CORE] == 6 and cadence.messages_per_hour == 600 <= 0.8 * 1000


def test_a_plan_nothing_fits_is_reported_over_budget():
    cadence = budget.plan_cadence(budget.Plan(50, None, None, "tiny"), budget.count_points(full_record(4)), INTERVAL_S)
    assert not cadence.within_budget and set(cadence.period_s.values()) == {3600}
    assert "OVER BUDGET" in cadence.describe()


@pytest.mark.parametrize("bad", [dict(keys_per_group={"gps": 3}), dict(interval_s=0), dict(share=0),
                                 dict(share=1.5), dict(drive_hours_per_month=0), dict(keys_per_group={CORE: -1})])
def test_bad_arguments_are_refused(bad):
    args = dict(plan=PLANS["cloud"], keys_per_group={CORE: 10}, interval_s=INTERVAL_S) | bad
    with pytest.raises(ValueError):
        budget.plan_cadence(**args)


# --- a simulated drive -------------------------------------------------------------------------

@pytest.mark.parametrize("packs", [1, 4])
def test_a_three_hour_drive_on_cloud_free_keeps_every_hour_within_the_budget_and_the_forecast(packs):
    values = full_record(packs)
    cadence = cloud_cadence(packs)
    sent = drive(Thinner(cadence), values)
    # (a) every sliding hour within the budget (and so within the limit)
    assert worst_hour_points(sent) <= cadence.budget_points_per_hour <= 15_000
    # (b) the measured rate is the forecast
    measured = sum(len(v) for _, v in sent) / 3
    assert measured == pytest.approx(cadence.forecast_points_per_hour, rel=0.05)
    assert sum(1 for _, v in sent if v) / 3 == pytest.approx(cadence.messages_per_hour, rel=0.05)
    # (d) every group goes at least once per its period, from the first record on
    assert sent[0][1] == values, "the first record goes whole"
    end_ms = sent[-1][0]
    for group in GROUP_NAMES:
        times = sends_of(sent, group) + [end_ms]
        gaps_ms = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps_ms) <= cadence.period_s[group] * 1000, group
    assert set().union(*(v for _, v in sent)) == set(values)
    # alive goes with core, and every sent record has all of core in it
    core_keys = {k for k in values if budget.group_of(k) == CORE}
    assert all(core_keys <= set(v) for _, v in sent if v)


@pytest.mark.parametrize("packs", [1, 4])
def test_jittered_timestamps_neither_exceed_the_limit_nor_drift_from_the_forecast(packs):
    cadence = cloud_cadence(packs)
    sent = drive(Thinner(cadence), full_record(packs), jitter_s=1.5)
    assert worst_hour_points(sent) <= 15_000
    assert sum(len(v) for _, v in sent) / 3 == pytest.approx(cadence.forecast_points_per_hour, rel=0.05)


def test_ce_thins_nothing():
    values = full_record(4)
    thinner = Thinner(budget.plan_cadence(PLANS["ce"], budget.count_points(values), INTERVAL_S))
    sent = drive(thinner, values, hours=0.5, jitter_s=2.4)
    assert all(v == values for _, v in sent)
    assert thinner.thin(sent[-1][0] + 1, values) == values, "even a record right after the last one"
    assert thinner.thin(0, values, "backlog") == values


def test_a_thinned_record_is_a_subset_and_an_empty_one_means_send_nothing():
    values = full_record(4)
    thinner = Thinner(cloud_cadence(4))  # core every 15 s
    t0 = int(NOW_S * 1000)
    assert thinner.thin(t0, values) == values
    assert thinner.thin(t0 + 5000, values) == {} == thinner.thin(t0 + 10_000, values)
    third = thinner.thin(t0 + 15_000, values)
    assert set(third) == {k for k in values if budget.group_of(k) == CORE}
    assert all(third[k] == values[k] for k in third)


def test_an_unknown_key_goes_with_core():
    values = full_record(1) | {"brand_new_key": 1}
    thinner = Thinner(cloud_cadence(1))
    t0 = int(NOW_S * 1000)
    thinner.thin(t0, values)
    assert set(thinner.thin(t0 + 5000, values)) == {k for k in values if budget.group_of(k) in (CORE, None)}


def test_live_and_backlog_streams_keep_their_own_state():
    values = full_record(1)
    cadence = cloud_cadence(1)
    live_only = drive(Thinner(cadence), values, hours=0.25)
    backlog_start_ms = int(NOW_S * 1000) - 2 * HOUR_MS
    backlog_only = drive(Thinner(cadence), values, hours=0.25, stream="backlog", start_ms=backlog_start_ms)
    both = Thinner(cadence)
    # The newest record live, then the older backlog: interleaved, as the uplink sends them.
    mixed = [(both.thin(lt, values, "live"), both.thin(bt, values, "backlog"))
             for (lt, _), (bt, _) in zip(live_only, backlog_only)]
    assert [lv for lv, _ in mixed] == [v for _, v in live_only]
    assert [bv for _, bv in mixed] == [v for _, v in backlog_only]
    with pytest.raises(ValueError):
        both.thin(0, values, "replay")


def test_a_clock_stepped_back_starts_over_instead_of_stalling():
    values = full_record(1)
    thinner = Thinner(cloud_cadence(1))
    t0 = int(NOW_S * 1000)
    thinner.thin(t0, values)
    thinner.thin(t0 + 5000, values)
    assert thinner.thin(t0 - 600_000, values) == values, "every group, as at the first record"
    assert set(thinner.thin(t0 - 595_000, values)) == {k for k in values if budget.group_of(k) == CORE}


# --- the backlog -------------------------------------------------------------------------------

@pytest.mark.parametrize("packs", [1, 4])
def test_the_backlog_is_coarser_than_live_and_fits_the_spare(packs):
    live = cloud_cadence(packs)
    for spare in (2_000.0, 6_000.0, 50_000.0):
        backlog = budget.backlog_cadence(live, spare)
        assert backlog.stream == "backlog" and backlog.within_budget
        assert all(backlog.period_s[g] >= live.period_s[g] for g in GROUP_NAMES)
        assert 30 <= backlog.period_s[CORE] <= 60
        assert backlog.forecast_points_per_hour <= spare
        assert backlog.drain_h_per_outage_h == pytest.approx(backlog.forecast_points_per_hour / spare)
        assert "the full records stay in the outbox for thinned_keep_days" in backlog.describe()


def test_without_spare_the_backlog_goes_at_the_minimum_and_says_what_is_left_out():
    live = cloud_cadence(1)
    spare = budget.spare_points_per_hour(live)
    assert spare == 12_000 - 11_880
    backlog = budget.backlog_cadence(live, spare)
    assert backlog.period_s == {CORE: 60, STATUS: 3600, TEMPS: 3600, CELLS: 3600, SLOW: 3600}
    assert not backlog.within_budget and backlog.drain_h_per_outage_h == pytest.approx(651 / 120)
    text = backlog.describe()
    assert text.startswith("cloud backlog: core every 1 min,")
    assert "an hour of outage takes 5.4 h to send at the minimum cadence" in text
    assert "left out of the records: core 11/12, status 719/720" in text
    for spare, why in ((0.0, "no spare points/h"), (None, "spare points/h unknown")):
        nothing = budget.backlog_cadence(live, spare)
        assert not nothing.unlimited and nothing.period_s == backlog.period_s, "the minimum, never everything"
        assert nothing.drain_h_per_outage_h is None
        assert f"{why}: it drains only when the live stream leaves room" in nothing.describe()
        sent = drive(Thinner(live, nothing), full_record(1), hours=1.0, stream="backlog")
        assert sum(len(v) for _, v in sent) == nothing.forecast_points_per_hour == 651


def test_the_thinner_sends_the_backlog_at_the_backlog_cadence():
    values = full_record(1)
    live = cloud_cadence(1)
    backlog = budget.backlog_cadence(live, 3_000.0)
    sent = drive(Thinner(live, backlog), values, hours=1.0, stream="backlog")
    assert sum(len(v) for _, v in sent) == pytest.approx(backlog.forecast_points_per_hour, rel=0.05)
    assert max(b - a for a, b in itertools.pairwise(sends_of(sent, CORE))) == backlog.period_s[CORE] * 1000
    live_sent = drive(Thinner(live, backlog), values, hours=1.0)
    assert sum(len(v) for _, v in live_sent) == live.forecast_points_per_hour


def test_an_unlimited_backlog_is_not_thinned():
    live = budget.plan_cadence(PLANS["ce"], budget.count_points(full_record(1)), INTERVAL_S)
    backlog = budget.backlog_cadence(live, None)
    assert backlog.unlimited and backlog.stream == "backlog" and backlog.period_s == live.period_s
    assert budget.spare_points_per_hour(live) is None


def test_cadence_is_immutable():
    cadence = cloud_cadence(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cadence.interval_s = 1.0  # type: ignore[misc]
    assert math.isclose(cadence.share, limits.MARGIN)
