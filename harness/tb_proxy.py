"""A ThingsBoard stand-in: an MQTT proxy in front of a real Mosquitto that applies ThingsBoard's
device rules (rate limits, connection refusal, size limit, payload and topic checks).

No ThingsBoard server can run here, so the tests put this proxy between the uplink (a paho client,
MQTT 5 or 3.1.1) and a private Mosquitto. Bytes are relayed both ways; both streams are parsed for
packet framing, so the proxy can put a packet of its own (PUBACK, DISCONNECT, PUBLISH) into the
stream to the client between two whole packets of Mosquitto's. The rules are those of ThingsBoard's
source (thingsboard/thingsboard, master of 2026-07-02, read for this module):

- ``common/transport/mqtt/.../MqttTransportHandler.java`` (``processDevicePublish``, ``closeCtx``,
  ``ack``, ``sendResponseForAdaptorErrorOrCloseContext``, ``onValidateDeviceResponse``,
  ``processSubscribe``, ``doDisconnect``, ``onGetSessionLimitsRpc``) and ``util/ReturnCodeResolver``;
- ``common/transport/transport-api/.../DefaultTransportService.java`` (``checkLimits``) and
  ``limits/DefaultTransportRateLimitService.java`` (``checkEntityRateLimit``);
- ``common/message/.../tools/TbRateLimits.java`` (bucket4j, ``refillGreedy``);
- ``MqttTransportServerInitializer.java`` (``new MqttDecoder(max_payload_size)``, 65536 by default in
  ``thingsboard.yml``) and netty's ``MqttDecoder`` (netty 4.1.135);
- ``common/proto/.../adaptor/JsonConverter.java`` and ``adaptors/JsonMqttAdaptor.java`` (what a
  data point is, what payload is invalid).

What the proxy does, rule by rule (v5 = an MQTT 5 session, v3 = MQTT 3.1.1):

1. Rate limits, per device (the CONNECT user name, else the client id), kept in the proxy across
   sessions. Three kinds, each "count:seconds,..." with every pair applying at once: ``messages``,
   ``telemetry_messages``, ``telemetry_points`` (ThingsBoard's names ``telemetryMessages`` and
   ``telemetryDataPoints`` are accepted too). Each is a bucket4j-style token bucket per pair:
   capacity ``count``, refilled greedily (continuously) at ``count`` per ``seconds``, starting full;
   a consumption takes from every pair or from none, and ``n`` more than a capacity never succeeds.
   As ``checkEntityRateLimit`` does, a PUBLISH with data points > 0 takes 1 telemetry message and
   then its points (the message token is spent even when the points then run out); anything with
   no data points takes 1 ``messages`` token: CONNECT (the session OPEN event), a PUBLISH to a
   request/response/claim topic or a telemetry publish with no points, a SUBSCRIBE to the
   attributes or RPC-request topic (failure there is silent), the end of an accepted session
   (silent). So, as in ThingsBoard, telemetry with points does *not* spend ``messages``. A
   PUBLISH over a limit is not forwarded and gets no PUBACK; v5: DISCONNECT 0x83, then close; v3:
   the connection is closed (``closeCtx(IMPLEMENTATION_SPECIFIC_ERROR)``). ``rate_close=
   "disconnect" | "bare"`` overrides that.
2. Connection refusal: ``refuse_connects(n)`` refuses the next n CONNECTs, ``refuse_connect = True``
   all of them, and an empty ``messages`` bucket refuses one as ThingsBoard's rate limit does: v5
   CONNACK 0x9F then DISCONNECT 0x96 (``MESSAGE_RATE_TOO_HIGH``), v3 CONNACK 3 (server
   unavailable), then close. Session present is set to ``not clean_start`` as ThingsBoard does.
   A refused CONNECT never reaches Mosquitto.
3. Size: netty's decoder rejects a packet whose *remaining length* (variable header and payload:
   topic, its 2-byte length, packet id, v5 properties, payload) exceeds ``max_payload``, once the
   whole packet has arrived; ThingsBoard then closes with MALFORMED_PACKET: v5 DISCONNECT 0x81,
   v3 bare close. Not forwarded. The same close follows any packet the decoder rejects (bad
   remaining length, invalid UTF-8 or a wildcard in a PUBLISH topic, packet id 0 with QoS > 0).
4. Payload: a PUBLISH to ``v1/devices/me/telemetry`` or ``.../attributes`` that is not JSON, or
   not the shape ThingsBoard converts (attributes: an object; telemetry: an object, an object
   ``{"ts", "values": {...}}``, or a list of those), is not forwarded; with QoS > 0 on v5 (or on
   v3 with ``send_ack_on_validation_exception``, a device profile setting) it gets PUBACK 0x99
   (plain PUBACK on v3) and the session stays; otherwise v5 DISCONNECT 0x99, v3 bare close.
5. Topic: a PUBLISH to none of ``v1/devices/me/telemetry``, ``.../attributes``,
   ``.../attributes/request/<id>``, ``.../rpc/request/<id>``, ``.../rpc/response/<id>``,
   ``.../claim`` is not forwarded; QoS > 0 gets PUBACK 0x90 on v5 and a *plain PUBACK* on v3
   (``ack(ctx, msgId, TOPIC_NAME_INVALID)``: on 3.1.1 the reason code is dropped, so it looks like
   success), QoS 0 gets nothing; the session stays and no token is spent.
6. ``getSessionLimits``: a PUBLISH to ``v1/devices/me/rpc/request/<id>`` with method
   ``getSessionLimits`` is answered by the proxy as ThingsBoard does (PUBACK, then a QoS 0 PUBLISH
   to ``v1/devices/me/rpc/response/<id>`` with ``{"maxPayloadSize", "maxInflightMessages",
   "rateLimits": {"messages", "telemetryMessages", "telemetryDataPoints"}}``, unset limits null)
   and spends no token.
7. Everything else (SUBSCRIBE, PINGREQ, PUBACK, DISCONNECT, accepted PUBLISHes) is forwarded
   unchanged, and so is everything from Mosquitto to the client.

Data points are counted as ``JsonConverter`` does: the keys of an attributes object, the keys of
a telemetry object (or of its ``values`` when it has both ``ts`` and ``values``), summed over a
list; keys whose value is null are not data points. Not reproduced: Gson's lenient parsing (it
takes some non-JSON, such as unquoted names, that the proxy rejects), ThingsBoard's v2 short topics
and firmware topics (answered as unknown here), tenant-wide limits, subscription checks (Mosquitto
grants every SUBSCRIBE), and the validation of request/RPC/claim payloads (forwarded as they are).

API::

    proxy = TbProxy(upstream_port=mq.port, limits={"telemetry_points": "100:1,2000:60"},
                    max_payload=65536, rate_close=None, send_ack_on_validation_exception=False,
                    max_inflight=100, port=0)
    proxy.port                       # the loopback port it listens on
    proxy.set_limits({...})          # a kind whose spec changed gets a new, full bucket
    proxy.refuse_connects(n); proxy.refuse_connect = True
    proxy.stats() -> dict            # counters, see Stats below
    proxy.connect_times              # monotonic time of every TCP connection accepted
    proxy.sessions() -> list[dict]   # per connection: accepted, closed, version, outcome
    proxy.points_log() -> list[(monotonic time, points)] of every forwarded telemetry/attributes
    max_in_window(proxy.points_log(), 3600)   # the most points any sliding hour saw
    proxy.tokens(device, kind)       # tokens left in a device's bucket (None: unlimited)
    proxy.drop_connections()         # close every connection bare, as a network failure would
    proxy.close()                    # also a context manager

Every read is a copy taken under the proxy's lock, so tests may poll from any thread.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, DISCONNECT = 1, 2, 3, 4, 8, 14

TELEMETRY = "v1/devices/me/telemetry"
ATTRIBUTES = "v1/devices/me/attributes"
RPC_REQUEST = "v1/devices/me/rpc/request/"
RPC_RESPONSE = "v1/devices/me/rpc/response/"
KNOWN_PREFIXES = ("v1/devices/me/attributes/request/", RPC_REQUEST, RPC_RESPONSE)
CLAIM = "v1/devices/me/claim"
# Subscriptions that make ThingsBoard send a session message (and so spend a `messages` token).
COUNTED_SUBSCRIPTIONS = (ATTRIBUTES, RPC_REQUEST + "+")

KINDS = ("messages", "telemetry_messages", "telemetry_points")
ALIASES = {"telemetryMessages": "telemetry_messages", "telemetryDataPoints": "telemetry_points"}

# Reason codes (MQTT 5) and 3.1.1 return codes the proxy sends.
IMPLEMENTATION_SPECIFIC_ERROR = 0x83
MALFORMED_PACKET = 0x81
PAYLOAD_FORMAT_INVALID = 0x99
TOPIC_NAME_INVALID = 0x90
CONNECTION_RATE_EXCEEDED = 0x9F
MESSAGE_RATE_TOO_HIGH = 0x96
SERVER_UNAVAILABLE_V3 = 0x03


class InvalidPayload(ValueError):
    """A payload ThingsBoard's JSON adaptor would not convert."""


