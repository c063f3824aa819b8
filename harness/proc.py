"""Free loopback ports, config files, and child processes with collected output (tests, bench, scripts)."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"  # the PACE vectors and NMEA logs, with their provenance
PY = sys.executable


_HANDED_OUT: set[int] = set()
_PICK = random.Random(os.getpid())
_FIRST_PORT = 10000


def _ports_outside_ephemeral() -> range:
    """Ports below the kernel's ephemeral range, which the kernel gives to no bind(0) and no
    connect(). A port drawn from inside it (bind to port 0) can be given to another process's
    bind(0) between the draw and the service's bind, and the service then stops at start with its
    endpoint in use."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(_FIRST_PORT, low) if low - _FIRST_PORT >= 1000 else range(0)


def free_port() -> int:
    """A loopback port nobody listens on and that this process has not handed out before: the
    kernel may give the same free port to two binds in a row, and two endpoints of one config on
    one port stop the service at start (CI saw bus.trip_cmd on bus.tb_uplink's port)."""
    ports = _ports_outside_ephemeral()
    while True:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", _PICK.choice(ports) if ports else 0))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.02):
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def merge(base: dict, extra: dict) -> dict:
    """``extra`` merged into ``base`` (nested mappings key by key); returns ``base``."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def write_config(path: Path, **sections) -> Path:
    """A config file on free loopback bus ports, with ``sections`` merged over it."""
    names = ("bms_reader", "gps_reader", "tb_uplink", "trip", "bms_reader_cmd", "gps_reader_cmd", "tb_uplink_cmd",
             "trip_cmd")
    cfg = {"bus": {name: f"tcp://127.0.0.1:{free_port()}" for name in names}}
    path.write_text(yaml.safe_dump(merge(cfg, sections)))
    return path


class Child:
    """A child process in its own session; its output is collected line by line with arrival times."""

    def __init__(self, args: list[str], env: dict | None = None, cwd: Path = REPO):
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(args, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.lines: list[tuple[float, str, str]] = []  # (monotonic time, "out"/"err", text)
        self._lock = threading.Lock()
        self._readers = [threading.Thread(target=self._read, args=(stream, tag), daemon=True)
                         for stream, tag in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, tag: str) -> None:
        for raw in iter(stream.readline, b""):
            with self._lock:
                self.lines.append((time.monotonic(), tag, raw.decode(errors="replace").rstrip("\n")))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self, tag: str | None = None) -> list[str]:
        with self._lock:
            return [line for _, t, line in self.lines if tag is None or t == tag]

    def wait_line(self, pattern: str, timeout: float = 10.0, tag: str | None = None) -> re.Match | None:
        regex = re.compile(pattern)

        def found():
            for line in self.text(tag):
                if m := regex.search(line):
                    return m
            return None
        return wait_for(found, timeout)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """The exit status, once the process has ended and all its output has been read (None if
        it is still running after ``timeout``)."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for reader in self._readers:
            reader.join(10)
        return status

    def finish(self) -> None:
        """Stop the child and everything it started, and close the pipes. A process manager
        (honcho) puts its children in sessions of their own, so they are found by ancestry: first
        asked to stop (honcho passes SIGTERM on), then killed."""
        import psutil
        try:
            family = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            family = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(6)
            except subprocess.TimeoutExpired:
                pass
        for proc in family:
            try:
                proc.kill()
            except psutil.Error:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(10)
        for reader in self._readers:
            reader.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


def python_module(module: str, *args) -> list[str]:
    return [PY, "-m", module, *map(str, args)]
