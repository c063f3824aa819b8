"""A third-party publisher built on plain pyzmq + msgpack, for feeding subscribers bad input.

    python -m harness.raw_sender ENDPOINT SCENARIO

It binds an XPUB socket (wire-compatible with PUB) and waits for the first subscription, so
nothing is lost to the slow-joiner effect, then sends the scenario's frames once and exits.
"""

import os
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


SCENARIOS = {
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
    sock.bind(endpoint)
    if not sock.poll(20000):
        sys.exit("raw_sender: no subscriber within 20 s")
    sock.recv()
    for frames in SCENARIOS[scenario]():
        sock.send_multipart(frames)
    sock.close()
    ctx.term()


if __name__ == "__main__":
    main()