class Malformed(ValueError):
    """A packet netty's MqttDecoder would reject."""


# --- rate limits -------------------------------------------------------------------------------

def parse_limits(spec: str) -> list[tuple[int, float]]:
    """ThingsBoard's "count:seconds,..." -> [(count, seconds), ...] (ValueError when malformed)."""
    pairs = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        count, seconds = part.split(":")
        pair = (int(count), float(seconds))
        if pair[0] <= 0 or pair[1] <= 0:
            raise ValueError(f"bad rate limit {part!r} in {spec!r}")
        pairs.append(pair)
    if not pairs:
        raise ValueError(f"no rate limit in {spec!r}")
    return pairs


class Bucket:
    """A bucket4j local bucket as TbRateLimits builds it: one bandwidth per pair, each starting
    full and refilled greedily (continuously) at capacity per period; a consumption takes from
    every bandwidth or from none."""

    def __init__(self, spec: str, clock: Callable[[], float] = time.monotonic):
        self.spec, self.clock = spec, clock
        self._bands = [[float(count), float(count), seconds] for count, seconds in parse_limits(spec)]
        self._at = clock()

    def _refill(self) -> None:
        now = self.clock()
        elapsed, self._at = max(0.0, now - self._at), now
        for band in self._bands:
            capacity, _, seconds = band
            band[1] = min(capacity, band[1] + elapsed * capacity / seconds)

    def try_consume(self, n: int = 1) -> bool:
        self._refill()
        if any(tokens < n for _, tokens, _ in self._bands):
            return False
        for band in self._bands:
            band[1] -= n
        return True

    def tokens(self) -> float:
        self._refill()
        return min(tokens for _, tokens, _ in self._bands)


