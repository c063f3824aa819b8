"""The sender's decisions, without a network or a clock of its own (a sans-I/O core, like h11).

The shell (sender.py) feeds it events: a session is up (``connected``), a CONNECT was refused
(``refused``), a batch was published (``sent``), a PUBACK came (``acked``), the session closed
(``closed``, with the server's reason code or None for a close without one). The core answers
with actions for the shell to carry out: :class:`Publish`, :class:`Accept` (delete the rows),
:class:`Reject` (count an attempt or move to the dead-letter table), :class:`Reconnect` (when and
why). It reads the outbox (``batch``, ``newest``) but never writes it.

Rules (reasons.py holds the table of what each reason code means):

* oldest first; with a limited budget the newest record goes first, so the server's display
  stays live while a backlog drains (``live``);
* a batch in flight is never published again on the same session; refused rows are rewound and
  sent again once nothing is in flight;
* a batch never exceeds ``max_bytes`` nor, with its topic, ``max_message_bytes`` (ThingsBoard
  closes the session over 65,536 bytes); a record that alone exceeds it is dead-lettered before
  it is sent;
* rate limited (or possibly: DISCONNECT 0x83, a close without a reason within BLAME_S of a
  publish, CONNACK 0x88): the buckets are emptied and sending pauses for ``pause_s``, doubled for
  each further close with nothing accepted in between (up to MAX_PAUSE_S); the records in flight
  go again as they were. After a pause the first batch goes alone (the probe); only if the probe
  is refused again, when the server had had the whole pause to refill, are its records judged: a
  single record counts an attempt, a batch goes one record at a time. So a rate limit never
  dead-letters a good record, and a record the server truly refuses is still found;
* any other close with a batch of several records in flight: the next session sends those records
  one at a time, so the culprit is found without blaming the others.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from services.tb_uplink import limits as limitsmod
from services.tb_uplink import reasons
from services.tb_uplink.reasons import Blame, Meaning, Retry

TELEMETRY = "v1/devices/me/telemetry"
MAX_MESSAGE_BYTES = 65_536  # ThingsBoard's limit for topic plus payload
BLAME_S = 2.0
MAX_PAUSE_S = 600.0
BACKLOG_ROWS = 500


@dataclass(frozen=True)
class Policy:
    window: int = 8
    max_bytes: int = 52_000
    dead_letter_after: int = 3
    pause_s: float = 60.0
    reconnect_max_s: float = 60.0
    auth_retry_s: float = 120.0
    max_message_bytes: int = MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    ids: tuple[int, ...]
    points: int
    live: bool


@dataclass(frozen=True)
class Accept:
    ids: tuple[int, ...]


@dataclass(frozen=True)
class Reject:
    ids: tuple[int, ...]
    reason: str
    dead_after: int


@dataclass(frozen=True)
class Reconnect:
    after_s: float
    error: str
    reload_credentials: bool = False


@dataclass
class InFlight:
    ids: tuple[int, ...]
    sent_at: float
    live: bool


@dataclass
class _Session:
    """What one connection has done; thrown away when it closes."""
    inflight: dict[int, InFlight] = field(default_factory=dict)
    sent_upto: int = 0
    live_sent: set[int] = field(default_factory=set)
    live_high: int = 0  # the newest record sent live: only a record newer than it is live
    rewind_to: int | None = None
    after_pause: bool = False  # this session began after a pause: its first record probes
    probe: int | None = None   # the mid of that first record while it is in flight
    probed: bool = False


# How rows become payload parts and their data points; ``live`` says which stream they are.
Shape = Callable[[list, bool], tuple[list[str], int]]


def _whole(rows: list, live: bool) -> tuple[list[str], int]:
    return [r.payload for r in rows], sum(r.points for r in rows)


class Delivery:
    def __init__(self, outbox, policy: Policy, limits: limitsmod.RateLimits,
                 jitter: Callable[[], float] = lambda: random.uniform(0.8, 1.2), shape: Shape = _whole,
                 commit: Callable[[], None] = lambda: None):
        self.outbox, self.policy, self.limits = outbox, policy, limits
        self.jitter, self.shape, self.commit = jitter, shape, commit
        self.window, self.max_bytes = policy.window, self._fit(policy.max_bytes)
        self.hard_limit = policy.max_message_bytes - len(TELEMETRY)
        self.session: _Session | None = None
        self.suspect_upto = 0  # records up to this id go one at a time (a culprit is among them)
        self.unsaved: set[int] = set()  # acknowledged, but the delete failed (disk full)
        self.paused_until = 0.0
        self.pause_s = 0.0  # the pause in force (0: none)
        self.strikes = 0  # rate-limit closes in a row with nothing accepted in between
        self._pause_pending = False
        self.backoff_s = 1.0
        self.error: str | None = None

    def _fit(self, max_bytes: int) -> int:
        return min(max_bytes, self.policy.max_message_bytes - len(TELEMETRY))

    # -- session limits from the server ----------------------------------------------------------

    def session_limits(self, max_payload: int | None, inflight: int | None) -> None:
        if max_payload is not None and max_payload > 1024:
            self.max_bytes = self._fit(min(self.policy.max_bytes, int(max_payload * limitsmod.MARGIN)))
            self.hard_limit = min(self.policy.max_message_bytes, max_payload) - len(TELEMETRY)
        if inflight is not None and inflight > 0:
            self.window = max(1, min(self.policy.window, inflight))

    # -- events ------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.session is not None

    def connected_now(self) -> None:
        self.session = _Session(after_pause=self._pause_pending)
        self._pause_pending = False
        self.error, self.backoff_s = None, 1.0

    def abandon(self) -> None:
        """The shell dropped the session itself (stepping aside, an error of its own): nothing
        the server did, so nobody is judged."""
        self.session = None

    @property
    def probing(self) -> bool:
        """The first record after a pause is out, or about to be: nothing else is to be sent
        before it, or its fate would not say whether the server is ready again."""
        s = self.session
        return s is not None and s.after_pause and (not s.probed or s.probe is not None)

    def refused(self, code: int, server: str, now: float) -> Reconnect:
        """CONNACK with a failure code."""
        self.session = None
        found = reasons.meaning(code)
        if found is Meaning.NOT_AUTHORISED:
            detail = f"credentials rejected by {server} ({reasons.describe(code)})"
        else:
            detail = f"connection refused by {server}: {reasons.describe(code)}"
        return self._retry(reasons.REACTIONS[found], detail, now)

    def sent(self, mid: int, publish: Publish, now: float) -> None:
        s = self.session
        s.inflight[mid] = InFlight(publish.ids, now, publish.live)
        if s.after_pause and not s.probed:
            s.probe, s.probed = mid, True
        if publish.live:
            s.live_sent.add(publish.ids[0])
            s.live_high = publish.ids[0]
        else:
            s.sent_upto = publish.ids[-1]
            s.live_sent = {i for i in s.live_sent if i > s.sent_upto}

    def acked(self, mid: int, code: int, now: float) -> list[Accept | Reject]:
        s = self.session
        batch = s.inflight.pop(mid, None) if s else None
        if batch is None:
            return []  # attributes, an RPC, or a session already gone
        if s.probe == mid:
            s.probe = None
        found = reasons.meaning(code)
        if found is Meaning.ACCEPTED:
            self.strikes = 0
            s.live_sent.difference_update(batch.ids)
            if self.suspect_upto and max(batch.ids) >= self.suspect_upto:
                self.suspect_upto = 0
            return [Accept(batch.ids)]
        reaction = reasons.REACTIONS[found]
        detail = f"{reasons.describe(code)} from the server"
        actions = self._judge([batch], reaction, detail, fresh=False)
        if reaction.pause:
            self._pause(now, detail)
        # Send the refused rows again, but only once nothing is in flight: never twice at once.
        target = min(batch.ids[0] - 1, s.sent_upto)
        s.rewind_to = target if s.rewind_to is None else min(s.rewind_to, target)
        return actions

    def closed(self, code: int | None, now: float, detail: str) -> list[Reject | Reconnect]:
        """The session ended: ``code`` is the server's DISCONNECT reason, None when the
        connection simply closed (or was given up)."""
        s, self.session = self.session, None
        batches = list(s.inflight.values()) if s else []
        recent = any(now - b.sent_at <= BLAME_S for b in batches)
        if code is None:
            found = Meaning.MAYBE_RATE_LIMITED if recent else Meaning.CLOSED
        else:
            found = reasons.meaning(code, success=Meaning.CLOSED)
            detail = f"{detail}: {reasons.describe(code)}"
        if found is Meaning.MAYBE_RATE_LIMITED and code is None:
            detail += " just after a publish (possibly rate limited)"
        reaction = reasons.REACTIONS[found]
        fresh = s is not None and s.probe is not None and len(s.inflight) == 1
        alone = [b for b in batches if now - b.sent_at <= BLAME_S]
        actions: list = self._judge(alone if len(batches) == 1 else batches, reaction, detail, fresh)
        actions.append(self._retry(reaction, detail, now))
        return actions

    def _judge(self, batches: list[InFlight], reaction: reasons.Reaction, detail: str, fresh: bool) -> list[Reject]:
        """Blame a record alone in flight as the reaction says; mark several for one-by-one.
        A possible rate limit judges only the probe (the first batch after a pause, alone): the
        budget had the whole pause to refill, so its refusal says the records are to blame."""
        blame, split = reaction.blame, reaction.split
        if blame is Blame.COUNT_IF_FRESH:
            if not fresh:
                return []
            blame, split = Blame.COUNT, True
        if len(batches) == 1 and len(batches[0].ids) == 1:
            if blame is Blame.AT_ONCE:
                return [Reject(batches[0].ids, detail, 1)]
            if blame is Blame.COUNT:
                return [Reject(batches[0].ids, detail, self.policy.dead_letter_after)]
        elif batches and split:
            self.suspect_upto = max(self.suspect_upto, max(i for b in batches for i in b.ids))
        return []

    def _pause(self, now: float, detail: str) -> float:
        self.limits.exhaust()
        cap = max(self.policy.pause_s, MAX_PAUSE_S)
        self.pause_s = min(cap, self.policy.pause_s * 2 ** self.strikes)
        self.strikes += 1
        self.paused_until = now + self.pause_s
        self._pause_pending = True
        self.error = f"{detail}; rate limited, pausing {self.pause_s:g} s"
        return self.pause_s

    def _retry(self, reaction: reasons.Reaction, detail: str, now: float) -> Reconnect:
        if reaction.retry is Retry.PAUSE:
            pause = self._pause(now, detail)
            return Reconnect(pause, self.error)
        if reaction.retry is Retry.CREDENTIALS:
            self.error = f"{detail}; retrying every {self.policy.auth_retry_s:g} s"
            return Reconnect(self.policy.auth_retry_s, self.error, reload_credentials=True)
        delay = self.backoff_s * self.jitter()
        self.backoff_s = min(self.policy.reconnect_max_s, self.backoff_s * 2)
        self.error = detail
        return Reconnect(delay, self.error)

    # -- what to send next ---------------------------------------------------------------------------

    def next(self, now: float) -> Publish | Reject | Accept | None:
        """The next batch to publish (limits already spent), a record to dead-letter before it is
        ever sent, records the budget planner thinned to nothing (to delete unsent), or None
        while the window, the pause, a probe or the budget says wait."""
        s = self.session
        if s is None or now < self.paused_until or s.probe is not None:
            return None
        if s.rewind_to is not None:
            if s.inflight:
                return None
            s.sent_upto, s.rewind_to = s.rewind_to, None
            s.live_sent.clear()
        window = 1 if self.suspect_upto > s.sent_upto or s.after_pause and not s.probed else self.window
        if len(s.inflight) >= window:
            return None
        rows, live = self._next_rows(s)
        if not rows:
            s.probed = True  # nothing waiting: nothing to probe with
            return None
        oversize = self._oversize(rows)
        if oversize is not None:
            return oversize
        parts, points = self.shape(rows, live)
        if not parts:  # the budget planner left nothing of these records to send: done with them
            self.commit()
            return Accept(tuple(r.id for r in rows))
        payload = ("[" + ",".join(parts) + "]").encode()
        while len(payload) > self.hard_limit and len(rows) > 1:  # non-ASCII text: bytes over chars
            rows = rows[: len(rows) // 2]
            parts, points = self.shape(rows, live)
            payload = ("[" + ",".join(parts) + "]").encode()
        if not self.limits.allow(points):
            return None  # nothing committed: the thinning is decided again when the budget allows
        self.commit()
        return Publish(TELEMETRY, payload, tuple(r.id for r in rows), points, live)

    def _oversize(self, rows: list) -> Reject | None:
        if len(rows) != 1:
            return None
        size = len(rows[0].payload.encode()) + 2
        if size <= self.hard_limit:
            return None
        return Reject((rows[0].id,), f"record of {size} bytes is over the server's limit of "
                      f"{self.hard_limit + len(TELEMETRY)} bytes with its topic", 1)

    def _next_rows(self, s: _Session) -> tuple[list, bool]:
        """With a limited budget the newest record goes first, so the display on the server stays
        live while a backlog drains; otherwise strictly oldest first. Returns (rows, live)."""
        if not self.limits.unlimited and not self.suspect_upto:
            floor = max(s.sent_upto, s.live_high)
            for part in self.outbox.newest_parts():  # one message each: a part fills a message
                if part.id > floor and part.id not in self.unsaved:
                    return [part], True
        one_by_one = self.suspect_upto > s.sent_upto
        return self.outbox.batch(s.sent_upto, self.max_bytes, self.limits.max_points() or 1_000_000,
                                 skip=frozenset(s.live_sent | self.unsaved),
                                 limit=1 if one_by_one else BACKLOG_ROWS), False
