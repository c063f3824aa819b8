"""Link health for the device readers: state, error counts by kind, and reopen back-off.

A reader reports each success and failure here. State is ``connecting`` until the first
answer, ``up`` while answers come, and ``down`` when the port is lost or nothing usable has come
for ``down_after`` consecutive failures. Logging follows the coordinator rule: one line when the
link starts failing and one when it recovers; single recoverable errors go to VERBOSE.
"""

from __future__ import annotations

import collections
import logging
import random
import time

from common import clock
from common.service import VERBOSE


class Backoff:
    """Doubling delays from ``first`` to ``cap`` seconds, with ±20 % jitter; reset() after a success."""

    def __init__(self, first: float, cap: float):
        self.first, self.cap = first, cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return min(self.cap, delay * random.uniform(0.8, 1.2))

    def reset(self) -> None:
        self._next = self.first


class LinkHealth:
    def __init__(self, port: str, log: logging.Logger, down_after: int = 2):
        self.port = port
        self.log = log
        self.down_after = down_after
        self.state = "connecting"
        self.errors: collections.Counter[str] = collections.Counter()
        self.last_ok_ts: float | None = None
        self.error: str | None = None
        self._failures = 0
        self.changed = True

    def ok(self) -> None:
        self.last_ok_ts = clock.now()
        self._failures = 0
        if self.state != "up":
            self.log.info("link up on %s", self.port)
            self.error = None
            self._set("up")

    def fail(self, kind: str, detail: str, lost: bool = False, count: bool = True, times: int = 1) -> None:
        """Record a failure (``times`` of them, for a run reported at once); ``lost`` means the
        port itself is gone (down at once). Retries of an open that keeps failing pass
        ``count=False``: one outage counts once."""
        if count:
            self.errors[kind] += times
        self.error = f"{kind}: {detail}"
        self._failures += times
        self.log.log(VERBOSE, "%s: %s", kind, detail)
        if self.state != "down" and (lost or self._failures >= self.down_after):
            self.log.warning("link down on %s: %s", self.port, self.error)
            self._set("down")

    def count(self, kind: str) -> None:
        """Count an event that is no failure of the link (a stale reply discarded)."""
        self.errors[kind] += 1
        self.changed = True

    def unreachable(self, detail: str) -> None:
        """The port could not be opened: down, with one ``io`` counted per outage however often
        the reopen is retried."""
        self.fail("io", detail, lost=True, count=self.state != "down")

    def _set(self, state: str) -> None:
        self.state = state
        self.changed = True

    def fields(self) -> dict:
        return {"state": self.state, "port": self.port, "errors": dict(self.errors),
                "last_ok_ts": self.last_ok_ts, "error": self.error}


class Every:
    """True once per ``period`` seconds (monotonic), for periodic publishing inside busy loops."""

    def __init__(self, period: float):
        self.period = period
        self._next = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.period
        return True
