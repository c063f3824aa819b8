"""The MQTT sender: drains the outbox to ThingsBoard, oldest first, in its own thread.

A thin shell around the delivery core (delivery.py, whose rules and reason-code table,
reasons.py, decide what a PUBACK, a refusal or a close means). One paho client (callback API v2)
per connection; its network loop runs in this thread, so the callbacks and the core need no
locks. Rows are deleted from the outbox only when their PUBACK comes back with success.

Also here, because they share the session: client attributes (spending rate budget like
telemetry, since ThingsBoard counts them as telemetry), the client RPC ``getSessionLimits``,
and the messages from the server that the main thread acts on: shared attribute updates and
replies (remote settings) and server-side RPC requests, put on ``inbox``; the main thread's
replies come back through ``send``. On MQTT 5 the subscriptions use No Local, so our own
attribute publishes do not come back to us through a plain broker standing in for ThingsBoard.

Besides the core's reactions: a server that accepts the TCP connection but never answers CONNACK
is given up after ``connect_timeout_s``; acknowledged rows that cannot be deleted (a full disk)
are kept out of every batch and deleted once the disk has room; a damaged outbox file: the main
thread is asked to replace it (storage.py), and this connection steps aside meanwhile.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from common.config import ConfigError, TbUplinkConfig, read_secret
from services.tb_uplink import limits
from services.tb_uplink.delivery import Accept, Delivery, Policy, Publish, Reconnect, Reject
from services.tb_uplink.outbox import Outbox, OutboxCorrupt, OutboxError
from services.tb_uplink.storage import Gate

ATTRIBUTES = "v1/devices/me/attributes"
ATTRIBUTES_REQUEST = "v1/devices/me/attributes/request/"
ATTRIBUTES_RESPONSE = "v1/devices/me/attributes/response/"
RPC_REQUEST = "v1/devices/me/rpc/request/"
RPC_RESPONSE = "v1/devices/me/rpc/response/"
LOOP_S = 0.05
UNSAVED_RETRY_S = 1.0
OWN_RPC = "getSessionLimits"

log = logging.getLogger("tb_uplink.sender")


def policy(cfg: TbUplinkConfig) -> Policy:
    return Policy(window=cfg.inflight_window, max_bytes=cfg.batch_max_bytes, dead_letter_after=cfg.dead_letter_after,
                  pause_s=cfg.rate_limit_pause_s, reconnect_max_s=cfg.reconnect_max_s, auth_retry_s=cfg.auth_retry_s)


class Sender(threading.Thread):
    """Owns the MQTT connection. The main thread reads the status attributes, sets the client
    attributes, reads ``inbox`` and answers through ``send``."""

    def __init__(self, cfg: TbUplinkConfig, reload: Callable[[], TbUplinkConfig], stop: threading.Event,
                 gate: Gate | None = None, shared_keys: tuple[str, ...] = ()):
        super().__init__(name="mqtt-sender", daemon=True)
        self.cfg, self.reload, self._halt = cfg, reload, stop
        self.gate = gate or Gate()
        self.server = f"{cfg.host}:{cfg.port}"
        self.sent = 0
        self.thinned = 0  # records the budget planner left nothing of
        self.points_sent: collections.deque[tuple[float, int]] = collections.deque()
        self.last_ack_ts: float | None = None
        self.limits = limits.RateLimits(limits.preset(cfg.rate_limits, cfg.budget_points_per_hour))
        self.core = Delivery(None, policy(cfg), self.limits)
        self.shared_keys = shared_keys
        self.inbox: queue.Queue[tuple] = queue.Queue(maxsize=1000)
        self._outgoing: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=1000)
        self._attributes: dict = {}
        self._attributes_sent: dict | None = None
        self._client: mqtt.Client | None = None
        self._next_attempt = 0.0
        self._reload_credentials = False
        self._request_id = 0
        self._connect_started = 0.0
        self._unsaved_retry_at = 0.0
        self._error: str | None = None
        self._logged_error: str | None = None
        self._reduced: set[int] = set()

    @property
    def connected(self) -> bool:
        return self._client is not None and self.core.connected

    @property
    def error(self) -> str | None:
        """Why nothing is being sent: the last refusal or close, or a rate-limit pause in session."""
        return self.core.error if self.connected else self._error

    # -- called from the main thread ---------------------------------------------------------

    def set_attributes(self, attributes: dict) -> None:
        self._attributes = dict(attributes)

    def send(self, topic: str, payload: str) -> None:
        """Publish from this thread on the next step (an RPC reply); dropped when nobody is connected."""
        try:
            self._outgoing.put_nowait((topic, payload))
        except queue.Full:
            log.warning("dropping a reply to the server: %d are waiting already", self._outgoing.qsize())

    def set_shape(self, shape, commit, reduced: set[int] | None = None) -> None:
        """How rows become payloads (the budget planner's thinning), the call that says they go,
        and the ids of rows that go only in part (kept whole once acknowledged); set before the
        thread starts."""
        self.core.shape, self.core.commit = shape, commit
        self._reduced = set() if reduced is None else reduced

    def _delete(self, ids: list[int]) -> None:
        """Acknowledged rows out of the outbox; those the server got only part of are kept whole."""
        self.outbox.accept(ids, [i for i in ids if i in self._reduced])
        self._reduced.difference_update(ids)

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
                    self._wait(Reconnect(self.core.backoff_s, f"sender error: {type(e).__name__}: {e}"))
        finally:
            self.gate.sender_running = False
            if self._client is not None:
                self._client.disconnect()
            if self.outbox is not None:
                self.outbox.close()

    def _cycle(self) -> None:
        if self.gate.must_step_aside():
            self._close_outbox()
            self.gate.step_aside(self._halt)
            return
        if self.outbox is None:
            self.outbox = self.core.outbox = Outbox(self.cfg.outbox_path, durable=False)
        self._step()

    def _close_outbox(self) -> None:
        """Before the file is replaced: nothing in flight refers to its ids any more."""
        self._drop_client()
        self.core.unsaved.clear()
        self._reduced.clear()
        self.core.suspect_upto = 0  # ids of the old file: the new one numbers its rows afresh
        if self.outbox is not None:
            self.outbox.close()
            self.outbox = self.core.outbox = None

    def _outbox_damaged(self, error: OutboxCorrupt) -> None:
        log.error("%s; asking for the outbox to be replaced", error)
        self._close_outbox()
        self.gate.recovery_requested.set()
        self._wait(Reconnect(1.0, f"outbox damaged: {error}"))

    def _step(self) -> None:
        if self._client is None:
            if time.monotonic() >= self._next_attempt:
                self._connect()
            else:
                self._halt.wait(LOOP_S)
            return
        rc = self._client.loop(LOOP_S)
        if rc != mqtt.MQTT_ERR_SUCCESS and self._client is not None:
            self._closed(None, f"connection to {self.server} lost ({mqtt.error_string(rc)})")
            return
        if self._client is not None and not self.core.connected and \
                time.monotonic() - self._connect_started > self.cfg.connect_timeout_s:
            self._closed(None, f"no answer (CONNACK) from {self.server} within {self.cfg.connect_timeout_s:g} s")
            return
        if self.connected:
            self._delete_unsaved()
            self._send_outgoing()
            self._publish_attributes()
            self._fill()

    def _delete_unsaved(self) -> None:
        unsaved = self.core.unsaved
        if unsaved and time.monotonic() >= self._unsaved_retry_at:
            self._unsaved_retry_at = time.monotonic() + UNSAVED_RETRY_S
            try:
                self._delete(sorted(unsaved))
            except OutboxCorrupt:
                raise
            except OutboxError:
                return
            log.info("deleted %d acknowledged record(s) the full disk had kept", len(unsaved))
            unsaved.clear()

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
            self._wait(self.core.closed(None, time.monotonic(), f"cannot connect to {self.server}: {_describe(e)}")[-1])
            return
        self._client = client
        self._connect_started = time.monotonic()

    def _wait(self, action: Reconnect) -> None:
        """Stay disconnected for ``after_s``; say why once (the same error is not logged again)."""
        self._log_once(action.error)
        self._error = action.error
        self._reload_credentials = self._reload_credentials or action.reload_credentials
        self._next_attempt = time.monotonic() + action.after_s

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._drop_client()
            self._wait(self.core.refused(reason_code.value, self.server, time.monotonic()))
            return
        log.info("connected to %s", self.server)
        self._logged_error = self._error = None
        self.core.connected_now()
        self._attributes_sent = None
        v5 = self.cfg.mqtt_protocol == "mqttv5"
        topics = (RPC_RESPONSE + "+", RPC_REQUEST + "+", ATTRIBUTES, ATTRIBUTES_RESPONSE + "+")
        client.subscribe([(t, SubscribeOptions(qos=1, noLocal=True) if v5 else 1) for t in topics])
        self._request(RPC_REQUEST, {"method": OWN_RPC, "params": {}})
        if self.shared_keys:
            self._request(ATTRIBUTES_REQUEST, {"sharedKeys": ",".join(self.shared_keys)})

    def _request(self, prefix: str, body: dict) -> None:
        self._request_id += 1
        self._client.publish(prefix + str(self._request_id), json.dumps(body), qos=1)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._client is client:
            from_server = getattr(flags, "is_disconnect_packet_from_server", False)
            self._closed(reason_code.value if from_server else None, f"disconnected from {self.server}")

    def _closed(self, code: int | None, detail: str) -> None:
        actions = self.core.closed(code, time.monotonic(), detail)
        self._drop_client()
        for action in actions:
            if isinstance(action, Reject):
                self._reject(action)
            else:
                self._wait(action)

    def _reject(self, action: Reject) -> None:
        self._reduced.difference_update(action.ids)  # shaped again when sent again
        moved = self.outbox.reject(list(action.ids), action.reason, action.dead_after)
        if moved:
            log.warning("moved %d record(s) the server refuses to the dead-letter table (%s)", moved, action.reason)

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        self.core.abandon()
        if client is not None:
            client.on_disconnect = None
            client.disconnect()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        for action in self.core.acked(mid, reason_code.value, time.monotonic()):
            if isinstance(action, Accept):
                self._accept(action)
            else:
                self._reject(action)
        if self.core.paused_until > time.monotonic():
            self._log_once(self.core.error)

    def _log_once(self, error: str | None) -> None:
        if error and error != self._logged_error:
            log.warning("%s", error)
            self._logged_error = error

    def _accept(self, action: Accept) -> None:
        ids = list(action.ids)
        self.sent += len(ids)
        self.last_ack_ts = time.time()
        try:
            self._delete(ids)
        except OutboxCorrupt:
            raise
        except OutboxError as e:
            if not self.core.unsaved:
                log.warning("%s; keeping those records out of the next batches until they can be deleted", e)
            self.core.unsaved.update(ids)

    def _on_message(self, client, userdata, message) -> None:
        topic = message.topic
        try:
            body = json.loads(message.payload)
        except ValueError:
            log.warning("ignoring a message on %s that is not JSON", topic)
            return
        if topic.startswith(RPC_RESPONSE):
            self._session_limits(body)
        elif topic.startswith(RPC_REQUEST):
            if isinstance(body, dict) and body.get("method") != OWN_RPC:
                self._to_main(("rpc", topic[len(RPC_REQUEST):], body))
        elif topic == ATTRIBUTES or topic.startswith(ATTRIBUTES_RESPONSE):
            shared = body.get("shared", {}) if topic != ATTRIBUTES and isinstance(body, dict) else body
            self._to_main(("settings", shared, topic != ATTRIBUTES))

    def _to_main(self, item: tuple) -> None:
        try:
            self.inbox.put_nowait(item)
        except queue.Full:
            log.warning("the main thread is not taking server messages; dropping one")

    def _session_limits(self, reply) -> None:
        try:
            spec = limits.from_session_limits(reply)
        except (limits.LimitsError, AttributeError) as e:
            log.warning("ignoring a getSessionLimits reply: %s", e)
            return
        if spec and limits.RateLimits(spec).description != self.limits.description:
            # Rebuilt only when the figures change: ThingsBoard counts per device, across sessions.
            self.limits = self.core.limits = limits.RateLimits(spec)
        payload, inflight = reply.get("maxPayloadSize"), reply.get("maxInflightMessages")
        self.core.session_limits(payload if isinstance(payload, int) else None,
                                 inflight if isinstance(inflight, int) else None)
        log.info("session limits from %s: %s, payload <= %d B, %d in flight",
                 self.server, self.limits.description, self.core.max_bytes, self.core.window)

    def _send_outgoing(self) -> None:
        while True:
            try:
                topic, payload = self._outgoing.get_nowait()
            except queue.Empty:
                return
            self._client.publish(topic, payload, qos=1)

    def _publish_attributes(self) -> None:
        """Client attributes spend budget like telemetry (ThingsBoard counts them so); they wait
        while the first record after a pause probes whether the server is ready again."""
        attributes = self._attributes
        if attributes and attributes != self._attributes_sent and not self.core.probing and \
                self.limits.allow(len(attributes)):
            self._client.publish(ATTRIBUTES, json.dumps(attributes), qos=1)
            self._attributes_sent = attributes
            self._count_points(len(attributes))

    def _fill(self) -> None:
        """Publish batches while the core has them for us."""
        while self._client is not None:
            action = self.core.next(time.monotonic())
            if action is None:
                return
            if isinstance(action, Reject):
                self._reject(action)
            elif isinstance(action, Accept):
                self._thinned(action)
            elif not self._publish(action):
                return

    def _thinned(self, action: Accept) -> None:
        """Records whose keys are all due later: not sent, kept whole (``kept``)."""
        self.thinned += len(action.ids)
        try:
            self._delete(list(action.ids))
        except OutboxCorrupt:
            raise
        except OutboxError:
            self.core.unsaved.update(action.ids)

    def _publish(self, action: Publish) -> bool:
        info = self._client.publish(action.topic, action.payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        self.core.sent(info.mid, action, time.monotonic())
        self._count_points(action.points)
        return True

    def _count_points(self, points: int) -> None:
        now = time.monotonic()
        self.points_sent.append((now, points))
        while self.points_sent and self.points_sent[0][0] < now - 3600:
            self.points_sent.popleft()

    def points_last_hour(self) -> int:
        """Data points published in the last hour (read by the main thread: a copy, no lock)."""
        now = time.monotonic()
        return sum(n for at, n in list(self.points_sent) if at >= now - 3600)


def _describe(error: Exception) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate rejected: {error.verify_message}"
    return str(error) or type(error).__name__