def _normalise(limits: dict[str, str | None] | None) -> dict[str, str]:
    out = {}
    for key, spec in (limits or {}).items():
        kind = ALIASES.get(key, key)
        if kind not in KINDS:
            raise ValueError(f"unknown rate limit kind {key!r} (one of {KINDS})")
        if spec:
            parse_limits(spec)
            out[kind] = spec
    return out


# --- payloads ----------------------------------------------------------------------------------

def _kv_count(values) -> int:
    if not isinstance(values, dict):
        raise InvalidPayload(f"not an object: {values!r:.80}")
    return sum(value is not None for value in values.values())


def _telemetry_points(element) -> int:
    if isinstance(element, list):
        if not all(isinstance(e, dict) for e in element):
            raise InvalidPayload("a telemetry list holds a non-object")
        return sum(_telemetry_points(e) for e in element)
    if isinstance(element, dict) and "ts" in element and "values" in element:
        if isinstance(element["ts"], bool) or not isinstance(element["ts"], int | float | str):
            raise InvalidPayload(f"bad ts {element['ts']!r:.40}")
        return _kv_count(element["values"])
    return _kv_count(element)


def data_points(topic: str, payload: bytes) -> int:
    """The data points ThingsBoard counts for a telemetry or attributes publish (InvalidPayload
    when its JSON adaptor would fail)."""
    try:
        element = json.loads(payload.decode("utf-8", errors="replace"))
    except ValueError as e:
        raise InvalidPayload(str(e)) from None
    return _kv_count(element) if topic == ATTRIBUTES else _telemetry_points(element)


