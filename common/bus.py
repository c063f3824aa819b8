"""The message bus: ZeroMQ PUB/SUB carrying the envelopes of :mod:`common.messages`.

This is the only module that imports zmq. Each publishing service binds one PUB socket at its
own endpoint; a consumer connects one SUB socket to every publisher it needs. No broker sits in
the middle, so any process can die and come back without the others noticing more than a gap.

What a subscriber can rely on, and what it must tolerate:

* SUB sockets reconnect by themselves, so a subscriber may start before its publishers, and a
  publisher killed and restarted on the same endpoint is picked up again by the same socket.
* Messages sent while nobody is connected (or faster than a slow reader drains, past the high
  water mark) are dropped by ZeroMQ. Every message is a full snapshot re-sent every period, and
  ``seq`` gaps are counted, so loss is visible and heals by itself.
* A body may be anything: not msgpack, too large, nested too deep, an unknown version, the
  wrong shape. Such a message is counted under its kind, logged the first time that kind is
  seen, and skipped.
* Memory is bounded in bytes: ZeroMQ itself refuses a body over the socket cap (SOCKET_CAP_FACTOR
  times ``max_message_bytes``, at least MIN_SOCKET_CAP) by closing that connection, which the
  subscriber then reopens; a body between the limit and the cap is counted as ``too_large``; the
  receive queue holds RECEIVE_BUDGET_BYTES worth of capped messages per publisher. ``drain``
  reads at most DRAIN_MAX messages a call, so a flood cannot starve the service's own work.
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import zmq

from common import clock, messages
from common.messages import Message, MessageError

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 256 << 10  # a 16-pack snapshot is about 10 KB
SOCKET_CAP_FACTOR = 4
MIN_SOCKET_CAP = 1 << 20
RECEIVE_BUDGET_BYTES = 16 << 20
DRAIN_MAX = 100
COMMAND_MAX_BYTES = 64 << 10
IPC_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
_LOOPBACK_NAMES = {"localhost": "127.0.0.1", "ip6-localhost": "::1"}

OnPublish = Callable[[str, int, "messages.Data"], None]


class EndpointError(ValueError):
    """An endpoint string that is malformed or not allowed."""


class BindError(EndpointError):
    """An endpoint that cannot be bound (in use, no such directory, no such address)."""


def check_endpoint(endpoint: str, allow_remote: bool = False) -> str:
    """Return ``endpoint`` in its canonical spelling if it is a usable tcp:// or ipc:// endpoint,
    else raise EndpointError.

    A tcp endpoint must name a host and a port; binding to anything but a loopback address
    (``*``, ``0.0.0.0``, a LAN address) needs ``allow_remote``, so that a default install never
    exposes battery data to the network. The canonical spelling (``localhost`` as 127.0.0.1, the
    port without leading zeros) lets two spellings of one endpoint be recognised as one. An ipc
    path must fit a Unix socket address and lie in an existing directory.
    """
    if not isinstance(endpoint, str):
        raise EndpointError(f"expected a string like tcp://127.0.0.1:7301, got {_short(endpoint)}")
    if endpoint.startswith("ipc://"):
        return _check_ipc(endpoint)
    if not endpoint.startswith("tcp://"):
        raise EndpointError(f"{_short(endpoint)} is not tcp://host:port or ipc://path")
    parts = urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname
    if not host or port is None or not 1 <= port <= 65535 or parts.path or parts.query or parts.fragment:
        raise EndpointError(f"{_short(endpoint)} is not tcp://host:port with a port 1-65535")
    host = _LOOPBACK_NAMES.get(host, host)
    if not allow_remote and not _is_loopback(host):
        raise EndpointError(f"{_short(endpoint)} is not a loopback address; set bus.allow_remote: true to expose it")
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def _check_ipc(endpoint: str) -> str:
    path = endpoint[len("ipc://"):]
    if not path:
        raise EndpointError(f"{_short(endpoint)} has no path")
    if len(os.fsencode(path)) > IPC_PATH_MAX:
        raise EndpointError(f"ipc path is {len(os.fsencode(path))} bytes; a Unix socket path holds {IPC_PATH_MAX}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise EndpointError(f"{_short(endpoint)}: the directory {os.path.dirname(os.path.abspath(path))} does not exist")
    return f"ipc://{os.path.abspath(path)}"


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ipc_in_use(path: str) -> bool:
    """Whether a process is listening on this Unix socket path (binding would silently take it over)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


