"""The delivery core's decisions, fed event sequences: batch order, live first, and what each
PUBACK, refusal and close means (services/tb_uplink/delivery.py, reasons.py)."""

import time

import pytest

from services.tb_uplink import limits, reasons
from services.tb_uplink.delivery import (
    BLAME_S,
    TELEMETRY,
    Accept,
    Delivery,
    Policy,
    Publish,
    Reconnect,
    Reject,
)
from services.tb_uplink.outbox import Outbox

NOW = 1000.0


def core(tmp_path, spec=None, **policy) -> Delivery:
    d = Delivery(Outbox(tmp_path / "o.db"), Policy(**policy), limits.RateLimits(spec, clock=lambda: NOW),
                 jitter=lambda: 1.0)
    d.connected_now()
    return d


def fill(box, n, size=0):
    now = int(time.time() * 1000)
    return [box.add(now + i, {"a": i, "b": i, **({"pad": "x" * size} if size else {})}) for i in range(n)]


def send(d: Delivery, mid: int, now: float = NOW) -> Publish:
    action = d.next(now)
    assert isinstance(action, Publish), action
    d.sent(mid, action, now)
    return action


def test_oldest_first_in_batches_when_the_budget_is_unlimited(tmp_path):
    d = core(tmp_path)
    ids = fill(d.outbox, 5)
    p = send(d, 1)
    assert p.ids == tuple(ids) and not p.live and p.topic == TELEMETRY and p.points == 10


def test_newest_first_then_the_backlog_when_the_budget_is_limited(tmp_path):
    d = core(tmp_path, limits.PRESETS["cloud"])
    ids = fill(d.outbox, 5)
    assert send(d, 1).ids == (ids[-1],)
    assert send(d, 2).ids == tuple(ids[:-1])


def test_once_the_live_record_is_acknowledged_the_backlog_goes_in_batches(tmp_path):
    # The live record's PUBACK deletes it, so the backlog's newest row becomes the outbox's newest:
    # it is not live (older than what was sent live), and must not drag the backlog out one by one.
    d = core(tmp_path, limits.PRESETS["cloud"])
    ids = fill(d.outbox, 5)
    send(d, 1)
    [accept] = d.acked(1, 0, NOW)
    assert accept == Accept((ids[-1],))
    d.outbox.accept(list(accept.ids))
    assert send(d, 2).ids == tuple(ids[:-1])
    newer = fill(d.outbox, 1)
    p = send(d, 3)
    assert p.ids == tuple(newer) and p.live, "a record made since is live again"


def test_a_rate_limit_puback_pauses_and_sends_the_rows_again_after_it(tmp_path):
    d = core(tmp_path, limits.PRESETS["cloud"], pause_s=30)
    ids = fill(d.outbox, 3)
    send(d, 1)
    send(d, 2)
    assert d.acked(2, 0x97, NOW) == [], "quota exceeded blames nobody"
    assert d.paused_until == NOW + 30 and not d.limits.allow(1) and "rate limited" in d.error
    assert d.next(NOW + 29) is None
    assert d.acked(1, 0, NOW + 1) == [Accept((ids[-1],))]
    d.outbox.accept([ids[-1]])
    assert d.next(NOW + 31) is None, "the buckets are still empty"
    d.limits = limits.RateLimits(None)
    assert send(d, 3, NOW + 31).ids == tuple(ids[:-1]), "the refused rows go again"


@pytest.mark.parametrize("code", [0x99, 0x90])
def test_a_payload_or_topic_the_server_refuses_goes_to_dead_letter_at_once(tmp_path, code):
    d = core(tmp_path)
    ids = fill(d.outbox, 1)
    send(d, 1)
    [reject] = d.acked(1, code, NOW)
    assert reject.ids == (ids[0],) and reject.dead_after == 1 and f"0x{code:02X}" in reject.reason


def test_a_batch_refused_in_its_puback_is_sent_again_one_record_at_a_time(tmp_path):
    d = core(tmp_path)
    ids = fill(d.outbox, 4)
    send(d, 1)
    assert d.acked(1, 0x99, NOW) == []
    assert send(d, 2).ids == (ids[0],), "one record per publish while looking for the culprit"


def test_a_puback_with_no_matching_subscribers_is_an_acceptance(tmp_path):
    d = core(tmp_path)
    ids = fill(d.outbox, 2)
    send(d, 1)
    assert d.acked(1, 0x10, NOW) == [Accept(tuple(ids))]