def is_known_topic(topic: str) -> bool:
    return topic in (TELEMETRY, ATTRIBUTES, CLAIM) or topic.startswith(KNOWN_PREFIXES)


def max_in_window(events: Iterable[tuple[float, int]], window_s: float) -> int:
    """The largest sum of counts within any window of ``window_s`` (events: (time, count))."""
    events = sorted(events)
    best = total = start = 0
    for t, count in events:
        total += count
        while events[start][0] <= t - window_s:
            total -= events[start][1]
            start += 1
        best = max(best, total)
    return best


# --- wire format -------------------------------------------------------------------------------

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it) of the variable byte integer at ``pos``."""
    value = 0
    for i in range(4):
        if pos + i >= len(data):
            raise Malformed("truncated variable byte integer")
        value |= (data[pos + i] & 0x7F) << (7 * i)
        if not data[pos + i] & 0x80:
            return value, pos + i + 1
    raise Malformed("variable byte integer longer than 4 bytes")


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(data):
        raise Malformed("truncated string length")
    (length,) = struct.unpack_from("!H", data, pos)
    if pos + 2 + length > len(data):
        raise Malformed("string runs past the packet")
    return data[pos + 2:pos + 2 + length], pos + 2 + length


def puback(packet_id: int, reason: int, v5: bool) -> bytes:
    if v5 and reason:
        return bytes([0x40, 0x04]) + struct.pack("!H", packet_id) + bytes([reason, 0x00])
    return bytes([0x40, 0x02]) + struct.pack("!H", packet_id)


def disconnect(reason: int) -> bytes:
    return bytes([0xE0, 0x02, reason, 0x00])


def connack(return_code: int, session_present: bool, v5: bool) -> bytes:
    if v5:
        return bytes([0x20, 0x03, int(session_present), return_code, 0x00])
    return bytes([0x20, 0x02, int(session_present), return_code])


def publish_qos0(topic: str, payload: bytes, v5: bool) -> bytes:
    name = topic.encode()
    body = struct.pack("!H", len(name)) + name + (b"\x00" if v5 else b"") + payload
    return bytes([0x30]) + varint(len(body)) + body


class Publish:
    """The parts of a PUBLISH the rules look at."""

    def __init__(self, first: int, body: bytes, v5: bool):
        self.qos = (first >> 1) & 0x03
        if self.qos == 3:
            raise Malformed("QoS 3")
        raw, pos = _string(body, 0)
        try:
            self.topic = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed("topic is not UTF-8") from None
        if "+" in self.topic or "#" in self.topic:
            raise Malformed("wildcard in a publish topic")
        self.packet_id = 0
        if self.qos:
            if pos + 2 > len(body):
                raise Malformed("truncated packet id")
            (self.packet_id,) = struct.unpack_from("!H", body, pos)
            pos += 2
            if not self.packet_id:
                raise Malformed("packet id 0")
        if v5:
            length, pos = _read_varint(body, pos)
            pos += length
            if pos > len(body):
                raise Malformed("properties run past the packet")
        self.payload = body[pos:]


class Connect:
    """Protocol level, clean-start flag and device name of a CONNECT."""

    def __init__(self, body: bytes):
        _, pos = _string(body, 0)
        if pos + 4 > len(body):
            raise Malformed("truncated CONNECT")
        self.level, flags = body[pos], body[pos + 1]
        self.v5, self.clean = self.level == 5, bool(flags & 0x02)
        pos += 4
        if self.v5:
            length, pos = _read_varint(body, pos)
            pos += length
        client_id, pos = _string(body, pos)
        if flags & 0x04:
            pos = self._skip_will(body, pos)
        user = _string(body, pos)[0] if flags & 0x80 else b""
        self.device = (user or client_id).decode("utf-8", errors="replace")

    def _skip_will(self, body: bytes, pos: int) -> int:
        if self.v5:
            length, pos = _read_varint(body, pos)
            pos += length
        _, pos = _string(body, pos)
        return _string(body, pos)[1]


def subscribe_filters(body: bytes, v5: bool) -> list[str]:
    pos = 2
    if v5:
        length, pos = _read_varint(body, pos)
        pos += length
    filters = []
    while pos < len(body):
        raw, pos = _string(body, pos)
        filters.append(raw.decode("utf-8", errors="replace"))
        pos += 1
    return filters


class Reader:
    """Whole MQTT packets from a socket."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, bytearray()

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise EOFError
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def skip(self, n: int) -> None:
        while n:
            step = min(n, 1 << 20)
            self.exact(step)
            n -= step

    def packet(self, limit: int | None = None) -> tuple[int, bytes, bytes | None]:
        """(first byte, the whole packet, its body); the body is None (and the bytes were read
        and dropped) when the remaining length exceeds ``limit``."""
        header = self.exact(1)
        for _ in range(4):
            header += self.exact(1)
            if not header[-1] & 0x80:
                break
        else:
            raise Malformed("remaining length longer than 4 bytes")
        remaining, _ = _read_varint(header, 1)
        if limit is not None and remaining > limit:
            self.skip(remaining)
            return header[0], header, None
        body = self.exact(remaining)
        return header[0], header + body, body


