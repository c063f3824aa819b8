"""The bus with real sockets, the publisher or sender always in a separate process."""

import signal
import time

import msgspec
import pytest

from common import messages
from common.bus import DRAIN_MAX, EndpointError, check_endpoint
from harness.proc import free_port, python_module, wait_for, write_config
from harness.samples import SAMPLES


def _publisher(spawn, tmp_path, endpoint, name="gps_reader", period=0.05):
    cfg = write_config(tmp_path / "c.yaml", bus={name: endpoint})
    return spawn(python_module("harness.publish", name, "--config", cfg, "--period", period))


def test_subscriber_started_before_its_publisher_receives_once_it_is_up(bus, spawn, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = bus.subscriber([endpoint], ["gps.fix"])
    assert sub.recv(0.3) is None
    _publisher(spawn, tmp_path, endpoint)
    msg = sub.recv(60)
    assert msg is not None, "nothing arrived after the publisher started"
    assert msg.topic == "gps.fix" and msg.src == "gps_reader"
    assert msg.data == SAMPLES["gps.fix"]


def test_publisher_killed_and_restarted_is_picked_up_by_the_same_subscriber(bus, spawn, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = bus.subscriber([endpoint], ["gps.fix"])
    first = _publisher(spawn, tmp_path, endpoint)
    assert sub.recv(60) is not None
    for _ in range(5):
        assert sub.recv(30) is not None
    first.signal(signal.SIGKILL)
    assert first.wait(30) == -signal.SIGKILL
    _publisher(spawn, tmp_path, endpoint)
    # The old process's last messages may still be on their way; the new one's seq starts at 0.
    deadline = time.monotonic() + 60
    while (msg := sub.recv(max(0.0, deadline - time.monotonic()))) is not None and msg.seq >= 5:
        pass
    assert msg is not None, "the same subscriber got nothing from the restarted publisher"
    assert sub.stats.restarts == 1


def test_bad_bodies_are_counted_by_kind_and_skipped(bus, spawn):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = bus.subscriber([endpoint], [""])
    spawn(python_module("harness.raw_sender", endpoint, "bad"))
    msg = sub.recv(20)
    assert msg is not None and msg.topic == "gps.fix" and msg.data == SAMPLES["gps.fix"]
    assert dict(sub.stats.bad) == {"garbage": 3, "version": 1, "shape": 2, "frames": 1, "topic": 2,
                                   "too_large": 1}
    assert sub.stats.received == 1


def test_seq_gaps_are_counted(bus, spawn):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = bus.subscriber([endpoint], ["gps."])
    spawn(python_module("harness.raw_sender", endpoint, "gaps"))
    seqs = []
    while len(seqs) < 7:
        msg = sub.recv(20)
        assert msg is not None
        seqs.append(msg.seq)
    assert seqs == [0, 1, 2, 5, 6, 10, 11]
    assert sub.stats.lost == 2 + 3
    assert sub.stats.restarts == 0


def test_drain_keeps_the_latest_message_of_each_topic(bus, spawn):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = bus.subscriber([endpoint], [""])
    spawn(python_module("harness.raw_sender", endpoint, "drain"))
    latest = {}
    while "uplink.status" not in latest:
        msg = sub.recv(20)
        assert msg is not None, "the scenario did not arrive"
        latest[msg.topic] = msg
        latest.update(sub.drain())
    assert latest["bms.link"].seq == 9
    assert latest["gps.link"].seq == 4


def test_drain_reads_at_most_its_limit_so_a_flood_cannot_hold_it(bus, spawn):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = bus.subscriber([endpoint], [""])
    sender = spawn(python_module("harness.raw_sender", endpoint, "flood"))
    assert sub.recv(60) is not None and sender.wait_line("flooding", 60)
    reads = []

    def drained_plenty():
        before = sub.stats.received
        sub.drain()
        reads.append(sub.stats.received - before)
        return sum(reads) > 10 * DRAIN_MAX
    assert wait_for(drained_plenty, 60, interval=0.001), "the flood went on meanwhile"
    assert max(reads) <= DRAIN_MAX, "each call reads at most its limit"


def test_a_body_nested_1000_levels_deep_and_non_finite_numbers_are_counted(bus, spawn):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = bus.subscriber([endpoint], [""])
    spawn(python_module("harness.raw_sender", endpoint, "deep"))
    msg = sub.recv(60)
    assert msg is not None and msg.seq == 1, "the good message after the deep one"
    assert dict(sub.stats.bad) == {"depth": 1}
    fix = messages.encode("gps.fix", "t", 0, 1.0, SAMPLES["gps.fix"])
    for bad in (float("nan"), float("inf"), -float("inf")):
        body = fix.replace(msgspec.msgpack.encode(SAMPLES["gps.fix"].speed_km_h), msgspec.msgpack.encode(bad))
        with pytest.raises(messages.MessageError) as e:
            messages.decode("gps.fix", body)
        assert e.value.kind == "shape"
    with pytest.raises(messages.MessageError):
        bus.publisher(f"tcp://127.0.0.1:{free_port()}", "t").publish("gps.fix", messages.GpsFix(valid=True, lat=float("nan")))


def test_publish_refuses_data_that_does_not_fit_its_topic(bus):
    pub = bus.publisher(f"tcp://127.0.0.1:{free_port()}", "test")
    with pytest.raises(messages.MessageError) as wrong_class:
        pub.publish("gps.fix", SAMPLES["bms.link"])
    assert wrong_class.value.kind == "shape"
    with pytest.raises(messages.MessageError) as wrong_type:
        pub.publish("gps.fix", messages.GpsFix(valid="yes"))
    assert wrong_type.value.kind == "shape"
    for bad_ts in (float("inf"), float("nan"), -1.0, 1e17):
        with pytest.raises(messages.MessageError):
            pub.publish("gps.fix", SAMPLES["gps.fix"], ts=bad_ts)
    with pytest.raises(messages.MessageError) as unknown:
        pub.publish("gps.speed", SAMPLES["gps.fix"])
    assert unknown.value.kind == "topic"


@pytest.mark.parametrize(("endpoint", "canonical"), [
    ("tcp://127.0.0.1:7301", "tcp://127.0.0.1:7301"), ("tcp://localhost:1", "tcp://127.0.0.1:1"),
    ("tcp://127.0.0.1:07301", "tcp://127.0.0.1:7301"), ("tcp://[::1]:80", "tcp://[::1]:80"),
    ("ipc:///tmp/pace.sock", "ipc:///tmp/pace.sock")])
def test_loopback_and_ipc_endpoints_are_accepted_in_their_canonical_spelling(endpoint, canonical):
    assert check_endpoint(endpoint) == canonical


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:7301", "tcp://*:7301", "tcp://192.168.1.5:7301",
                                      "tcp://127.0.0.1", "tcp://127.0.0.1:0", "tcp://127.0.0.1:99999",
                                      "udp://127.0.0.1:5", "ipc://", "127.0.0.1:7301", "tcp://127.0.0.1:7301?x=1",
                                      "tcp://127.0.0.1:7301#x", "ipc:///no/such/dir/pace", "ipc:///tmp/" + "x" * 120])
def test_bad_or_exposed_endpoints_are_refused(endpoint):
    with pytest.raises(EndpointError):
        check_endpoint(endpoint)


def test_exposed_endpoint_is_allowed_with_the_opt_in():
    assert check_endpoint("tcp://0.0.0.0:7301", allow_remote=True) == "tcp://0.0.0.0:7301"
