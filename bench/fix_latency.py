"""Fix latency: from the last byte of an epoch to its gps.fix at a subscriber, p50 and p99, at
1 Hz (RMC, VTG, GGA, GSA, GSV, GLL) and at 5 Hz (RMC, VTG, GGA), against 20 ms.

This process plays the receiver on a TCP port (the simulator's own sentences) and listens on
the bus, so both ends are read on one clock: the time after the epoch's last byte is written,
and the arrival of the fix whose gps_utc is that epoch's. The reader learns the cycle's last
sentence from the first epochs (they are left out); before it did, it waited for a quiet line
(about 150 ms), which is what this figure replaces.
"""

from __future__ import annotations

import datetime as dt
import socket
import tempfile
import time
from pathlib import Path

from bench import Result, percentile, report
from common.bus import Bus
from common.config import load
from harness.proc import Child, free_port, python_module, write_config
from sim.nmea import route_epoch, sentence

LIMIT_MS = 20.0
LEARNING_EPOCHS = 5
EPOCHS = {1: 40, 5: 150}


def _epochs(rate: int, n: int) -> list[tuple[float, bytes]]:
    first = dt.datetime.now(dt.UTC).replace(microsecond=0)
    out = []
    for i in range(n):
        now = first + dt.timedelta(seconds=i / rate)
        bodies = route_epoch(now, 47.37, 8.54, 50.0, 90.0)
        out.append((now.timestamp(), b"".join(sentence(b) for b in (bodies[:3] if rate > 1 else bodies))))
    return out


def _measure(rate: int) -> list[float]:
    server = socket.create_server(("127.0.0.1", free_port()))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_config(Path(tmp) / "c.yaml", gps_reader={
            "source": "tcp", "tcp_host": "127.0.0.1", "tcp_port": server.getsockname()[1]})
        reader = Child(python_module("services.gps_reader", "--config", cfg))
        try:
            with Bus() as bus:
                sub = bus.subscriber([load(cfg).bus.gps_reader], ["gps.fix"])
                conn, _ = server.accept()
                return _run(conn, sub, rate)
        finally:
            reader.finish()
            server.close()


def _run(conn: socket.socket, sub, rate: int) -> list[float]:
    sent: dict[float, float] = {}
    arrived: dict[float, float] = {}
    start = time.monotonic() + 1.0  # the subscription is up
    for i, (utc, data) in enumerate(_epochs(rate, EPOCHS[rate])):
        while (left := start + i / rate - time.monotonic()) > 0:
            _collect(sub, arrived, left)
        conn.sendall(data)
        sent[round(utc, 2)] = time.monotonic()
    _collect(sub, arrived, 1.0)
    conn.close()
    utcs = sorted(sent)[LEARNING_EPOCHS:]
    missing = [u for u in utcs if u not in arrived]
    if missing:
        raise SystemExit(f"fix_latency: {len(missing)} of {len(utcs)} epochs at {rate} Hz gave no fix")
    return [(arrived[u] - sent[u]) * 1000 for u in utcs]


def _collect(sub, arrived: dict[float, float], timeout: float) -> None:
    """Note when each epoch's first fix arrives (a republished epoch keeps its first arrival)."""
    until = time.monotonic() + timeout
    while (left := until - time.monotonic()) > 0:
        msg = sub.recv(left)
        if msg is not None and msg.data.gps_utc is not None:
            arrived.setdefault(round(msg.data.gps_utc, 2), time.monotonic())


def run() -> list[Result]:
    results = []
    for rate in EPOCHS:
        ms = _measure(rate)
        results += [Result(f"GPS epoch last byte -> gps.fix at a subscriber, {rate} Hz, p50 ({len(ms)} epochs)",
                           percentile(ms, 50), LIMIT_MS, "ms"),
                    Result(f"GPS epoch last byte -> gps.fix, {rate} Hz, p99", percentile(ms, 99), LIMIT_MS, "ms")]
    return results


if __name__ == "__main__":
    report(run())