def _shut(sock: socket.socket | None, how: int = socket.SHUT_RDWR) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(how)
    except OSError:
        pass


# --- one connection ----------------------------------------------------------------------------

class Session:
    """One client connection: the client's packets are read and judged in the thread that
    accepted it; Mosquitto's are relayed by a second thread started once the CONNECT went up."""

    def __init__(self, proxy: TbProxy, client: socket.socket, accepted: float):
        self.proxy, self.client = proxy, client
        self.upstream: socket.socket | None = None
        self.v5 = False
        self.device = ""
        self.connected = False
        self.ended = False  # nothing more goes to the client
        self._finished = False  # end() has run
        # write_lock keeps the client stream whole packets; state_lock guards ended and record, so
        # that end() never waits for a write blocked on a client that stopped reading.
        self.write_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.record = {"accepted": accepted, "closed": None, "version": None, "device": None,
                       "outcome": None}
        self.threads = [threading.Thread(target=self.run, daemon=True, name="tb-proxy-client")]

    # The client side.

    def run(self) -> None:
        try:
            self._serve()
        except Malformed:
            self.proxy._count("malformed_closes")
            self.close_with(MALFORMED_PACKET, "malformed")
        except (OSError, EOFError):
            pass
        finally:
            self.end("client closed")
            self._release()

    def _release(self) -> None:
        """Close the sockets, here only: other threads merely shut them down, because closing a
        descriptor that another thread is waiting on leaves that thread waiting out its timeout."""
        for pump in self.threads[1:]:
            pump.join(30)
        for sock in (self.upstream, self.client):
            if sock is not None:
                sock.close()

    def _serve(self) -> None:
        reader = Reader(self.client)
        first, _, body = reader.packet(self.proxy.max_payload)
        if first >> 4 != CONNECT or body is None:
            self.proxy._count("size_closes" if body is None else "malformed_closes")
            return self.end("size" if body is None else "no CONNECT")
        if not self._connect(Connect(body), body):
            return
        while not self.ended:
            first, packet, body = reader.packet(self.proxy.max_payload)
            if body is None:
                self.proxy._count("size_closes")
                return self.close_with(MALFORMED_PACKET, "size")
            self._handle(first, packet, body)

    def _connect(self, connect: Connect, body: bytes) -> bool:
        self.v5, self.device = connect.v5, connect.device
        self.record.update(version=5 if connect.v5 else connect.level, device=connect.device)
        if self.proxy._refuse(connect.device):
            code = CONNECTION_RATE_EXCEEDED if self.v5 else SERVER_UNAVAILABLE_V3
            with self.write_lock:
                self.client.sendall(connack(code, not connect.clean, self.v5))
            self.close_with(MESSAGE_RATE_TOO_HIGH, "refused")
            return False
        try:
            self.upstream = socket.create_connection(("127.0.0.1", self.proxy.upstream_port), timeout=30)
        except OSError:
            self.end("upstream unavailable")
            return False
        self.upstream.settimeout(None)
        self.upstream.sendall(bytes([CONNECT << 4]) + varint(len(body)) + body)
        self.connected = True
        self.proxy._count("connects")
        pump = threading.Thread(target=self._pump, daemon=True, name="tb-proxy-upstream")
        self.threads.append(pump)
        pump.start()
        return True

    def _handle(self, first: int, packet: bytes, body: bytes) -> None:
        kind = first >> 4
        if kind == PUBLISH:
            return self._publish(Publish(first, body, self.v5), packet)
        if kind == SUBSCRIBE:
            for topic in subscribe_filters(body, self.v5):
                if topic in COUNTED_SUBSCRIPTIONS:
                    self.proxy._charge(self.device, 0)
        self.upstream.sendall(packet)

    def _publish(self, msg: Publish, packet: bytes) -> None:
        if not is_known_topic(msg.topic):
            return self._unknown_topic(msg)
        points = 0
        if msg.topic in (TELEMETRY, ATTRIBUTES):
            try:
                points = data_points(msg.topic, msg.payload)
            except InvalidPayload:
                return self._bad_payload(msg)
        elif self._session_limits_rpc(msg):
            return None
        over = self.proxy._charge(self.device, points)
        if over:
            self.proxy._rate_limited(over)
            return self.close_with(IMPLEMENTATION_SPECIFIC_ERROR, "rate limit", rate_rule=True)
        self.upstream.sendall(packet)
        self.proxy._forwarded(msg.topic, points)

    def _unknown_topic(self, msg: Publish) -> None:
        if msg.qos:
            self.inject(puback(msg.packet_id, TOPIC_NAME_INVALID, self.v5))
            self.proxy._count("unknown_topic_acks")
        else:
            self.proxy._count("unknown_topic_drops")

    def _bad_payload(self, msg: Publish) -> None:
        if msg.qos and (self.v5 or self.proxy.send_ack_on_validation_exception):
            self.inject(puback(msg.packet_id, PAYLOAD_FORMAT_INVALID, self.v5))
            self.proxy._count("bad_payload_acks")
            return
        self.proxy._count("bad_payload_closes")
        self.close_with(PAYLOAD_FORMAT_INVALID, "bad payload")

    def _session_limits_rpc(self, msg: Publish) -> bool:
        if not msg.topic.startswith(RPC_REQUEST):
            return False
        try:
            request = json.loads(msg.payload)
        except ValueError:
            return False
        if not isinstance(request, dict) or request.get("method") != "getSessionLimits":
            return False
        if msg.qos:
            self.inject(puback(msg.packet_id, 0, self.v5))
        reply = json.dumps(self.proxy._session_limits()).encode()
        self.inject(publish_qos0(RPC_RESPONSE + msg.topic[len(RPC_REQUEST):], reply, self.v5))
        self.proxy._count("session_limits_replies")
        return True

    # The Mosquitto side.

    def _pump(self) -> None:
        reader = Reader(self.upstream)
        try:
            while not self.ended:
                _, packet, _ = reader.packet()
                self.inject(packet)
        except (OSError, EOFError, Malformed):
            pass
        if not self.ended:  # else the proxy is closing the session itself and drains the client
            self.end("upstream closed")

    # Writing and closing.

    def inject(self, packet: bytes) -> None:
        """Write a whole packet to the client, between two whole packets of Mosquitto's."""
        with self.write_lock:
            if not self.ended:
                self.client.sendall(packet)

    def close_with(self, reason: int, outcome: str, rate_rule: bool = False) -> None:
        """Close as ThingsBoard's closeCtx does: DISCONNECT ``reason`` first on v5, a bare close
        on 3.1.1 (``rate_close`` overrides either for the rate-limit rule)."""
        mode = self.proxy.rate_close if rate_rule else None
        send = self.v5 if mode is None else mode == "disconnect"
        with self.write_lock:
            with self.state_lock:
                if self.ended:
                    return
                self.record.update(outcome=outcome, closed=time.monotonic())
                self.ended = True
            try:
                if send:
                    self.client.sendall(disconnect(reason))
            except OSError:
                pass
        self._finish_close()

    def _finish_close(self) -> None:
        """Leave Mosquitto with a clean DISCONNECT (no will is published, as ThingsBoard has
        none), send FIN to the client, and read until it hangs up: closing with unread input
        would send a RST, which can destroy the DISCONNECT before the client reads it."""
        if self.upstream is not None:
            try:
                self.upstream.sendall(b"\xe0\x00")
            except OSError:
                pass
        _shut(self.upstream)
        _shut(self.client, socket.SHUT_WR)
        try:
            self.client.settimeout(10)
            while self.client.recv(65536):
                pass
        except OSError:
            pass
        self.end(self.record["outcome"])

    def end(self, outcome: str) -> None:
        with self.state_lock:
            if self._finished:
                return
            self._finished = self.ended = True
            self.record["closed"] = self.record["closed"] or time.monotonic()
            self.record["outcome"] = self.record["outcome"] or outcome
        _shut(self.upstream)
        _shut(self.client)
        if self.connected:
            self.proxy._charge(self.device, 0)  # ThingsBoard's session CLOSED event, silently


