"""Fixtures shared by every test: child processes, bus watchers, brokers and collectors that never
outlive their test, and a bus.

A test that starts processes, brokers or displays (it uses one of PROCESS_FIXTURES) is marked
``slow`` here, so ``make check`` (``-m "not slow"``) runs the pure tests in seconds; a pure test
that is slow for another reason carries the mark itself.
"""

from collections.abc import Callable, Iterator

import pytest

from common.bus import Bus
from harness.proc import Child

PROCESS_FIXTURES = {"spawn", "watch", "broker", "collect", "xvfb", "stack"}


def pytest_collection_modifyitems(items):
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _factory(make: Callable, close: Callable) -> Iterator[Callable]:
    """A fixture body: hands out ``make`` and closes everything made with it at the end."""
    made = []

    def start(*args, **kw):
        made.append(make(*args, **kw))
        return made[-1]

    yield start
    for thing in reversed(made):
        close(thing)


@pytest.fixture
def spawn():
    """Start child processes (``spawn([...])`` -> Child); all are stopped when the test ends."""
    yield from _factory(lambda args, **kw: Child([str(a) for a in args], **kw), Child.finish)


@pytest.fixture
def watch():
    """``watch(endpoints, topics)`` -> BusWatch; all are closed when the test ends."""
    from harness.watch import BusWatch
    yield from _factory(BusWatch, BusWatch.close)


@pytest.fixture
def broker(tmp_path):
    """``broker(**options)`` -> a private Mosquitto; all are stopped when the test ends."""
    from harness.mosquitto import Mosquitto
    count = iter(range(100))
    yield from _factory(lambda **kw: Mosquitto(tmp_path / f"mq{next(count)}", **kw), Mosquitto.stop)


@pytest.fixture
def collect():
    """``collect(port, ...)`` -> a Collector (ThingsBoard's view); all are closed at the end."""
    from harness.mosquitto import Collector
    yield from _factory(Collector, Collector.close)


@pytest.fixture
def bus():
    with Bus(max_message_bytes=4096) as b:
        yield b
