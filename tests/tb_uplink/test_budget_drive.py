"""A simulated 3-hour drive on Cloud Free through the uplink's own parts: records made every 5 s,
split to fit a message (shaping.split), stored in a real outbox, sent by the delivery core under
the cloud rate limits with the planner's thinning (shaping.Shaper), every publish acknowledged at
once. The clock is simulated; nothing here waits."""

import time
from collections import deque

import pytest

from common.messages import BmsSnapshot, Message
from harness.samples import UPLINK_FIX, uplink_pack
from services.tb_uplink import budget, limits
from services.tb_uplink.delivery import Accept, Delivery, Policy, Publish
from services.tb_uplink.outbox import Outbox
from services.tb_uplink.records import build_record
from services.tb_uplink.shaping import Shaper, split

INTERVAL_S = 5.0
HOURS = 3
HOURLY_LIMIT = 15_000
STEPS = 10


def record(packs: int, i: int) -> dict:
    now = time.time()
    snapshot = Message("bms.snapshot", "t", 0, now, BmsSnapshot(pack_count=packs, packs=[uplink_pack(n + 1)
                                                                                         for n in range(packs)]))
    return build_record(snapshot, Message("gps.fix", "t", 0, now, UPLINK_FIX), 0, 0, True, bool(i % 2))[1]


def cloud_core(tmp_path):
    """A delivery core on the Cloud plan's limits and budget, with a clock the test moves."""
    clock = [0.0]
    rates = limits.RateLimits(limits.PRESETS["cloud"], clock=lambda: clock[0])
    box = Outbox(tmp_path / "o.db", durable=False)
    shaper = Shaper(budget.PLANS["cloud"], 60.0)
    core = Delivery(box, Policy(), rates, jitter=lambda: 1.0, shape=shaper.shape, commit=shaper.commit)
    core.connected_now()
    return clock, rates, box, shaper, core


def drive(tmp_path, packs: int, outage: tuple[float, float] | None = None):
    """(sent points with their times, the shaper, the outbox) after the drive."""
    clock, rates, box, shaper, core = cloud_core(tmp_path)
    start_ms = int(time.time() * 1000) - HOURS * 3600 * 1000
    sent: list[tuple[float, int]] = []
    mid = 0
    for i in range(int(HOURS * 3600 / INTERVAL_S)):
        clock[0] = i * INTERVAL_S
        values = record(packs, i)
        shaper.plan_for(values, INTERVAL_S, {})
        for part in split(values, rates.max_points()):
            box.add(start_ms + int(clock[0] * 1000), part)
        if outage and outage[0] <= clock[0] < outage[1]:
            continue
        for step in range(STEPS):  # the sender's loop comes round many times an interval
            clock[0] = i * INTERVAL_S + step * INTERVAL_S / STEPS
            mid = send_all(core, box, clock[0], mid, sent)
    return sent, shaper, box


def send_all(core: Delivery, box: Outbox, now: float, mid: int, sent: list) -> int:
    while (action := core.next(now)) is not None:
        if isinstance(action, Publish):
            mid += 1
            core.sent(mid, action, now)
            assert len(action.payload) + len(action.topic) <= 65_536
            sent.append((now, action.points))
            action = core.acked(mid, 0, now)[0]
        assert isinstance(action, Accept)
        box.accept(list(action.ids))
    return mid


def worst_hour(sent) -> int:
    window: deque = deque()
    total = worst = 0
    for at, points in sent:
        window.append((at, points))
        total += points
        while window[0][0] <= at - 3600:
            total -= window.popleft()[1]
        worst = max(worst, total)
    return worst


@pytest.mark.parametrize("packs", [1, 4])
def test_a_3_hour_drive_on_cloud_free_stays_within_the_hourly_limit_and_matches_the_forecast(tmp_path, packs):
    sent, shaper, box = drive(tmp_path, packs)
    assert worst_hour(sent) <= HOURLY_LIMIT
    measured_per_hour = sum(points for _, points in sent) / HOURS
    forecast = shaper.cadence.forecast_points_per_hour
    assert abs(measured_per_hour - forecast) <= 0.05 * forecast, (measured_per_hour, shaper.cadence.describe())
    assert box.stats()[0] <= 3, "every record was delivered or thinned, none left behind"
    assert all(points <= limits.RateLimits(limits.PRESETS["cloud"]).max_points() for _, points in sent), \
        "no message holds more points than the smallest window"