def test_a_session_closed_with_several_batches_in_flight_sends_them_one_by_one_next_time(tmp_path):
    d = core(tmp_path, max_bytes=40)
    ids = fill(d.outbox, 6)
    send(d, 1)
    send(d, 2)
    actions = d.closed(0x80, NOW, "disconnected")
    assert [type(a) for a in actions] == [Reconnect], "nobody is blamed yet"
    assert actions[0].after_s == 1.0 and "0x80" in d.error
    d.connected_now()
    assert send(d, 3).ids == (ids[0],)
    d.acked(3, 0, NOW)
    assert send(d, 4).ids == (ids[1],)


def test_only_a_single_record_alone_in_flight_is_blamed_when_the_server_closes(tmp_path):
    d = core(tmp_path, dead_letter_after=2)
    ids = fill(d.outbox, 3, size=0)
    send(d, 1)
    assert isinstance(d.closed(0x80, NOW, "closed")[0], Reconnect), "a batch of three is not blamed"
    d.connected_now()
    send(d, 2)
    [reject, _] = d.closed(0x80, NOW + 0.5, "closed")
    assert reject == Reject((ids[0],), reject.reason, 2)
    d.connected_now()
    send(d, 3)
    assert [type(a) for a in d.closed(0x8D, NOW + BLAME_S + 1, "keepalive")] == [Reconnect], \
        "a record sent long before the close is not blamed"


def test_a_refused_live_record_never_skips_the_backlog(tmp_path):
    d = core(tmp_path, limits.PRESETS["cloud"])
    ids = fill(d.outbox, 20)
    send(d, 1)
    d.limits = limits.RateLimits(None)
    backlog = send(d, 2)
    assert backlog.ids[0] == ids[0]
    d.acked(1, 0x97, NOW)
    d.acked(2, 0, NOW)
    d.outbox.accept(list(backlog.ids))
    d.limits = limits.RateLimits(None)
    assert send(d, 3, NOW + 61).ids[0] == ids[-1], "the refused live record goes again"


# -- possibly rate limited: 0x83, or a close without a reason just after a publish ------------------

def test_0x83_mid_backlog_pauses_blames_nobody_and_probes_with_one_record_after_the_pause(tmp_path):
    d = core(tmp_path, pause_s=60, max_bytes=60)
    ids = fill(d.outbox, 10)
    for mid in (1, 2, 3):
        send(d, mid)
    actions = d.closed(0x83, NOW, "disconnected")
    assert [type(a) for a in actions] == [Reconnect] and actions[0].after_s == 60
    assert "0x83" in actions[0].error and "rate limited" in actions[0].error
    d.connected_now()
    assert d.next(NOW + 59) is None, "no record before the pause is over"
    probe = send(d, 4, NOW + 60)
    assert probe.ids == (ids[0],) and d.probing
    assert d.next(NOW + 60) is None, "nothing else goes while the probe is out"
    d.acked(4, 0, NOW + 60.1)
    assert not d.probing and send(d, 5, NOW + 60.2).ids == (ids[1],), "one by one through the suspects"
    actions = d.closed(0x83, NOW + 60.3, "disconnected")
    assert [type(a) for a in actions] == [Reconnect], "not blamed: it was not the first after the pause"
    assert actions[0].after_s == 60, "a record was accepted in between: the pause does not grow"


def test_a_record_refused_again_as_the_first_after_a_pause_is_blamed_and_the_pause_grows(tmp_path):
    d = core(tmp_path, pause_s=60, dead_letter_after=3, max_bytes=60)
    ids = fill(d.outbox, 3)
    send(d, 1)
    d.closed(0x83, NOW, "disconnected")
    pauses, rejects, now = [], [], NOW
    for mid in (2, 3, 4):
        now = d.paused_until
        d.connected_now()
        assert send(d, mid, now).ids == (ids[0],)
        actions = d.closed(0x83, now + 0.1, "disconnected")
        rejects += [a for a in actions if isinstance(a, Reject)]
        pauses.append(actions[-1].after_s)
    assert [r.ids for r in rejects] == [(ids[0],)] * 3 and rejects[0].dead_after == 3
    assert pauses == [120, 240, 480]


def test_a_batch_probe_refused_again_after_a_pause_is_sent_one_record_at_a_time(tmp_path):
    d = core(tmp_path, pause_s=60)
    ids = fill(d.outbox, 3)
    send(d, 1)
    d.closed(0x83, NOW, "disconnected")
    d.connected_now()
    probe = send(d, 3, d.paused_until)
    assert probe.ids == tuple(ids), "the probe is a whole batch: a rate limit costs no extra messages"
    assert [type(a) for a in d.closed(0x83, d.paused_until + 0.1, "disconnected")] == [Reconnect]
    d.connected_now()
    assert send(d, 4, d.paused_until).ids == (ids[0],), "refused with a fresh budget: look for the culprit"


