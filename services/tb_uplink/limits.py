"""Rate limits: token buckets for messages and data points, from presets or the server.

ThingsBoard states limits as "count:seconds" pairs that all apply at once ("100:1,600:60,7000:3600").
A device over any of them gets no PUBACK: the session is closed (DISCONNECT 0x83 on MQTT 5, a bare
close on 3.1.1) and the message dropped, so the uplink spends tokens before it publishes and waits
when they run out (reasons.py and delivery.py say what a close means).
``getSessionLimits`` (a client RPC) reports the real figures; until it answers, the preset of
the config applies: ``ce`` (Community Edition defaults: unlimited) or ``cloud`` (ThingsBoard
Cloud's published per-device limits, Free plan, the lowest). A share of each limit (MARGIN) is
kept in reserve, as the official SDK does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MARGIN = 0.8
PRESETS: dict[str, dict[str, str] | None] = {
    "ce": None,
    "cloud": {"messages": "50:1,1000:60,15000:3600", "telemetryMessages": "50:1,600:60,7000:3600",
              "telemetryDataPoints": "100:1,2000:60,15000:3600"},
}


PAID_PLANS = ("prototype", "pilot", "startup", "business")  # the same device limits as Free (assumed)


def preset(name: str, points_per_hour: int | None = None) -> dict[str, str] | None:
    """The rate limits of a plan of the config; ``custom`` from its hourly data-point budget."""
    if name == "custom":
        return {"telemetryDataPoints": f"{points_per_hour}:3600"} if points_per_hour else None
    return PRESETS["cloud" if name in PAID_PLANS else name]


class LimitsError(ValueError):
    pass


def parse(text: str) -> list[tuple[int, float]]:
    """"100:1,600:60" -> [(100, 1.0), (600, 60.0)]. Raises LimitsError."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            count, seconds = part.split(":")
            pair = (int(count), float(seconds))
        except ValueError:
            raise LimitsError(f"bad rate limit {part!r} in {text!r}") from None
        if pair[0] <= 0 or pair[1] <= 0:
            raise LimitsError(f"bad rate limit {part!r} in {text!r}")
        out.append(pair)
    return out


class TokenBucket:
    """``capacity`` tokens refilled evenly over ``window_s``."""

    def __init__(self, capacity: float, window_s: float, clock: Callable[[], float] = time.monotonic):
        self.capacity, self.window_s, self.clock = capacity, window_s, clock
        self.tokens = capacity
        self._at = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._at) * self.capacity / self.window_s)
        self._at = now

    def has(self, n: float) -> bool:
        """Enough tokens for ``n``; a full bucket also lets through a message bigger than itself
        (into debt), or it could never go. ThingsBoard refuses such a message every time, so the
        uplink splits a record over the smallest window's points into parts (shaping.split) and
        keeps batches within it: this is for a server's limits that change under a stored record."""
        self._refill()
        return self.tokens >= min(n, self.capacity)

    def take(self, n: float) -> None:
        self._refill()
        self.tokens -= n

    def empty(self) -> None:
        self._refill()
        self.tokens = 0.0


class RateLimits:
    """All the buckets of a session. ``unlimited`` when neither preset nor server set any."""

    def __init__(self, spec: dict[str, str] | None, clock: Callable[[], float] = time.monotonic, margin: float = MARGIN):
        spec = spec or {}
        self.description = ", ".join(f"{k} {v}" for k, v in spec.items()) or "unlimited"
        self._buckets: dict[str, list[TokenBucket]] = {
            kind: [TokenBucket(max(1.0, count * margin), seconds, clock) for count, seconds in parse(spec[kind])]
            for kind in ("messages", "telemetryMessages", "telemetryDataPoints") if spec.get(kind)}

    @property
    def unlimited(self) -> bool:
        return not self._buckets

    def max_points(self) -> int | None:
        """The most data points one message may carry (the smallest bucket), None if unlimited."""
        buckets = self._buckets.get("telemetryDataPoints")
        return int(min(b.capacity for b in buckets)) if buckets else None

    def allow(self, points: int, telemetry: bool = True) -> bool:
        """Spend one message (and ``points`` data points) if every bucket has them."""
        need = {"messages": 1}
        if telemetry:
            need.update(telemetryMessages=1, telemetryDataPoints=points)
        if not all(b.has(n) for kind, n in need.items() for b in self._buckets.get(kind, ())):
            return False
        for kind, n in need.items():
            for b in self._buckets.get(kind, ()):
                b.take(n)
        return True

    def exhaust(self) -> None:
        """The server said we went too fast: spend everything, as it evidently counted more."""
        for buckets in self._buckets.values():
            for b in buckets:
                b.empty()


def from_session_limits(reply: dict) -> dict[str, str]:
    """The rate limits of a getSessionLimits reply, checked (raises LimitsError)."""
    rates = reply.get("rateLimits") or {}
    spec = {k: v for k, v in rates.items() if k in ("messages", "telemetryMessages", "telemetryDataPoints") and v}
    for value in spec.values():
        if not isinstance(value, str):
            raise LimitsError(f"rate limit {value!r} is not a string")
        parse(value)
    return spec