class Bus:
    """Owns the ZeroMQ context and every socket made from it; close() releases them all."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        self.max_message_bytes = max_message_bytes
        self._ctx = zmq.Context()
        self._sockets: list[zmq.Socket] = []

    def _socket(self, kind: int) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        # A stopping service must not hang on unsent telemetry; the next snapshot replaces it.
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, 1)  # tcp://[::1]:port; IPv4 addresses work as before
        self._sockets.append(sock)
        return sock

    def publisher(self, endpoint: str, src: str, on_publish: OnPublish | None = None) -> Publisher:
        """A PUB socket bound at ``endpoint``. Raises BindError (one line) when that cannot be."""
        sock = self._socket(zmq.PUB)
        self._sockets.remove(sock)  # _bind closes it on failure; kept only once bound
        self._bind(sock, endpoint)
        self._sockets.append(sock)
        return Publisher(sock, src, on_publish)

    def responder(self, endpoint: str) -> Responder:
        """A ROUTER socket bound at ``endpoint`` for commands (docs/contract.md). Not kept with
        the others: the thread that serves it closes it (a socket belongs to one thread)."""
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, COMMAND_MAX_BYTES)
        self._bind(sock, endpoint)
        return Responder(sock)

    def _bind(self, sock: zmq.Socket, endpoint: str) -> None:
        if endpoint.startswith("ipc://") and _ipc_in_use(endpoint[len("ipc://"):]):
            sock.close(linger=0)
            raise BindError(f"{endpoint} is in use by another process")
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            reason = "is in use by another process" if e.errno == errno.EADDRINUSE else f"cannot be bound: {e}"
            raise BindError(f"{endpoint} {reason}") from None

    def subscriber(self, endpoints: Iterable[str], topics: Iterable[str] = ("",)) -> Subscriber:
        sock = self._socket(zmq.SUB)
        cap = max(SOCKET_CAP_FACTOR * self.max_message_bytes, MIN_SOCKET_CAP)
        sock.setsockopt(zmq.MAXMSGSIZE, cap)
        sock.setsockopt(zmq.RCVHWM, max(4, RECEIVE_BUDGET_BYTES // cap))
        for prefix in topics:
            sock.setsockopt(zmq.SUBSCRIBE, prefix.encode("ascii"))
        for endpoint in endpoints:
            sock.connect(endpoint)
        return Subscriber(sock, self.max_message_bytes)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets.clear()
        self._ctx.term()

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Responder:
    """Serves command requests on a bound ROUTER socket: ``[identity, b"", body]`` in, the same
    envelope with the reply out. A client that gave up is no trouble for a ROUTER (its reply is
    dropped), so one dead client cannot wedge the service."""

    def __init__(self, sock: zmq.Socket):
        self._sock = sock
        self.malformed = 0

    def poll(self, handle: Callable[[bytes], bytes], timeout_s: float = 0.0) -> int:
        """Answer every request waiting (waiting up to ``timeout_s`` for the first); their count."""
        served = 0
        while self._sock.poll(int(timeout_s * 1000) if served == 0 else 0):
            frames = self._sock.recv_multipart()
            if len(frames) != 3 or frames[1] != b"":
                self.malformed += 1  # not a REQ/DEALER request: nothing sensible to answer
                continue
            self._sock.send_multipart([frames[0], b"", handle(frames[2])])
            served += 1
        return served

    def close(self) -> None:
        self._sock.close(linger=0)


class NoAnswer(Exception):
    """A command endpoint did not answer in time (the service is down or busy)."""


def request(endpoint: str, body: bytes, timeout_s: float) -> bytes:
    """Send one request to a command endpoint and return the reply (raises NoAnswer). A fresh
    REQ socket each time, closed with LINGER 0, so a call to a dead service leaves nothing behind."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IPV6, 1)
    try:
        sock.connect(endpoint)
        sock.send(body)
        if not sock.poll(int(timeout_s * 1000)):
            raise NoAnswer(f"no answer on {endpoint} within {timeout_s:g} s")
        return sock.recv()
    finally:
        sock.close(linger=0)


