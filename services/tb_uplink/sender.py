"""The MQTT sender: drains the outbox to ThingsBoard, oldest first, in its own thread.

One paho client (callback API v2) per connection; its network loop runs in this thread, so the
callbacks and the in-flight table need no locks. Rows are deleted from the outbox only when their
PUBACK comes back with success. A batch in flight is never published again on the same
connection; when a connection dies, its unacknowledged rows simply stay in the outbox and the
next connection sends them again, oldest first (ThingsBoard overwrites a repeated ts).

Failure handling:
* refused or lost connection: jittered back-off from 1 s to ``reconnect_max_s``;
* credentials rejected (CONNACK 4/5, 134/135): a configuration fault. Retries slow down to
  ``auth_retry_s`` and re-read the config file first, so a corrected token resumes delivery
  without a restart; records keep queuing meanwhile;
* rate limited (PUBACK 151, DISCONNECT 150/151, CONNACK 159): the buckets are emptied and
  sending pauses for ``rate_limit_pause_s`` instead of reconnecting and blasting;
* a batch the server answers by closing the session (or refuses in its PUBACK): the next
  connection sends those records one at a time; a single record published less than BLAME_S
  before the session closed, alone in flight, gets an attempt counted, and after
  ``dead_letter_after`` attempts (one, for "payload format invalid") it is moved to the
  dead-letter table, so one bad record cannot hold up the rest and good records are not blamed;
* a server that accepts the TCP connection but never answers CONNACK: given up after
  ``connect_timeout_s``, like a refused connection;
* acknowledged rows that cannot be deleted (a full disk): kept out of every batch and deleted
  once the disk has room, so nothing is sent twice; a damaged outbox file: the main thread is
  asked to replace it (storage.py), and this connection steps aside meanwhile.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from common.config import ConfigError, TbUplinkConfig, read_secret
from services.tb_uplink import limits
from services.tb_uplink.outbox import Outbox, OutboxCorrupt, OutboxError
from services.tb_uplink.storage import Gate

TELEMETRY = "v1/devices/me/telemetry"
ATTRIBUTES = "v1/devices/me/attributes"
RPC_REQUEST = "v1/devices/me/rpc/request/"
RPC_RESPONSE = "v1/devices/me/rpc/response/"
BLAME_S = 2.0
LOOP_S = 0.05
UNSAVED_RETRY_S = 1.0
AUTH_FAILURES = {"Bad user name or password", "Not authorized", "Bad username or password"}
RATE_FAILURES = {0x96, 0x97, 0x9F}  # message rate too high, quota exceeded, connection rate exceeded
POISON_FAILURES = {0x90, 0x95, 0x99}  # topic name invalid, packet too large, payload format invalid

log = logging.getLogger("tb_uplink.sender")


@dataclass
class InFlight:
    ids: list[int]
    sent_at: float


class Sender(threading.Thread):
    """Owns the MQTT connection. The main thread reads the status attributes and sets attributes."""

    def __init__(self, cfg: TbUplinkConfig, reload: Callable[[], TbUplinkConfig], stop: threading.Event,
                 gate: Gate | None = None):
        super().__init__(name="mqtt-sender", daemon=True)
        self.cfg, self.reload, self._halt = cfg, reload, stop
        self.gate = gate or Gate()
        self.server = f"{cfg.host}:{cfg.port}"
        self.connected = False
        self.error: str | None = None
        self.sent = 0
        self.last_ack_ts: float | None = None
        self.limits = limits.RateLimits(limits.PRESETS[cfg.rate_limits])
        self._attributes: dict = {}
        self._attributes_sent: dict | None = None
        self._client: mqtt.Client | None = None
        self._inflight: dict[int, InFlight] = {}
        self._sent_upto = 0
        self._live_sent: set[int] = set()
        self._live_high = 0  # the newest record sent live: only a record newer than it is live
        self._suspect_upto = 0
        self._rewind_to: int | None = None
        self._next_attempt = 0.0
        self._backoff = 1.0
        self._paused_until = 0.0
        self._max_bytes = cfg.batch_max_bytes
        self._window = cfg.inflight_window
        self._reload_credentials = False
        self._rpc_id = 0
        self._connect_started = 0.0
        self._unsaved_acks: set[int] = set()  # acknowledged, but the delete failed (disk full)
        self._unsaved_retry_at = 0.0

    # -- called from the main thread ---------------------------------------------------------

    def set_attributes(self, attributes: dict) -> None:
        self._attributes = dict(attributes)

    # -- the thread ----------------------------------------------------------------------------

    def run(self) -> None:
        self.gate.sender_running = True
        self.outbox: Outbox | None = None
        try:
            while not self._halt.is_set():
                try:
                    self._cycle()
                except OutboxCorrupt as e:
                    self._outbox_damaged(e)
                except Exception as e:  # the thread must not die: it is the only way records leave
                    log.exception("sender error; dropping the connection and starting again")
                    self._drop_client()
                    self._retry_later(f"sender error: {type(e).__name__}: {e}")
        finally:
            self.gate.sender_running = False
            if self._client is not None:
                self._client.disconnect()
            self.connected = False
            if self.outbox is not None:
                self.outbox.close()

    def _cycle(self) -> None:
        if self.gate.must_step_aside():
            self._close_outbox()
            self.gate.step_aside(self._halt)
            return
        if self.outbox is None:
            self.outbox = Outbox(self.cfg.outbox_path, durable=False)
        self._step()

    def _close_outbox(self) -> None:
        """Before the file is replaced: nothing in flight refers to its ids any more."""
        self._drop_client()
        self._unsaved_acks.clear()
        if self.outbox is not None:
            self.outbox.close()
            self.outbox = None

    def _outbox_damaged(self, error: OutboxCorrupt) -> None:
        log.error("%s; asking for the outbox to be replaced", error)
        self._close_outbox()
        self.gate.recovery_requested.set()
        self._retry_later(f"outbox damaged: {error}", 1.0)

    def _step(self) -> None:
        if self._client is None:
            if time.monotonic() >= self._next_attempt:
                self._connect()
            else:
                self._halt.wait(LOOP_S)
            return
        rc = self._client.loop(LOOP_S)
        if rc != mqtt.MQTT_ERR_SUCCESS and self._client is not None:
            self._lost(f"connection lost ({mqtt.error_string(rc)})")
            return
        if self._client is not None and not self.connected and \
                time.monotonic() - self._connect_started > self.cfg.connect_timeout_s:
            self._lost(f"no answer (CONNACK) from {self.server} within {self.cfg.connect_timeout_s:g} s")
            return
        if self.connected:
            self._delete_unsaved()
            self._publish_attributes()
            self._fill()

    def _delete_unsaved(self) -> None:
        if self._unsaved_acks and time.monotonic() >= self._unsaved_retry_at:
            self._unsaved_retry_at = time.monotonic() + UNSAVED_RETRY_S
            try:
                self.outbox.accept(sorted(self._unsaved_acks))
            except OutboxCorrupt:
                raise
            except OutboxError:
                return
            log.info("deleted %d acknowledged record(s) the full disk had kept", len(self._unsaved_acks))
            self._unsaved_acks.clear()

    def _credentials(self) -> tuple[str | None, str | None, str]:
        cfg = self.cfg
        if cfg.auth == "token":
            username, password = read_secret(cfg.token, cfg.token_env, cfg.token_file), None
        else:
            username, password = cfg.username, read_secret(cfg.password, None, cfg.password_file)
        return username, password, cfg.client_id or f"pace-telemetry-{socket.gethostname()}"

    def _connect(self) -> None:
        if self._reload_credentials:
            try:
                self.cfg = self.reload()
            except ConfigError as e:
                log.warning("config not reloaded: %s", e)
            self._reload_credentials = False
        cfg = self.cfg
        username, password, client_id = self._credentials()
        v5 = cfg.mqtt_protocol == "mqttv5"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, clean_session=None if v5 else True,
                             reconnect_on_failure=False)
        client.connect_timeout = cfg.connect_timeout_s
        if username is not None:
            client.username_pw_set(username, password)
        client.on_connect, client.on_publish = self._on_connect, self._on_publish
        client.on_disconnect, client.on_message = self._on_disconnect, self._on_message
        try:
            if cfg.tls:
                client.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file, keyfile=cfg.key_file,
                               cert_reqs=ssl.CERT_REQUIRED)
            client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        except (OSError, ssl.SSLError, ValueError) as e:
            self._retry_later(f"cannot connect to {self.server}: {_describe(e)}")
            return
        self._client = client
        self._connect_started = time.monotonic()

    def _retry_later(self, error: str, delay: float | None = None) -> None:
        if error != self.error:
            log.warning("%s", error)
        self.error = error
        if delay is None:
            delay = self._backoff * random.uniform(0.8, 1.2)
            self._backoff = min(self.cfg.reconnect_max_s, self._backoff * 2)
        self._next_attempt = time.monotonic() + delay

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            name = str(reason_code)
            self._drop_client()
            if name in AUTH_FAILURES:
                self._reload_credentials = True
                self._retry_later(f"credentials rejected by {self.server} ({name}); check the token, "
                                  f"retrying every {self.cfg.auth_retry_s:g} s", self.cfg.auth_retry_s)
            elif reason_code.value in RATE_FAILURES:
                self._rate_limited(f"connection refused by {self.server}: {name}")
            else:
                self._retry_later(f"connection refused by {self.server}: {name}")
            return
        log.info("connected to %s", self.server)
        self.connected, self.error, self._backoff = True, None, 1.0
        self._attributes_sent = None
        client.subscribe(RPC_RESPONSE + "+", qos=1)
        self._rpc_id += 1
        client.publish(RPC_REQUEST + str(self._rpc_id), json.dumps({"method": "getSessionLimits", "params": {}}), qos=1)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._client is client:
            detail = str(reason_code)
            if getattr(reason_code, "value", None) in RATE_FAILURES:
                self._drop_client()
                self._rate_limited(f"disconnected by {self.server}: {detail}")
            else:
                self._lost(f"disconnected from {self.server} ({detail})")

    def _lost(self, error: str) -> None:
        """The connection died. If one record alone was in flight, sent just before, it may be
        what the server refused: count an attempt against it. If more were in flight, the next
        connection sends them one record at a time, so that a culprit is found without blaming
        the others."""
        now = time.monotonic()
        batches = list(self._inflight.values())
        if len(batches) == 1 and len(batches[0].ids) == 1 and now - batches[0].sent_at <= BLAME_S:
            self._blame(batches[0].ids, error, self.cfg.dead_letter_after)
        elif batches:
            self._suspect_upto = max(self._suspect_upto, max(i for b in batches for i in b.ids))
        self._drop_client()
        self._retry_later(error)

    def _blame(self, ids: list[int], reason: str, dead_after: int) -> None:
        moved = self.outbox.reject(ids, reason, dead_after)
        if moved:
            log.warning("moved %d record(s) the server keeps refusing to the dead-letter table (%s)", moved, reason)

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        self.connected = False
        self._inflight.clear()
        self._live_sent.clear()
        self._live_high = 0
        self._sent_upto = 0
        self._rewind_to = None
        if client is not None:
            client.on_disconnect = None
            client.disconnect()

    def _rate_limited(self, error: str) -> None:
        self.limits.exhaust()
        self._paused_until = time.monotonic() + self.cfg.rate_limit_pause_s
        self._retry_later(f"{error}; rate limited, pausing {self.cfg.rate_limit_pause_s:g} s",
                          self.cfg.rate_limit_pause_s)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        batch = self._inflight.pop(mid, None)
        if batch is None:
            return
        if not reason_code.is_failure:
            self._accept(batch.ids)
            self.sent += len(batch.ids)
            self.last_ack_ts = time.time()
            self._live_sent.difference_update(batch.ids)
            if self._suspect_upto and max(batch.ids) >= self._suspect_upto:
                self._suspect_upto = 0
            return
        if reason_code.value in RATE_FAILURES:
            self.limits.exhaust()
            self._paused_until = time.monotonic() + self.cfg.rate_limit_pause_s
            self.error = f"rate limited by {self.server} ({reason_code}); pausing {self.cfg.rate_limit_pause_s:g} s"
            log.warning("%s", self.error)
        elif len(batch.ids) == 1:
            self._blame(batch.ids, str(reason_code),
                        1 if reason_code.value in POISON_FAILURES else self.cfg.dead_letter_after)
        else:
            self._suspect_upto = max(self._suspect_upto, max(batch.ids))
        # Send the refused rows again, but only once nothing is in flight: never twice at once.
        target = min(batch.ids[0] - 1, self._sent_upto)
        self._rewind_to = target if self._rewind_to is None else min(self._rewind_to, target)

    def _accept(self, ids: list[int]) -> None:
        try:
            self.outbox.accept(ids)
        except OutboxCorrupt:
            raise
        except OutboxError as e:
            if not self._unsaved_acks:
                log.warning("%s; keeping those records out of the next batches until they can be deleted", e)
            self._unsaved_acks.update(ids)

    def _on_message(self, client, userdata, message) -> None:
        if not message.topic.startswith(RPC_RESPONSE):
            return
        try:
            reply = json.loads(message.payload)
            spec = limits.from_session_limits(reply)
        except (ValueError, limits.LimitsError, AttributeError) as e:
            log.warning("ignoring a getSessionLimits reply: %s", e)
            return
        if spec and limits.RateLimits(spec).description != self.limits.description:
            # Rebuilt only when the figures change: ThingsBoard counts per device, across sessions.
            self.limits = limits.RateLimits(spec)
        max_payload = reply.get("maxPayloadSize")
        if isinstance(max_payload, int) and max_payload > 1024:
            self._max_bytes = min(self.cfg.batch_max_bytes, int(max_payload * limits.MARGIN))
        inflight = reply.get("maxInflightMessages")
        if isinstance(inflight, int) and inflight > 0:
            self._window = max(1, min(self.cfg.inflight_window, inflight))
        log.info("session limits from %s: %s, payload <= %d B, %d in flight",
                 self.server, self.limits.description, self._max_bytes, self._window)

    def _publish_attributes(self) -> None:
        attributes = self._attributes
        if attributes and attributes != self._attributes_sent and self.limits.allow(0, telemetry=False):
            self._client.publish(ATTRIBUTES, json.dumps(attributes), qos=1)
            self._attributes_sent = attributes

    def _fill(self) -> None:
        """Publish batches while the window and the rate budget allow."""
        if time.monotonic() < self._paused_until:
            return
        if self._rewind_to is not None:
            if self._inflight:
                return
            self._sent_upto, self._rewind_to = self._rewind_to, None
            self._live_sent.clear()
        window = 1 if self._suspect_upto > self._sent_upto else self._window
        max_points = self.limits.max_points() or 1_000_000
        while len(self._inflight) < window:
            rows, live = self._next_rows(max_points)
            if not rows:
                return
            points = sum(r.points for r in rows)
            if not self.limits.allow(points):
                return
            payload = "[" + ",".join(r.payload for r in rows) + "]"
            info = self._client.publish(TELEMETRY, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return
            ids = [r.id for r in rows]
            self._inflight[info.mid] = InFlight(ids, time.monotonic())
            if live:
                self._live_sent.add(ids[0])
                self._live_high = ids[0]
            else:
                self._sent_upto = ids[-1]
                self._live_sent = {i for i in self._live_sent if i > self._sent_upto}

    def _next_rows(self, max_points: int) -> tuple[list, bool]:
        """With a limited budget the newest record goes first, so the display on the server stays
        live while a backlog drains; otherwise strictly oldest first. Returns (rows, live)."""
        if not self.limits.unlimited and not self._suspect_upto:
            newest = self.outbox.newest()
            if newest and newest.id > max(self._sent_upto, self._live_high) and newest.id not in self._unsaved_acks:
                return [newest], True
        one_by_one = self._suspect_upto > self._sent_upto
        return self.outbox.batch(self._sent_upto, self._max_bytes, max_points,
                                 skip=frozenset(self._live_sent | self._unsaved_acks),
                                 limit=1 if one_by_one else 500), False


def _describe(error: Exception) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate rejected: {error.verify_message}"
    return str(error) or type(error).__name__
