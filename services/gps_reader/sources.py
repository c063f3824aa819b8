"""Where NMEA comes from: a serial port (pyserial), a TCP stream, a gpsd daemon, or a log file.

Every source has ``read(timeout) -> bytes`` (b"" when nothing came) and raises PortLost when the
port, the connection or the daemon went away; the reader then reopens it with back-off.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import serial

from common.device import PortLost

READ_SIZE = 4096
# After the first byte of a burst, wait this long so the rest is read in one go (a 9600 baud line
# delivers about one byte a millisecond; waking for each would cost more CPU than the parsing).
GATHER_S = 0.02


class SerialSource:
    """A serial device or any pyserial URL (rfc2217://, socket://)."""

    def __init__(self, url: str, baud: int):
        self.name = url
        try:
            self._port = serial.serial_for_url(url, do_not_open=True, baudrate=baud, timeout=0)
            self._port.open()
        except (serial.SerialException, OSError, ValueError) as e:
            raise PortLost(f"cannot open {url}: {e}") from None

    def read(self, timeout: float) -> bytes:
        try:
            self._port.timeout = timeout
            first = self._port.read(1)
            if not first:
                return b""
            time.sleep(GATHER_S)
            self._port.timeout = 0
            return first + self._port.read(READ_SIZE)
        except (serial.SerialException, OSError) as e:
            raise PortLost(f"{self.name}: {e}") from None

    def close(self) -> None:
        try:
            self._port.close()
        except (serial.SerialException, OSError):
            pass


class TcpSource:
    """A TCP NMEA stream (a serial bridge, a phone app, a receiver with Wi-Fi). A plain socket:
    pyserial's socket:// discards what has already arrived when it opens, which would drop the
    first sentences a bridge sends on connect."""

    def __init__(self, host: str, port: int, name: str | None = None, greeting: bytes = b""):
        self.name = name or f"socket://{host}:{port}"
        try:
            self._sock = socket.create_connection((host, port), timeout=5)
            if greeting:
                self._sock.sendall(greeting)
        except OSError as e:
            raise PortLost(f"cannot connect to {self.name}: {e}") from None

    def read(self, timeout: float) -> bytes:
        try:
            self._sock.settimeout(timeout)
            data = self._sock.recv(READ_SIZE)
        except TimeoutError:
            return b""
        except OSError as e:
            raise PortLost(f"{self.name}: {e}") from None
        if not data:
            raise PortLost(f"{self.name}: the other end closed the connection")
        return data

    def close(self) -> None:
        self._sock.close()


class GpsdSource(TcpSource):
    """gpsd's JSON protocol: ?WATCH with "nmea": true makes gpsd pass the receiver's sentences on,
    so the same validity and speed rules apply as for a direct port (its own TPV speeds may be
    derived from positions). gpsd's JSON reports (VERSION, DEVICES, WATCH, ERROR) are lines that
    start with '{'; the reader skips them."""

    WATCH = b'?WATCH={"enable":true,"nmea":true};\n'

    def __init__(self, host: str, port: int):
        super().__init__(host, port, f"gpsd://{host}:{port}", self.WATCH)


class FileSource:
    """Replays a log (lines starting with '#' skipped). ``pace`` sleeps between epochs as the
    receiver's clock did, divided by ``speed``; gaps longer than 2 s or going backwards count 1 s."""

    def __init__(self, path: str, speed: float, loop: bool):
        self.name = f"file:{path}"
        self.speed, self.loop = speed, loop
        try:
            self._lines = [line for line in Path(path).read_bytes().splitlines(keepends=True)
                           if not line.startswith(b"#")]
        except OSError as e:
            raise PortLost(f"cannot read {path}: {e}") from None
        self._next = 0
        self.finished = False

    def read(self, timeout: float) -> bytes:
        if self._next >= len(self._lines):
            if not self.loop:
                self.finished = True
                time.sleep(timeout)
                return b""
            self._next = 0
        line = self._lines[self._next]
        self._next += 1
        return line

    def pace(self, previous_s: float | None, current_s: float | None, wait) -> None:
        """Sleep (via ``wait``) for the time between two epochs of the recording."""
        gap = 1.0
        if previous_s is not None and current_s is not None and 0 < current_s - previous_s <= 2.0:
            gap = current_s - previous_s
        wait(gap / self.speed)

    def close(self) -> None:
        pass


def open_source(cfg) -> SerialSource | TcpSource | FileSource:
    if cfg.source == "serial":
        return SerialSource(cfg.serial_port, cfg.baud)
    if cfg.source == "tcp":
        return TcpSource(cfg.tcp_host, cfg.tcp_port)
    if cfg.source == "gpsd":
        return GpsdSource(cfg.gpsd_host, cfg.gpsd_port)
    return FileSource(cfg.file, cfg.replay_speed, cfg.loop_file)


def describe(cfg) -> str:
    return {"serial": cfg.serial_port, "tcp": f"socket://{cfg.tcp_host}:{cfg.tcp_port}",
            "gpsd": f"gpsd://{cfg.gpsd_host}:{cfg.gpsd_port}", "file": f"file:{cfg.file}"}[cfg.source]
