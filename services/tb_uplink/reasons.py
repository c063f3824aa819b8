"""What an MQTT reason code means to the uplink, and what the uplink does about it: one table.

The codes are MQTT 5's (paho converts MQTT 3.1.1's CONNACK return codes into them: 3 "server
unavailable" becomes 0x88, 4 becomes 0x86, 5 becomes 0x87). Codes below 0x80 are successes: a
PUBACK 0x10 "no matching subscribers" (Mosquitto with nobody subscribed) is an acceptance, a
DISCONNECT 0x00 a normal close. The meanings follow what ThingsBoard's MQTT transport does
(docs/thingsboard.md, "How ThingsBoard refuses"):

* 0x83 is what ThingsBoard closes an MQTT 5 session with when a device is over a rate limit
  (no PUBACK); on 3.1.1 it closes the TCP connection without a word. Neither names the limit,
  so both are *possibly* rate limited (a bare close counts only shortly after a publish);
* 0x88 is its CONNACK on 3.1.1 for a device over its limit at CONNECT (0x9F on MQTT 5);
* 0x81 is its DISCONNECT for a packet over 65,536 bytes (netty's decoder limit), 0x95 the
  standard "packet too large";
* 0x90 (unknown topic) and 0x99 (not JSON) are PUBACKs for one publish, the session stays up.

Reactions (REACTIONS): whether to empty the rate buckets and pause; whether a record alone in
flight is blamed (an attempt counted towards the dead-letter table, or moved there at once);
whether a refused batch is resent one record at a time to find the culprit; how to retry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Meaning(enum.Enum):
    ACCEPTED = "accepted"
    CLOSED = "closed"
    RATE_LIMITED = "rate limited"
    MAYBE_RATE_LIMITED = "possibly rate limited"
    TOO_LARGE = "too large"
    BAD_PAYLOAD = "payload refused"
    BAD_TOPIC = "topic refused"
    NOT_AUTHORISED = "not authorised"
    SERVER_BUSY = "server busy"
    TAKEN_OVER = "session taken over"


class Retry(enum.Enum):
    BACKOFF = "back off"        # 1 s doubling to reconnect_max_s, jittered
    PAUSE = "pause"             # rate_limit_pause_s, doubling while closes repeat with nothing accepted
    CREDENTIALS = "credentials"  # auth_retry_s, re-reading the config file first


class Blame(enum.Enum):
    NEVER = "never"
    COUNT = "count an attempt"          # dead-lettered after dead_letter_after attempts
    COUNT_IF_FRESH = "count if fresh"   # only when it was the first record after a pause
    AT_ONCE = "at once"


@dataclass(frozen=True)
class Reaction:
    pause: bool
    blame: Blame
    split: bool  # a refused batch of several records is sent again one record at a time
    retry: Retry


REACTIONS: dict[Meaning, Reaction] = {
    Meaning.CLOSED: Reaction(False, Blame.COUNT, True, Retry.BACKOFF),
    Meaning.RATE_LIMITED: Reaction(True, Blame.NEVER, False, Retry.PAUSE),
    # Sent again as they were (one record a message would only spend the budget faster), unless
    # the first batch after a pause is refused again: then that batch goes one record at a time.
    Meaning.MAYBE_RATE_LIMITED: Reaction(True, Blame.COUNT_IF_FRESH, False, Retry.PAUSE),
    Meaning.TOO_LARGE: Reaction(False, Blame.AT_ONCE, True, Retry.BACKOFF),
    Meaning.BAD_PAYLOAD: Reaction(False, Blame.AT_ONCE, True, Retry.BACKOFF),
    Meaning.BAD_TOPIC: Reaction(False, Blame.AT_ONCE, True, Retry.BACKOFF),
    Meaning.NOT_AUTHORISED: Reaction(False, Blame.NEVER, False, Retry.CREDENTIALS),
    Meaning.SERVER_BUSY: Reaction(False, Blame.NEVER, False, Retry.BACKOFF),
    Meaning.TAKEN_OVER: Reaction(False, Blame.NEVER, False, Retry.BACKOFF),
}

FAILURES: dict[int, tuple[str, Meaning]] = {
    0x80: ("unspecified error", Meaning.CLOSED),
    0x81: ("malformed packet (ThingsBoard: over 65,536 bytes)", Meaning.TOO_LARGE),
    0x82: ("protocol error", Meaning.CLOSED),
    0x83: ("implementation specific error (ThingsBoard: over a rate limit)", Meaning.MAYBE_RATE_LIMITED),
    0x84: ("unsupported protocol version (check tb_uplink.mqtt_protocol)", Meaning.NOT_AUTHORISED),
    0x85: ("client identifier not valid (check tb_uplink.client_id)", Meaning.NOT_AUTHORISED),
    0x86: ("bad user name or password (check the token)", Meaning.NOT_AUTHORISED),
    0x87: ("not authorised (check the token)", Meaning.NOT_AUTHORISED),
    0x88: ("server unavailable (ThingsBoard on MQTT 3.1.1: over the connection rate)", Meaning.MAYBE_RATE_LIMITED),
    0x89: ("server busy", Meaning.SERVER_BUSY),
    0x8A: ("banned", Meaning.NOT_AUTHORISED),
    0x8B: ("server shutting down", Meaning.SERVER_BUSY),
    0x8C: ("bad authentication method", Meaning.NOT_AUTHORISED),
    0x8D: ("keep alive timeout", Meaning.CLOSED),
    0x8E: ("session taken over (another client uses this client id)", Meaning.TAKEN_OVER),
    0x90: ("topic name invalid", Meaning.BAD_TOPIC),
    0x93: ("receive maximum exceeded", Meaning.SERVER_BUSY),
    0x95: ("packet too large", Meaning.TOO_LARGE),
    0x96: ("message rate too high", Meaning.RATE_LIMITED),
    0x97: ("quota exceeded", Meaning.RATE_LIMITED),
    0x99: ("payload format invalid", Meaning.BAD_PAYLOAD),
    0x9F: ("connection rate exceeded", Meaning.RATE_LIMITED),
}


def meaning(code: int, success: Meaning = Meaning.ACCEPTED) -> Meaning:
    """The meaning of reason ``code``; ``success`` is what a code below 0x80 means in this packet."""
    if code < 0x80:
        return success
    return FAILURES.get(code, ("", Meaning.CLOSED))[1]


def describe(code: int | None) -> str:
    if code is None:
        return "connection closed without a reason"
    name = FAILURES.get(code, ("success" if code < 0x80 else "unknown reason", None))[0]
    return f"0x{code:02X} {name}"
