"""Fixtures shared by every test: child processes that never outlive their test, a bus."""

import pytest

from common.bus import Bus
from tests.helpers.proc import Child


@pytest.fixture
def spawn():
    """Start child processes (``spawn([...])`` -> Child); all are killed when the test ends."""
    children: list[Child] = []

    def start(args: list, **kw) -> Child:
        child = Child([str(a) for a in args], **kw)
        children.append(child)
        return child

    yield start
    for child in children:
        child.finish()


@pytest.fixture
def watch():
    """``watch(endpoints, topics)`` -> BusWatch; all are closed when the test ends."""
    from tests.helpers.watch import BusWatch
    watches = []

    def start(endpoints, topics=("",)):
        w = BusWatch(endpoints, topics)
        watches.append(w)
        return w

    yield start
    for w in watches:
        w.close()


@pytest.fixture
def bus():
    with Bus(max_message_bytes=4096) as b:
        yield b