class Publisher:
    """Sends checked envelopes on one bound PUB socket; ``seq`` counts per topic."""

    def __init__(self, sock: zmq.Socket, src: str, on_publish: OnPublish | None = None):
        self._sock = sock
        self.src = src
        self._on_publish = on_publish
        self._seq: collections.Counter[str] = collections.Counter()

    def publish(self, topic: str, data: messages.Data, ts: float | None = None) -> int:
        """Publish ``data`` on ``topic`` observed at ``ts`` (epoch s, default now); return its seq.

        Raises MessageError if ``data`` does not fit the topic's definition; that is a bug in
        the caller, so it is not swallowed here.
        """
        seq = self._seq[topic]
        body = messages.encode(topic, self.src, seq, clock.now() if ts is None else ts, data)
        self._sock.send_multipart([topic.encode("ascii"), body], copy=False)
        self._seq[topic] = seq + 1
        if self._on_publish:
            self._on_publish(topic, seq, data)
        return seq


@dataclass
class SubscriberStats:
    """What a subscriber has seen. ``bad`` counts skipped messages by kind."""

    received: int = 0
    bad: collections.Counter[str] = field(default_factory=collections.Counter)
    lost: int = 0
    restarts: int = 0


class Subscriber:
    """Receives, checks and counts envelopes from one SUB socket connected to many publishers."""

    def __init__(self, sock: zmq.Socket, max_message_bytes: int):
        self._sock = sock
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._max_bytes = max_message_bytes
        self._last_seq: dict[tuple[str, str], int] = {}
        self.stats = SubscriberStats()

    def recv(self, timeout_s: float | None = 0.0) -> Message | None:
        """The next good message, or None when none arrives within ``timeout_s`` (None = wait)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._poller.poll(None if remaining is None else int(remaining * 1000)):
                return None
            frames = self._sock.recv_multipart(zmq.NOBLOCK)
            msg = self._check(frames)
            if msg is not None:
                return msg
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def drain(self, limit: int = DRAIN_MAX) -> dict[str, Message]:
        """Read what is waiting without blocking, up to ``limit`` messages; keep the latest
        message per topic. A flood is read over several calls, never all in one."""
        latest: dict[str, Message] = {}
        for _ in range(limit):
            msg = self.recv(0.0)
            if msg is None:
                break
            latest[msg.topic] = msg
        return latest

    def _check(self, frames: list[bytes]) -> Message | None:
        if len(frames) != 2:
            return self._skip("frames", f"{len(frames)} frames, expected [topic, body]")
        topic_b, body = frames
        if len(body) > self._max_bytes:
            return self._skip("too_large", f"{len(body)} bytes > limit {self._max_bytes}")
        try:
            topic = topic_b.decode("ascii")
            msg = messages.decode(topic, body)
        except UnicodeDecodeError:
            return self._skip("topic", f"non-ASCII topic {topic_b[:40]!r}")
        except MessageError as e:
            return self._skip(e.kind, e.detail)
        self._count_seq(msg)
        self.stats.received += 1
        return msg

    def _skip(self, kind: str, detail: str) -> None:
        self.stats.bad[kind] += 1
        if self.stats.bad[kind] == 1:
            log.warning("skipping bad bus message (%s): %s; further ones of this kind are only counted",
                        kind, detail[:300])
        return None

    def _count_seq(self, msg: Message) -> None:
        key = (msg.src, msg.topic)
        last = self._last_seq.get(key)
        self._last_seq[key] = msg.seq
        if last is None:
            return
        if msg.seq > last:
            self.stats.lost += msg.seq - last - 1
        else:
            self.stats.restarts += 1
            log.info("%s restarted (%s seq %d after %d)", msg.src, msg.topic, msg.seq, last)
