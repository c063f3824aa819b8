"""The device end of a simulated serial line: a pty, or a TCP port like a serial bridge.

Virtual lines deliver instantly, so ``send`` paces bytes at the configured baud rate (10 bits per
byte: start, 8 data, stop) to give readers the timing of a real RS232 line. A pty keeps its slave
end open so the master never reads EIO while the reader restarts, and can be published under a
stable symlink (a new pty after a drop or a restart gets the same link). A TCP port serves one
client at a time; a new client replaces the old one, as most serial bridges do.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time
import tty
from abc import ABC, abstractmethod
from collections.abc import Callable

BITS_PER_BYTE = 10


def announce(**fields) -> None:
    """One JSON line on stdout for whoever started the simulator (tests, the demo log)."""
    print(json.dumps(fields), flush=True)


def wire_seconds(nbytes: int, baud: int) -> float:
    return nbytes * BITS_PER_BYTE / baud


class SimPort(ABC):
    """One end of a byte line. ``recv`` returns b"" when nothing arrived within the timeout."""

    @abstractmethod
    def recv(self, timeout: float) -> bytes: ...

    @abstractmethod
    def _write(self, data: bytes) -> bool: ...

    @abstractmethod
    def drop(self) -> None:
        """Break the connection, as an unplugged adapter or a restarted bridge would."""

    @abstractmethod
    def close(self) -> None: ...

    def has_peer(self) -> bool:
        """Whether a reader is connected (a pty cannot tell, so it always says yes)."""
        return True

    def wait_for_peer(self) -> None:
        while not self.has_peer():
            self.recv(0.2)

    def send(self, data: bytes, baud: int | None) -> bool:
        """Write ``data`` paced at ``baud`` (None = all at once). False if no reader is connected."""
        if not baud:
            return self._write(data)
        start = time.monotonic()
        sent = 0
        while sent < len(data):
            due = min(len(data), int((time.monotonic() - start) / wire_seconds(1, baud)) + 1)
            if due > sent:
                if not self._write(data[sent:due]):
                    return False
                sent = due
            if sent < len(data):
                time.sleep(max(0.0, start + wire_seconds(sent + 1, baud) - time.monotonic()))
        return True


class PtyPort(SimPort):
    def __init__(self, link: str | None = None):
        self.link = link
        self._open()

    def _open(self) -> None:
        self._master, self._slave = os.openpty()
        # Raw on the slave at once: with the default ECHO, replies written before the reader opens
        # the port would come back to us as if the reader had sent them.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.device = os.ttyname(self._slave)
        if self.link:
            tmp = f"{self.link}.tmp{os.getpid()}"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(self.device, tmp)
            os.replace(tmp, self.link)

    def describe(self) -> dict:
        return {"device": self.device, "link": self.link}

    def recv(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            time.sleep(0.05)
            return b""

    def _write(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._master, view):]
            except BlockingIOError:
                select.select([], [self._master], [], 0.05)
            except OSError:
                return False
        return True

    def drop(self) -> None:
        self.close()
        self._open()
        announce(event="listening", **self.describe())

    def close(self) -> None:
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class TcpPort(SimPort):
    def __init__(self, port: int, host: str = "127.0.0.1"):
        self._listener = socket.create_server((host, port), reuse_port=False)
        self._listener.setblocking(False)
        self.host, self.port = host, self._listener.getsockname()[1]
        self._client: socket.socket | None = None

    def describe(self) -> dict:
        return {"tcp": f"{self.host}:{self.port}"}

    def recv(self, timeout: float) -> bytes:
        watch = [self._listener] + ([self._client] if self._client else [])
        ready, _, _ = select.select(watch, [], [], timeout)
        if self._listener in ready:
            client, _ = self._listener.accept()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.drop()
            self._client = client
            return b""
        if self._client is not None and self._client in ready:
            try:
                data = self._client.recv(4096)
            except OSError:
                data = b""
            if not data:
                self.drop()
            return data
        return b""

    def has_peer(self) -> bool:
        return self._client is not None

    def _write(self, data: bytes) -> bool:
        if self._client is None:
            return False
        try:
            self._client.sendall(data)
            return True
        except OSError:
            self.drop()
            return False

    def drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        self.drop()
        self._listener.close()


def open_port(pty: bool, link: str | None, tcp_port: int | None, host: str) -> SimPort:
    port = PtyPort(link) if pty else TcpPort(tcp_port or 0, host)
    announce(event="listening", **port.describe())
    return port


def add_port_arguments(parser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal (prints its path)")
    where.add_argument("--tcp", type=int, metavar="PORT", help="serve on a TCP port, like a serial bridge (0 = any)")
    parser.add_argument("--link", help="with --pty: keep this symlink pointing at the current pty")
    parser.add_argument("--host", default="127.0.0.1", help="with --tcp: address to listen on (default 127.0.0.1)")


def serve(args, device: Callable[[SimPort], None]) -> None:
    """Open the port the arguments ask for and run ``device`` on it until SIGTERM/SIGINT."""
    def stop(*_):
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = open_port(args.pty, args.link, args.tcp, args.host)
    try:
        device(port)
    finally:
        port.close()
