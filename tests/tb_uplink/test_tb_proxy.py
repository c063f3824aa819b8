"""The ThingsBoard stand-in (harness/tb_proxy.py): its pure parts, then paho clients through it to
a real Mosquitto, watched by a subscriber on Mosquitto itself."""

import json
import socket
import struct
import threading

import paho.mqtt.client as mqtt
import pytest

from harness import tb_proxy
from harness.proc import wait_for
from harness.tb_proxy import Bucket, TbProxy, data_points, max_in_window

TIMEOUT = 60
TELEMETRY, ATTRIBUTES = tb_proxy.TELEMETRY, tb_proxy.ATTRIBUTES
V5, V311 = mqtt.MQTTv5, mqtt.MQTTv311


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


# --- pure --------------------------------------------------------------------------------------

def test_bucket_has_every_window_and_refills_greedily():
    clock = Clock()
    bucket = Bucket("3:1,5:60", clock)
    assert [bucket.try_consume() for _ in range(4)] == [True, True, True, False]
    clock.t += 1.0
    assert [bucket.try_consume() for _ in range(3)] == [True, True, False], "the minute window"
    clock.t += 12.0  # 5 per 60 s: one token every 12 s, refilled continuously
    assert bucket.try_consume() and not bucket.try_consume()


def test_bucket_never_lets_through_more_than_its_capacity():
    clock = Clock()
    bucket = Bucket("10:1", clock)
    assert not bucket.try_consume(11)
    assert bucket.try_consume(10), "a failed consumption takes nothing"
    clock.t += 0.5
    assert bucket.try_consume(5) and not bucket.try_consume(1)


def test_data_points_are_counted_as_thingsboard_converts_them():
    assert data_points(TELEMETRY, b'{"a": 1, "b": "x", "c": null}') == 2
    assert data_points(TELEMETRY, b'{"ts": 1, "values": {"a": 1, "b": {"n": 2}}}') == 2
    assert data_points(TELEMETRY, b'[{"ts": 1, "values": {"a": 1}}, {"ts": 2, "values": {"a": 1, "b": 2}}]') == 3
    assert data_points(ATTRIBUTES, b'{"ts": 1, "values": {"a": 1}}') == 2, "attributes have no ts form"
    for bad in (b"", b"not json", b"[1, 2]", b'"text"', b"42", b'{"ts": 1, "values": [1]}'):
        with pytest.raises(tb_proxy.InvalidPayload):
            data_points(TELEMETRY, bad)
    with pytest.raises(tb_proxy.InvalidPayload):
        data_points(ATTRIBUTES, b"[]")


def test_changed_limits_start_full_and_unchanged_ones_keep_their_tokens():
    clock = Clock()
    with TbProxy(upstream_port=1, limits={"messages": "10:60", "telemetryDataPoints": "100:60"}, clock=clock) as proxy:
        assert proxy._charge("car", 0) is None and proxy._charge("car", 40) is None
        proxy.set_limits({"messages": "20:60", "telemetry_points": "100:60", "telemetry_messages": "5:60"})
        assert proxy.tokens("car", "messages") == 20
        assert proxy.tokens("car", "telemetryDataPoints") == 60
        assert proxy.tokens("car", "telemetry_messages") == 5
        with pytest.raises(ValueError):
            proxy.set_limits({"bytes": "1:1"})


def test_known_topics_and_windows():
    for topic in (TELEMETRY, ATTRIBUTES, "v1/devices/me/attributes/request/1", "v1/devices/me/rpc/request/7",
                  "v1/devices/me/rpc/response/7", "v1/devices/me/claim"):
        assert tb_proxy.is_known_topic(topic)
    for topic in ("v1/devices/me/telemetry/x", "v1/devices/me", "pace/bms", "v1/devices/me/claims"):
        assert not tb_proxy.is_known_topic(topic)
    assert max_in_window([(0, 5), (10, 5), (3599, 5), (3600, 5), (7300, 1)], 3600) == 15


# --- through the proxy -------------------------------------------------------------------------

