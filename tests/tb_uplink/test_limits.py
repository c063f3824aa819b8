"""Rate limits (pure): parsing, token buckets, presets, session limits."""

import pytest

from services.tb_uplink import limits


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_parse():
    assert limits.parse("100:1,600:60, 7000:3600") == [(100, 1.0), (600, 60.0), (7000, 3600.0)]
    for bad in ("100", "a:1", "0:1", "5:0"):
        with pytest.raises(limits.LimitsError):
            limits.parse(bad)


def test_every_window_applies_and_buckets_refill():
    clock = Clock()
    rl = limits.RateLimits({"telemetryMessages": "10:1,15:60", "telemetryDataPoints": "100:1"}, clock, margin=1.0)
    sent = sum(rl.allow(5) for _ in range(20))
    assert sent == 10, "the per-second window"
    clock.t += 1.0
    assert sum(rl.allow(5) for _ in range(20)) == 5, "the per-minute window is nearly spent"
    assert rl.max_points() == 100


def test_data_points_are_counted():
    rl = limits.RateLimits({"telemetryDataPoints": "100:1"}, Clock(), margin=1.0)
    assert rl.allow(60) and not rl.allow(60) and rl.allow(40)


def test_margin_and_exhaust():
    clock = Clock()
    rl = limits.RateLimits({"messages": "10:1"}, clock)
    assert sum(rl.allow(1) for _ in range(20)) == 8
    clock.t += 1
    rl.exhaust()
    assert not rl.allow(1)
    clock.t += 0.5
    assert rl.allow(1)


def test_presets():
    assert limits.RateLimits(limits.PRESETS["ce"]).unlimited
    cloud = limits.RateLimits(limits.PRESETS["cloud"])
    assert not cloud.unlimited and cloud.max_points() == 80


def test_session_limits_reply():
    reply = {"maxPayloadSize": 65536, "maxInflightMessages": 100,
             "rateLimits": {"messages": "200:1,6000:60,14000:3600", "telemetryMessages": "100:1",
                            "telemetryDataPoints": "200:1,6000:60,14000:3600"}}
    assert limits.from_session_limits(reply)["telemetryMessages"] == "100:1"
    with pytest.raises(limits.LimitsError):
        limits.from_session_limits({"rateLimits": {"messages": "lots"}})