def test_a_close_without_a_reason_just_after_a_publish_is_possibly_a_rate_limit(tmp_path):
    d = core(tmp_path, pause_s=60)
    fill(d.outbox, 3)
    send(d, 1)
    actions = d.closed(None, NOW + 0.5, "connection lost")
    assert actions == [Reconnect(60, actions[0].error)] and "possibly rate limited" in actions[0].error
    assert d.paused_until == NOW + 60.5


def test_a_close_without_a_reason_long_after_the_last_publish_is_a_lost_connection(tmp_path):
    d = core(tmp_path, pause_s=60)
    fill(d.outbox, 3)
    send(d, 1)
    actions = d.closed(None, NOW + BLAME_S + 5, "connection lost")
    assert actions == [Reconnect(1.0, "connection lost")] and d.paused_until == 0
    assert d.closed(None, NOW + 10, "no answer")[-1].after_s == 2.0, "the back-off doubles"


# -- refusals at CONNECT ------------------------------------------------------------------------

@pytest.mark.parametrize("code", [0x9F, 0x88])
def test_connect_refused_over_the_connection_rate_waits_the_pause(tmp_path, code):
    d = core(tmp_path, pause_s=60)
    d.abandon()
    action = d.refused(code, "tb:8883", NOW)
    assert action.after_s == 60 and not action.reload_credentials and "rate limited" in action.error


@pytest.mark.parametrize("code", [0x86, 0x87])
def test_credentials_rejected_reread_the_config_and_retry_slowly(tmp_path, code):
    d = core(tmp_path, auth_retry_s=120)
    d.abandon()
    action = d.refused(code, "tb:8883", NOW)
    assert action.after_s == 120 and action.reload_credentials and "credentials rejected" in action.error


# -- sizes -----------------------------------------------------------------------------------------

def test_a_record_that_alone_exceeds_the_limit_is_dead_lettered_before_it_is_sent(tmp_path):
    d = core(tmp_path)
    ids = fill(d.outbox, 3)
    big = d.outbox.add(int(time.time() * 1000) + 10, {"pad": "x" * 70_000})
    more = fill(d.outbox, 2)
    assert send(d, 1).ids == tuple(ids)
    reject = d.next(NOW)
    assert isinstance(reject, Reject) and reject.ids == (big,) and reject.dead_after == 1
    assert "65536" in reject.reason
    d.outbox.reject(list(reject.ids), reject.reason, 1)
    assert send(d, 2).ids == tuple(more)


def test_batches_keep_the_65536_byte_limit_with_their_topic_whatever_the_config_says(tmp_path):
    d = core(tmp_path, max_bytes=1 << 20)
    fill(d.outbox, 200, size=1000)
    sizes = []
    while (p := d.next(NOW)) is not None:
        d.sent(len(sizes) + 1, p, NOW)
        sizes.append((len(p.payload) + len(p.topic), len(p.ids)))
    assert sum(n for _, n in sizes) == 200 and max(size for size, _ in sizes) <= 65_536
    assert max(size for size, _ in sizes) > 60_000, "batches are filled up to the limit"


def test_the_server_s_max_payload_shrinks_batches(tmp_path):
    d = core(tmp_path)
    fill(d.outbox, 100, size=500)
    d.session_limits(20_000, 2)
    assert len(send(d, 1).payload) <= 16_000 and d.window == 2


# -- the table ---------------------------------------------------------------------------------------

def test_every_meaning_has_a_reaction_and_successes_are_below_0x80():
    assert set(reasons.REACTIONS) == set(reasons.Meaning) - {reasons.Meaning.ACCEPTED}
    assert all(code >= 0x80 for code in reasons.FAILURES)
    assert reasons.meaning(0x00) is reasons.Meaning.ACCEPTED
    assert reasons.meaning(0x00, success=reasons.Meaning.CLOSED) is reasons.Meaning.CLOSED
    assert reasons.meaning(0xFE) is reasons.Meaning.CLOSED, "an unknown failure is a plain close"


def test_a_record_bigger_than_the_smallest_window_still_goes_when_the_bucket_is_full():
    rl = limits.RateLimits({"telemetryDataPoints": "100:1"})
    assert rl.allow(113) and not rl.allow(1)


def test_cloud_preset_limits():
    assert limits.RateLimits(limits.PRESETS["cloud"]).description.startswith("messages 50:1")