class Device:
    """A paho client through the proxy that does not reconnect: its network loop runs in a thread
    of its own until the connection ends, and it records what the server said."""

    def __init__(self, port: int, protocol: int, username: str = "token1", client_id: str = "car1"):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        self.client.username_pw_set(username)
        self.connacks: list[int] = []
        self.disconnects: list[int] = []
        self.pubacks: dict[int, int] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: self.connacks.append(rc.value)
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnects.append(rc.value)
        self.client.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, rc.value)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.stop = threading.Event()
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set() and self.client.loop(0.05) == mqtt.MQTT_ERR_SUCCESS:
            pass

    def connected(self) -> bool:
        return bool(wait_for(lambda: self.connacks, TIMEOUT)) and self.connacks[0] == 0

    def publish(self, topic: str, payload, qos: int = 1) -> int:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.client.publish(topic, data, qos=qos).mid

    def puback(self, mid: int) -> int | None:
        """The reason code of the PUBACK for ``mid`` (None if none came)."""
        return self.pubacks[mid] if wait_for(lambda: mid in self.pubacks, TIMEOUT) else None

    def gone(self) -> bool:
        """Whether the connection ended (the network loop stopped)."""
        self.thread.join(TIMEOUT)
        return not self.thread.is_alive()

    def close(self) -> None:
        self.stop.set()
        self.client.disconnect()
        self.thread.join(10)


class Witness:
    """A subscriber on Mosquitto itself: what the proxy let through."""

    def __init__(self, port: int):
        self.messages: list[tuple[str, bytes]] = []
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="witness")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._ready.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop_start()
        assert self._ready.wait(TIMEOUT), "the witness did not subscribe"

    def payloads(self, topic: str | None = None) -> list[bytes]:
        return [p for t, p in list(self.messages) if topic is None or t == topic]

    def barrier(self, port: int) -> bool:
        """Publish a marker straight to Mosquitto and wait until it arrives: whatever the proxy
        had passed on before has arrived by then."""
        marker = f"barrier/{len(self.messages)}"
        sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"barrier{len(self.messages)}")
        sender.connect("127.0.0.1", port, keepalive=60)
        sender.loop_start()
        sender.publish(marker, b"-", qos=1).wait_for_publish(TIMEOUT)
        sender.disconnect()  # before loop_stop, which otherwise waits out the loop's select
        sender.loop_stop()
        return bool(wait_for(lambda: any(t == marker for t, _ in list(self.messages)), TIMEOUT))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def world(broker):
    """``world(**proxy options)`` -> (proxy, witness, device factory); everything closed at the end."""
    made = []

    def make(**options):
        mq = broker()
        proxy = TbProxy(upstream_port=mq.port, **options)
        witness = Witness(mq.port)
        made.extend([witness, proxy])

        def device(protocol, **kw):
            made.insert(0, Device(proxy.port, protocol, **kw))
            return made[0]
        return proxy, witness, device, mq
    yield make
    for thing in made:
        thing.close()


@pytest.mark.parametrize("protocol", [V5, V311])
def test_normal_publishes_arrive(world, protocol):
    proxy, witness, device, _ = world(limits={"telemetry_points": "100:1"})
    car = device(protocol)
    assert car.connected()
    record = [{"ts": 1, "values": {"soc": 50, "v_pack": 52.1}}]
    assert car.puback(car.publish(TELEMETRY, record)) == 0
    assert car.puback(car.publish(ATTRIBUTES, {"software_version": "1", "pack_count": 1})) == 0
    car.publish(TELEMETRY, {"alive": True}, qos=0)
    assert wait_for(lambda: len(witness.payloads(TELEMETRY)) == 2 and witness.payloads(ATTRIBUTES), TIMEOUT)
    assert json.loads(witness.payloads(TELEMETRY)[0]) == record
    stats = proxy.stats()
    assert stats["telemetry_forwarded"] == 3 and stats["points_forwarded"] == 5
    assert [points for _, points in proxy.points_log()] == [2, 2, 1]
    assert stats["connects"] == 1 and len(proxy.connect_times) == 1


def test_rate_limit_on_v5_disconnects_with_0x83_and_drops_the_message(world):
    proxy, witness, device, mq = world(limits={"telemetry_messages": "3:3600"})
    car = device(V5)
    assert car.connected()
    for n in range(3):
        assert car.puback(car.publish(TELEMETRY, {"n": n})) == 0
    over = car.publish(TELEMETRY, {"n": 3})
    assert car.gone()
    assert car.disconnects == [tb_proxy.IMPLEMENTATION_SPECIFIC_ERROR]
    assert over not in car.pubacks, "no PUBACK for a rate-limited publish"
    assert witness.barrier(mq.port)
    assert [json.loads(p)["n"] for p in witness.payloads(TELEMETRY)] == [0, 1, 2]
    stats = proxy.stats()
    assert stats["rate_limit_closes"] == 1 and stats["rate_limited"]["telemetry_messages"] == 1
    assert proxy.sessions()[0]["outcome"] == "rate limit"


