"""A third-party publisher built on plain pyzmq + msgpack, for feeding subscribers bad input.

    python -m harness.raw_sender ENDPOINT SCENARIO

It binds an XPUB socket (wire-compatible with PUB) and waits for the first subscription, so
nothing is lost to the slow-joiner effect, then sends the scenario's frames once and exits; a
flood scenario (``flood``: small valid messages as fast as it can, ``huge``: 10 MB bodies and
bodies just under the socket's cap) sends until it is stopped.
"""

import os
import signal
import sys
import time

import msgpack
import msgspec
import zmq

from harness.samples import SAMPLES


def body(topic: str, seq: int, v: int = 1, data=None) -> bytes:
    data = msgspec.to_builtins(SAMPLES[topic]) if data is None else data
    return msgpack.packb({"v": v, "src": "raw", "seq": seq, "ts": time.time(), "data": data})


def good(topic: str, seq: int) -> list[bytes]:
    return [topic.encode(), body(topic, seq)]


def bad_round() -> list[list[bytes]]:
    """One of each bad kind, then a good gps.fix as the end marker (kinds: see tests/test_bus.py)."""
    fix = msgspec.to_builtins(SAMPLES["gps.fix"])
    return [
        [b"gps.fix", b"\xc1" + os.urandom(40)],                                 # garbage
        [b"gps.fix", b"hello, not msgpack"],                                    # garbage
        [b"gps.fix", body("gps.fix", 0, v=2)],                                  # version
        [b"gps.fix", body("gps.fix", 0, data={k: v for k, v in fix.items() if k != "valid"})],  # shape
        [b"gps.fix", body("gps.fix", 0, data={**fix, "speed_km_h": "fast"})],  # shape
        [b"gps.fix", msgpack.packb([1, "raw", 0, 0.0, {}])],                    # garbage (no envelope)
        [b"gps.fix", body("gps.fix", 0), b"extra"],                             # frames
        [b"bms.future", body("gps.fix", 0)],                                    # topic
        [b"\xff\xfe", body("gps.fix", 0)],                                      # topic
        [b"gps.fix", body("gps.fix", 0, data={**fix, "pad": "x" * 20000})],     # too_large
        good("gps.fix", 0),
    ]


def deep_round() -> list[list[bytes]]:
    """A gps.fix whose data holds a list nested 1,000 levels deep (1 kB), then a good one."""
    nested = 0
    for _ in range(1000):
        nested = [nested]
    fix = msgspec.to_builtins(SAMPLES["gps.fix"])
    return [[b"gps.fix", body("gps.fix", 0, data={**fix, "extra": nested})], good("gps.fix", 1)]


def huge_bodies() -> list[list[bytes]]:
    """Bodies of 900 kB (over the default limit, under the socket's cap), then one of 10 MB (which
    makes ZeroMQ drop the connection, and with it whatever is queued behind it)."""
    fix = msgspec.to_builtins(SAMPLES["gps.fix"])
    large = [b"gps.fix", body("gps.fix", 0, data={**fix, "pad": "x" * (900 << 10)})]
    return [large] * 4 + [[b"gps.fix", body("gps.fix", 0, data={**fix, "pad": "x" * (10 << 20)})]]


def _huge_flood():
    rounds = huge_bodies()
    return lambda seq: rounds


def _valid_flood(topic: str):
    """Valid messages of ``topic``, each with the next seq, as fast as this process can pack them
    (a snapshot is packed faster than a subscriber can check it)."""
    data = msgspec.to_builtins(SAMPLES[topic])
    now = time.time()
    name = topic.encode()
    return lambda seq: [[name, msgpack.packb({"v": 1, "src": "raw", "seq": seq, "ts": now, "data": data})]]


FLOODS = {  # name -> a maker of ``round(seq) -> frames to send``
    "flood": lambda: _valid_flood("gps.fix"),
    "flood_bms": lambda: _valid_flood("bms.snapshot"),
    "huge": _huge_flood,
}

SCENARIOS = {
    "deep": deep_round,
    "bad": bad_round,
    "gaps": lambda: [good("gps.fix", s) for s in (0, 1, 2, 5, 6, 10, 11)],
    "drain": lambda: ([good("bms.link", s) for s in range(10)] + [good("gps.link", s) for s in range(5)]
                      + [good("uplink.status", 0)]),
}


def main() -> None:
    endpoint, scenario = sys.argv[1], sys.argv[2]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 5000)
    if scenario == "huge":
        sock.setsockopt(zmq.SNDHWM, 8)  # a flood of 10 MB bodies must not fill this process's memory
    sock.bind(endpoint)
    if not sock.poll(60000):
        sys.exit("raw_sender: no subscriber within 60 s")
    sock.recv()
    if scenario in FLOODS:
        flood(sock, FLOODS[scenario]())
    for frames in SCENARIOS[scenario]():
        sock.send_multipart(frames)
    sock.close()
    ctx.term()


def flood(sock, make_round) -> None:
    """Send round after round until SIGTERM; seq counts the rounds."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("flooding", flush=True)
    seq = 0
    while not stop:
        for frames in make_round(seq):
            sock.send_multipart(frames)
        seq += 1
    sys.exit(0)


if __name__ == "__main__":
    main()