# --- the proxy ---------------------------------------------------------------------------------

class TbProxy:
    """See the module docstring."""

    def __init__(self, upstream_port: int, limits: dict[str, str | None] | None = None,
                 max_payload: int = 65536, rate_close: str | None = None,
                 send_ack_on_validation_exception: bool = False, max_inflight: int = 100,
                 port: int = 0, clock: Callable[[], float] = time.monotonic):
        if rate_close not in (None, "disconnect", "bare"):
            raise ValueError(f"rate_close must be None, 'disconnect' or 'bare', not {rate_close!r}")
        self.upstream_port, self.max_payload, self.rate_close = upstream_port, max_payload, rate_close
        self.send_ack_on_validation_exception, self.max_inflight = send_ack_on_validation_exception, max_inflight
        self.clock = clock
        self.refuse_connect = False
        self._lock = threading.Lock()
        self._limits = _normalise(limits)
        self._buckets: dict[str, dict[str, Bucket]] = {}
        self._refuse_next = 0
        self._counts: Counter[str] = Counter()
        self._rate_kinds: Counter[str] = Counter()
        self._points: list[tuple[float, int]] = []
        self._sessions: list[Session] = []
        self._closed = False
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._accepter = threading.Thread(target=self._accept, daemon=True, name="tb-proxy-accept")
        self._accepter.start()

    def __enter__(self) -> TbProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Control.

    def set_limits(self, limits: dict[str, str | None] | None) -> None:
        """New limits for every device; as ThingsBoard merges a profile update, a kind whose
        spec changed starts again with a full bucket and the others keep theirs."""
        new = _normalise(limits)
        with self._lock:
            for buckets in self._buckets.values():
                for kind in KINDS:
                    if new.get(kind) != self._limits.get(kind):
                        buckets.pop(kind, None)
                        if kind in new:
                            buckets[kind] = Bucket(new[kind], self.clock)
            self._limits = new

    def refuse_connects(self, n: int) -> None:
        with self._lock:
            self._refuse_next += n

    def drop_connections(self) -> None:
        """Close every open connection without a word, as a network failure would."""
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.end("dropped")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sessions = list(self._sessions)
        _shut(self._listener)
        self._listener.close()
        for session in sessions:
            session.end("proxy closed")
        self._accepter.join(10)
        for session in sessions:
            for thread in session.threads:
                if thread.is_alive() and thread is not threading.current_thread():
                    thread.join(10)

    # Observation.

    def stats(self) -> dict:
        """Counters: connections, connects, refused_connects, publishes_forwarded,
        telemetry_forwarded, points_forwarded, rate_limit_closes, rate_limited (by kind),
        size_closes, malformed_closes, bad_payload_acks, bad_payload_closes, unknown_topic_acks,
        unknown_topic_drops, session_limits_replies, open (connections not yet closed)."""
        names = ("connections", "connects", "refused_connects", "publishes_forwarded",
                 "telemetry_forwarded", "points_forwarded", "rate_limit_closes", "size_closes",
                 "malformed_closes", "bad_payload_acks", "bad_payload_closes", "unknown_topic_acks",
                 "unknown_topic_drops", "session_limits_replies")
        with self._lock:
            out = {name: self._counts[name] for name in names}
            out["rate_limited"] = {kind: self._rate_kinds[kind] for kind in KINDS}
            out["open"] = sum(s.record["closed"] is None for s in self._sessions)
        return out

    @property
    def connect_times(self) -> list[float]:
        """Monotonic time of every TCP connection accepted, in order."""
        with self._lock:
            return [s.record["accepted"] for s in self._sessions]

    def sessions(self) -> list[dict]:
        """Per connection, in order: accepted and closed (monotonic; None while open), version
        (4 or 5), device, outcome ("rate limit", "size", "bad payload", "refused", "malformed",
        "no CONNECT", "client closed", "upstream closed", "upstream unavailable", "dropped",
        "proxy closed"). When the proxy closes, ``closed`` is taken before it sends DISCONNECT or
        FIN, so the next ``accepted`` minus it is never shorter than the pause the client made
        after seeing the close; when the client closes, it is when the proxy saw that."""
        with self._lock:
            return [dict(s.record) for s in self._sessions]

    def points_log(self) -> list[tuple[float, int]]:
        """(monotonic time, data points) of every forwarded telemetry or attributes publish."""
        with self._lock:
            return list(self._points)

    def tokens(self, device: str, kind: str) -> float | None:
        """Tokens left in a device's bucket (None: no limit of that kind)."""
        with self._lock:
            bucket = self._device_buckets(device).get(ALIASES.get(kind, kind))
            return None if bucket is None else bucket.tokens()

    # Used by the sessions.

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            session = Session(self, client, time.monotonic())
            with self._lock:
                if self._closed:
                    client.close()
                    return
                self._sessions.append(session)
                self._counts["connections"] += 1
            session.threads[0].start()

    def _device_buckets(self, device: str) -> dict[str, Bucket]:
        if device not in self._buckets:
            self._buckets[device] = {kind: Bucket(spec, self.clock) for kind, spec in self._limits.items()}
        return self._buckets[device]

    def _charge(self, device: str, points: int) -> str | None:
        """Spend tokens as checkEntityRateLimit does; the kind that ran out, or None."""
        with self._lock:
            buckets = self._device_buckets(device)

            def take(kind: str, n: int) -> bool:
                return kind not in buckets or buckets[kind].try_consume(n)
            if points > 0:
                if not take("telemetry_messages", 1):
                    return "telemetry_messages"
                return None if take("telemetry_points", points) else "telemetry_points"
            return None if take("messages", 1) else "messages"

    def _refuse(self, device: str) -> bool:
        with self._lock:
            forced = self.refuse_connect or self._refuse_next > 0
            self._refuse_next = max(0, self._refuse_next - 1)
        refused = forced or self._charge(device, 0) is not None
        if refused:
            self._count("refused_connects")
        return refused

    def _rate_limited(self, kind: str) -> None:
        with self._lock:
            self._counts["rate_limit_closes"] += 1
            self._rate_kinds[kind] += 1

    def _forwarded(self, topic: str, points: int) -> None:
        with self._lock:
            self._counts["publishes_forwarded"] += 1
            if topic in (TELEMETRY, ATTRIBUTES):
                self._counts["telemetry_forwarded"] += 1
                self._counts["points_forwarded"] += points
                self._points.append((time.monotonic(), points))

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _session_limits(self) -> dict:
        with self._lock:
            limits = dict(self._limits)
        return {"maxPayloadSize": self.max_payload, "maxInflightMessages": self.max_inflight,
                "rateLimits": {"messages": limits.get("messages"),
                               "telemetryMessages": limits.get("telemetry_messages"),
                               "telemetryDataPoints": limits.get("telemetry_points")}}