def test_rate_limit_on_v311_closes_bare_and_buckets_outlive_the_session(world):
    proxy, witness, device, mq = world(limits={"telemetry_points": "5:3600"})
    car = device(V311)
    assert car.connected()
    assert car.puback(car.publish(TELEMETRY, {"a": 1, "b": 2, "c": 3})) == 0
    car.publish(TELEMETRY, {"a": 1, "b": 2, "c": 3})
    assert car.gone() and car.disconnects and car.disconnects[0] != 0
    again = device(V311, client_id="car1-again")  # the same device (user name), a new session
    assert again.connected()
    again.publish(TELEMETRY, {"a": 1, "b": 2, "c": 3})
    assert again.gone()
    assert witness.barrier(mq.port)
    assert len(witness.payloads(TELEMETRY)) == 1
    assert proxy.stats()["rate_limited"]["telemetry_points"] == 2
    assert [s["outcome"] for s in proxy.sessions()] == ["rate limit", "rate limit"]


def test_telemetry_with_points_spends_no_message_tokens(world):
    proxy, witness, device, _ = world(limits={"messages": "2:3600"})
    car = device(V5)
    assert car.connected()  # the session OPEN event takes one of the two
    for n in range(5):
        assert car.puback(car.publish(TELEMETRY, {"n": n})) == 0
    car.publish("v1/devices/me/attributes/request/1", {"clientKeys": "a"})  # the last one
    assert wait_for(lambda: witness.payloads("v1/devices/me/attributes/request/1"), TIMEOUT)
    car.publish("v1/devices/me/attributes/request/2", {"clientKeys": "a"})
    assert car.gone() and car.disconnects == [tb_proxy.IMPLEMENTATION_SPECIFIC_ERROR]
    assert proxy.stats()["rate_limited"]["messages"] == 1


def test_refused_connects_get_0x9f_and_are_counted(world):
    proxy, _, device, _ = world()
    proxy.refuse_connects(2)
    first, second = device(V5), device(V5)
    assert wait_for(lambda: first.connacks and second.connacks, TIMEOUT)
    assert first.connacks == [tb_proxy.CONNECTION_RATE_EXCEEDED] == second.connacks
    assert first.gone() and second.gone()
    third = device(V5)
    assert third.connected()
    stats = proxy.stats()
    assert stats["refused_connects"] == 2 and stats["connects"] == 1 and len(proxy.connect_times) == 3


def raw_connect(port: int, level: int, clean: bool = True, want: int | None = None) -> bytes:
    """A CONNECT from a plain socket; what came back until the proxy closed (or ``want`` bytes)."""
    body = struct.pack("!H", 4) + b"MQTT" + bytes([level, 0x82 if clean else 0x80]) + struct.pack("!H", 60)
    body += b"\x00" if level == 5 else b""
    body += struct.pack("!H", 3) + b"car" + struct.pack("!H", 6) + b"token1"
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(bytes([0x10, len(body)]) + body)
        received = b""
        while (want is None or len(received) < want) and (chunk := s.recv(4096)):
            received += chunk
    return received


def test_an_empty_message_bucket_refuses_the_connect(world):
    proxy, _, _, _ = world(limits={"messages": "1:3600"})
    assert raw_connect(proxy.port, 4, want=4) == b"\x20\x02\x00\x00", "accepted: Mosquitto's CONNACK"
    assert raw_connect(proxy.port, 4) == b"\x20\x02\x00\x03", "server unavailable on 3.1.1, then closed"
    assert raw_connect(proxy.port, 5, clean=False) == b"\x20\x03\x01\x9f\x00" + b"\xe0\x02\x96\x00"
    assert proxy.stats()["refused_connects"] == 2


@pytest.mark.parametrize("protocol", [V5, V311])
def test_a_packet_over_max_payload_closes_and_is_not_delivered(world, protocol):
    limit = 1000
    proxy, witness, device, mq = world(max_payload=limit)
    car = device(protocol)
    assert car.connected()
    # remaining length = topic length (2) + topic + packet id (2) + properties length (1 on v5) + payload
    fits = limit - (2 + len(TELEMETRY) + 2 + (1 if protocol == V5 else 0))
    payload = b'{"k": "' + b"x" * (fits - 9) + b'"}'
    assert len(payload) == fits
    assert car.puback(car.publish(TELEMETRY, payload)) == 0
    car.publish(TELEMETRY, payload[:-2] + b'x"}')
    assert car.gone()
    if protocol == V5:
        assert car.disconnects == [tb_proxy.MALFORMED_PACKET]
    else:
        assert car.disconnects and car.disconnects[0] != 0, "a bare close"
    assert witness.barrier(mq.port)
    assert witness.payloads(TELEMETRY) == [payload]
    assert proxy.stats()["size_closes"] == 1


