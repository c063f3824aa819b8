"""CPU a reader spends on a source that sends only junk: a TCP peer writes 1 MB/s of bytes that hold
no frame start (no ``~`` for bms_reader, no ``$`` for gps_reader), the worst a broken bridge or a
wrong baud rate can do. Reading one byte per system call cost bms_reader 0.99 of a core; the limit
is a tenth of a core, so a Pi keeps its CPU for the display and the uplink."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench import Result, report
from harness.proc import Child, free_port, python_module, write_config

RATE_BYTES_S = 1 << 20
MEASURE_S = 10.0
LIMIT_CORES = 0.10
JUNK = {"bms_reader": bytes(range(0x80, 0x100)) * 16, "gps_reader": b"GPRMC,noise*00\r\n" * 256}


def _serve_junk(server: socket.socket, junk: bytes, stop: threading.Event) -> None:
    server.settimeout(0.5)
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        with conn:
            sent, started = 0, time.monotonic()
            while not stop.is_set():
                try:
                    conn.sendall(junk)
                except OSError:
                    break
                sent += len(junk)
                time.sleep(max(0.0, started + sent / RATE_BYTES_S - time.monotonic()))


def _config(tmp: Path, name: str, port: int) -> Path:
    if name == "bms_reader":
        section = {"connection_type": "IP", "bms_ip": "127.0.0.1", "bms_port": port, "scan_interval": 0}
    else:
        section = {"source": "tcp", "tcp_host": "127.0.0.1", "tcp_port": port}
    return write_config(tmp / f"{name}.yaml", **{name: section})


def _measure(name: str) -> float:
    server = socket.create_server(("127.0.0.1", free_port()))
    stop = threading.Event()
    feeder = threading.Thread(target=_serve_junk, args=(server, JUNK[name], stop), daemon=True)
    feeder.start()
    with tempfile.TemporaryDirectory() as tmp:
        child = Child(python_module(f"services.{name}", "--config", _config(Path(tmp), name, server.getsockname()[1])))
        try:
            if not child.wait_line("running", 60):
                raise SystemExit(f"junk_cpu: {name} did not start: {child.text()}")
            process = psutil.Process(child.pid)
            time.sleep(2.0)  # connected and reading
            before, started = sum(process.cpu_times()[:2]), time.monotonic()
            time.sleep(MEASURE_S)
            return (sum(process.cpu_times()[:2]) - before) / (time.monotonic() - started)
        finally:
            stop.set()
            child.finish()
            server.close()


def run() -> list[Result]:
    return [Result(f"{name} CPU on 1 MB/s of junk", _measure(name), LIMIT_CORES, "cores") for name in JUNK]


if __name__ == "__main__":
    report(run())
