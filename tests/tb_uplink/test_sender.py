"""The sender's decisions without a network: batch order, live first, reactions to PUBACK codes."""

import threading
import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from common.config import TbUplinkConfig
from services.tb_uplink import limits
from services.tb_uplink.outbox import Outbox
from services.tb_uplink.sender import InFlight, Sender


def sender(tmp_path, **cfg) -> Sender:
    config = TbUplinkConfig(token="t", outbox_path=str(tmp_path / "o.db"), **cfg)
    s = Sender(config, lambda: config, threading.Event())
    s.outbox = Outbox(config.outbox_path)
    return s


def fill(box, n):
    now = int(time.time() * 1000)
    return [box.add(now + i, {"a": i, "b": i}) for i in range(n)]


def test_oldest_first_when_the_budget_is_unlimited(tmp_path):
    s = sender(tmp_path)
    ids = fill(s.outbox, 5)
    rows, live = s._next_rows(1000)
    assert [r.id for r in rows] == ids and not live


def test_newest_first_then_the_backlog_when_the_budget_is_limited(tmp_path):
    s = sender(tmp_path, rate_limits="cloud")
    ids = fill(s.outbox, 5)
    rows, live = s._next_rows(80)
    assert [r.id for r in rows] == ids[-1:] and live
    s._live_sent.add(ids[-1])
    s._live_high = ids[-1]
    rows, live = s._next_rows(80)
    assert [r.id for r in rows] == ids[:-1] and not live


def test_once_the_live_record_is_acknowledged_the_backlog_goes_in_batches_not_newest_first(tmp_path):
    # The live record's PUBACK deletes it, so the backlog's newest row becomes the outbox's newest:
    # it is not live (older than what was sent live), and must not drag the backlog out one by one.
    s = sender(tmp_path, rate_limits="cloud")
    ids = fill(s.outbox, 5)
    rows, live = s._next_rows(80)
    assert live
    s._live_high = rows[0].id
    s.outbox.accept([rows[0].id])
    rows, live = s._next_rows(80)
    assert [r.id for r in rows] == ids[:-1] and not live
    newer = fill(s.outbox, 1)
    rows, live = s._next_rows(80)
    assert [r.id for r in rows] == newer and live, "a record made since is live again"


def test_a_rate_limit_puback_pauses_and_keeps_the_rows(tmp_path):
    s = sender(tmp_path, rate_limits="cloud", rate_limit_pause_s=30)
    ids = fill(s.outbox, 3)
    s._inflight[7] = InFlight(ids, time.monotonic())
    s._sent_upto = ids[-1]
    s._on_publish(None, None, 7, ReasonCode(PacketTypes.PUBACK, "Quota exceeded"), None)
    assert s.outbox.stats()[0] == 3 and s.outbox.stats()[3] == 0
    assert s._paused_until > time.monotonic() + 25 and not s.limits.allow(1)
    assert s._rewind_to == ids[0] - 1 and "rate limited" in s.error


def test_a_payload_the_server_calls_invalid_goes_to_dead_letter_at_once(tmp_path):
    s = sender(tmp_path)
    ids = fill(s.outbox, 2)
    s._inflight[3] = InFlight(ids[:1], time.monotonic())
    s._on_publish(None, None, 3, ReasonCode(PacketTypes.PUBACK, "Payload format invalid"), None)
    assert s.outbox.stats()[0] == 1 and s.outbox.stats()[3] == 1


def test_a_success_puback_deletes_and_counts(tmp_path):
    s = sender(tmp_path)
    ids = fill(s.outbox, 4)
    s._inflight[1] = InFlight(ids[:3], time.monotonic())
    s._on_publish(None, None, 1, ReasonCode(PacketTypes.PUBACK, "Success"), None)
    assert s.sent == 3 and s.outbox.stats()[0] == 1 and s.last_ack_ts is not None


def test_a_session_closed_with_several_records_in_flight_sends_them_one_by_one_next_time(tmp_path):
    s = sender(tmp_path)
    ids = fill(s.outbox, 6)
    s._inflight = {1: InFlight(ids[:2], time.monotonic()), 2: InFlight(ids[2:4], time.monotonic())}
    s._lost("disconnected")
    assert s._suspect_upto == ids[3] and s.outbox.stats()[0] == 6, "nobody is blamed yet"
    assert s.error == "disconnected" and s._next_attempt > 0
    rows, _ = s._next_rows(1000)
    assert [r.id for r in rows] == ids[:1], "one record per publish while looking for the culprit"
    s._sent_upto = ids[3]
    assert len(s._next_rows(1000)[0]) == 2, "whole batches again past the suspects"


def test_only_a_single_record_alone_in_flight_is_blamed(tmp_path):
    s = sender(tmp_path, dead_letter_after=2)
    ids = fill(s.outbox, 3)
    for _ in range(2):
        s._inflight = {1: InFlight(ids[:2], time.monotonic())}
        s._lost("closed")
    assert s.outbox.stats()[3] == 0, "a batch of two is not blamed, its records are tried one by one"
    for _ in range(2):
        s._inflight = {1: InFlight(ids[:1], time.monotonic())}
        s._lost("closed")
    assert s.outbox.stats()[3] == 1 and s.outbox.stats()[0] == 2
    s._inflight = {1: InFlight(ids[1:2], time.monotonic() - 10)}
    s._lost("keepalive timeout")
    assert s.outbox.stats()[3] == 1, "a record sent long before the drop is not blamed"


def test_a_refused_live_record_never_skips_the_backlog(tmp_path):
    s = sender(tmp_path, rate_limits="cloud")
    ids = fill(s.outbox, 20)
    s._inflight = {1: InFlight([ids[-1]], time.monotonic()), 2: InFlight([ids[0]], time.monotonic())}
    s._live_sent, s._sent_upto = {ids[-1]}, ids[0]
    s._on_publish(None, None, 1, ReasonCode(PacketTypes.PUBACK, "Quota exceeded"), None)
    assert s._rewind_to <= ids[0]


def test_a_record_bigger_than_the_smallest_window_still_goes_when_the_bucket_is_full():
    rl = limits.RateLimits({"telemetryDataPoints": "100:1"})
    assert rl.allow(113) and not rl.allow(1)


def test_cloud_preset_limits():
    assert limits.RateLimits(limits.PRESETS["cloud"]).description.startswith("messages 50:1")
