"""Watch the bus from a test: a background thread collects every message with its arrival time."""

from __future__ import annotations

import threading
import time

from common.bus import Bus
from common.messages import Message
from harness.proc import wait_for


class BusWatch:
    def __init__(self, endpoints: list[str], topics: list[str] = ("",)):
        self._endpoints, self._topics = list(endpoints), list(topics)
        self._items: list[tuple[float, Message]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(30)

    def _run(self) -> None:
        with Bus() as bus:
            sub = bus.subscriber(self._endpoints, self._topics)
            self.stats = sub.stats
            self._ready.set()
            while not self._stop.is_set():
                msg = sub.recv(0.05)
                if msg is not None:
                    with self._lock:
                        self._items.append((time.monotonic(), msg))

    def items(self, topic: str | None = None) -> list[tuple[float, Message]]:
        with self._lock:
            return [(t, m) for t, m in self._items if topic is None or m.topic == topic]

    def messages(self, topic: str | None = None) -> list[Message]:
        return [m for _, m in self.items(topic)]

    def wait(self, predicate, timeout: float):
        """Wait until ``predicate(watch)`` is truthy; returns its value, or None on timeout."""
        return wait_for(lambda: predicate(self), timeout)

    def wait_message(self, topic: str, test=lambda m: True, timeout: float = 10.0, after: float = 0.0):
        """The first message on ``topic`` that arrived after monotonic time ``after`` and passes ``test``."""
        def find():
            return next((m for t, m in self.items(topic) if t >= after and test(m)), None)
        return wait_for(find, timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