def test_a_backlog_after_an_outage_is_thinned_and_drains_within_the_hourly_limit(tmp_path):
    sent, shaper, box = drive(tmp_path, 1, outage=(1800.0, 3600.0))
    assert worst_hour(sent) <= HOURLY_LIMIT
    assert shaper.backlog is not None and "left out of the records" in shaper.backlog.describe()
    assert box.stats()[0] <= 3, "the thinned backlog drained before the drive ended"


def test_with_community_edition_nothing_is_thinned(tmp_path):
    shaper = Shaper(budget.PLANS["ce"], 60.0)
    values = record(4, 0)
    shaper.plan_for(values, INTERVAL_S, {})
    assert shaper.cadence.unlimited and split(values, None) == [values]


def test_a_record_over_the_points_of_one_message_is_split_core_first():
    values = record(4, 0)
    parts = split(values, 80)
    assert sum(len(p) for p in parts) == len(values) and all(len(p) <= 80 for p in parts)
    assert {"speed_km_h", "soc", "i_pack"} <= set(parts[0])


def test_a_due_record_that_meets_an_empty_bucket_is_sent_later_not_deleted(tmp_path):
    clock, rates, box, shaper, core = cloud_core(tmp_path)
    values = record(1, 0)
    shaper.plan_for(values, INTERVAL_S, {"core": 30})
    start_ms = int(time.time() * 1000)
    first = box.add(start_ms, values)
    rates.exhaust()
    assert core.next(0.0) is None, "no budget: wait"
    second = box.add(start_ms + 5000, values)
    clock[0] = 5.0
    actions = []
    while (action := core.next(clock[0])) is not None and len(actions) < 5:
        actions.append(action)
        if isinstance(action, Accept):
            box.accept(list(action.ids))
    for step in range(1, 200):  # the budget refills; the due record must still go
        clock[0] = 5.0 + step
        action = core.next(clock[0])
        if isinstance(action, Publish):
            actions.append(action)
            break
        if isinstance(action, Accept):
            actions.append(action)
            box.accept(list(action.ids))
    published = [a for a in actions if isinstance(a, Publish)]
    assert published and "speed_km_h" in published[0].payload.decode(), actions
    assert first in published[0].ids or second in published[0].ids


def test_the_backlog_gets_what_the_rate_limiter_leaves_of_the_live_plan(tmp_path):
    shaper = Shaper(budget.PLANS["cloud"], 60.0)
    shaper.plan_for(record(1, 0), INTERVAL_S, {})
    live, backlog = shaper.cadence, shaper.backlog
    assert live.forecast_points_per_hour <= 0.7 * HOURLY_LIMIT
    spare = limits.MARGIN * HOURLY_LIMIT - live.forecast_points_per_hour
    assert backlog.within_budget and backlog.forecast_points_per_hour <= spare
    assert f"{spare:,.0f} spare points/h" in backlog.describe()
    sent, _, box = drive(tmp_path, 1, outage=(1800.0, 3600.0))
    assert worst_hour(sent) <= limits.MARGIN * HOURLY_LIMIT, "live and backlog together within the buckets' share"


def test_a_row_is_marked_for_keeping_while_it_goes_in_part_and_unmarked_when_it_goes_whole(tmp_path):
    shaper = Shaper(budget.PLANS["cloud"], 60.0)
    values = record(1, 1)
    box = Outbox(tmp_path / "o.db", durable=False)
    now_ms = int(time.time() * 1000)
    box.add(now_ms, values)
    second = box.add(now_ms + 5000, values)
    shaper.plan_for(values, INTERVAL_S, {})
    rows = box.batch(0, 100_000, 1000)
    for row in rows:
        shaper.shape([row], live=True)
        shaper.commit()
    assert shaper.reduced == {second}, "the first goes whole (every group is due), the second in part"
    shaper.plan_for(values, INTERVAL_S, dict.fromkeys(budget.GROUP_NAMES, 0))  # every group every record
    parts, points = shaper.shape(rows[1:], live=False)
    shaper.commit()
    assert points == len(values) and shaper.reduced == set(), "sent whole again: nothing to keep"
