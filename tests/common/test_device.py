"""The shared device-reader loop, driven by a reader whose port opens and then fails at once."""

import logging

from common.device import DeviceReader, PortLost


class _Service:
    def __init__(self, steps: int):
        self.log = logging.getLogger("test")
        self.slept: list[float] = []
        self._left = steps

    @property
    def stopping(self) -> bool:
        return self._left <= 0

    def sleep(self, seconds, tick):
        if seconds > 0:
            # Kept unrounded: rounding moved a jittered 0.1600x to 0.16, below 0.8 * 0.2 in floats.
            self.slept.append(seconds)


class _Dropping(DeviceReader):
    """A bridge that accepts the connection and drops it: every open works, every step fails."""

    def __init__(self, svc):
        super().__init__(svc, "socket://bridge:4001", reopen_max_s=2.0)
        self.opens = 0
        self.links: list[dict] = []

    def open_port(self):
        self.opens += 1

    def step(self):
        self.svc._left -= 1
        raise PortLost("the other end closed the connection")

    def close_port(self):
        pass

    def publish_link(self):
        self.links.append(self.health.fields())


def test_a_port_that_opens_and_fails_at_once_is_reopened_with_capped_back_off():
    svc = _Service(steps=8)
    reader = _Dropping(svc)
    reader.run()
    assert reader.opens == 8
    # Back-off doubles from 0.2 s to the 2 s cap, each with up to 20 % jitter.
    assert len(svc.slept) == 8, "no reopen without a pause"
    for slept, nominal in zip(svc.slept, [0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0]):
        assert 0.8 * nominal - 1e-9 <= slept <= min(2.0, 1.2 * nominal) + 1e-9, svc.slept
    assert reader.links[-1]["state"] == "down" and reader.health.fields()["errors"] == {"io": 8}


def test_a_lost_port_is_closed_and_never_left_open_at_the_end():
    class Closing(_Dropping):
        closed = 0

        def close_port(self):
            self.closed += 1
    svc = _Service(steps=3)
    reader = Closing(svc)
    reader.run()
    assert reader.closed == 3 and not reader.is_open