def test_bad_json_gets_puback_0x99_on_v5_and_the_session_stays(world):
    proxy, witness, device, _ = world()
    car = device(V5)
    assert car.connected()
    assert car.puback(car.publish(TELEMETRY, b"{not json")) == tb_proxy.PAYLOAD_FORMAT_INVALID
    assert car.puback(car.publish(ATTRIBUTES, b"[1, 2]")) == tb_proxy.PAYLOAD_FORMAT_INVALID
    assert car.puback(car.publish(TELEMETRY, {"after": 1})) == 0
    assert wait_for(lambda: witness.payloads(TELEMETRY), TIMEOUT)
    assert witness.payloads(TELEMETRY) == [b'{"after": 1}'] and not witness.payloads(ATTRIBUTES)
    assert proxy.stats()["bad_payload_acks"] == 2


@pytest.mark.parametrize(("protocol", "qos"), [(V311, 1), (V5, 0)])
def test_bad_json_without_a_puback_to_carry_the_answer_closes(world, protocol, qos):
    proxy, witness, device, mq = world()
    car = device(protocol)
    assert car.connected()
    car.publish(TELEMETRY, b"{not json", qos=qos)
    assert car.gone()
    if protocol == V5:
        assert car.disconnects == [tb_proxy.PAYLOAD_FORMAT_INVALID]
    assert witness.barrier(mq.port) and not witness.payloads(TELEMETRY)
    assert proxy.stats()["bad_payload_closes"] == 1


@pytest.mark.parametrize("protocol", [V5, V311])
def test_an_unknown_topic_is_acknowledged_but_not_delivered(world, protocol):
    proxy, witness, device, _ = world()
    car = device(protocol)
    assert car.connected()
    # 0x90 on v5; ThingsBoard's 3.1.1 PUBACK carries no reason code, so it reads as success
    expected = tb_proxy.TOPIC_NAME_INVALID if protocol == V5 else 0
    assert car.puback(car.publish("v1/devices/me/nonsense", {"a": 1})) == expected
    assert car.puback(car.publish(TELEMETRY, {"after": 1})) == 0
    assert wait_for(lambda: witness.payloads(TELEMETRY), TIMEOUT)
    assert [t for t, _ in witness.messages] == [TELEMETRY]
    assert proxy.stats()["unknown_topic_acks"] == 1


def test_get_session_limits_is_answered_by_the_proxy(world):
    limits = {"telemetryMessages": "10:1,300:60", "telemetryDataPoints": "100:1"}
    proxy, witness, device, _ = world(limits=limits)
    car = device(V5)
    assert car.connected()
    car.client.subscribe("v1/devices/me/rpc/response/+", qos=1)
    assert car.subscribed.wait(TIMEOUT)
    car.publish("v1/devices/me/rpc/request/9", {"method": "getSessionLimits", "params": {}})
    assert wait_for(lambda: car.messages, TIMEOUT)
    topic, payload = car.messages[0]
    assert topic == "v1/devices/me/rpc/response/9"
    assert json.loads(payload) == {"maxPayloadSize": 65536, "maxInflightMessages": 100,
                                   "rateLimits": {"messages": None, **limits}}
    assert not witness.payloads("v1/devices/me/rpc/request/9")


def test_a_client_that_hangs_up_mid_packet_does_not_hurt_the_proxy(world):
    proxy, witness, device, _ = world()
    for cut in (1, 2, 5, 30):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT) as s:
            s.sendall(b"\x10\x20\x00\x04MQTT\x05"[:cut])
    body = struct.pack("!H", 4) + b"MQTT\x04\x02" + struct.pack("!H", 60) + struct.pack("!H", 1) + b"x"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT) as s:
        s.sendall(bytes([0x10, len(body)]) + body)
        s.sendall(b"\x32\x7f\x00\x17" + TELEMETRY.encode())  # a PUBLISH cut short
    car = device(V5)
    assert car.connected()
    assert car.puback(car.publish(TELEMETRY, {"ok": 1})) == 0
    assert wait_for(lambda: witness.payloads(TELEMETRY), TIMEOUT)
    assert wait_for(lambda: proxy.stats()["open"] == 1, TIMEOUT), "the broken connections were closed"
