"""The loop every device reader runs, and the errors of the line under it.

A reader (bms_reader, gps_reader) only says how to talk to its device: how to open its port,
what one step of work is (poll a cycle, read what arrived), what to do when the port is lost.
:class:`DeviceReader` does the rest the same way for both: open with capped back-off (one
``io`` counted per outage however often the reopen is retried), publish the link's health once
a second and at once on a change, reopen a lost port, stop promptly when the service is asked
to.

Transport errors are not protocol errors: a lost port or a silent line says nothing about the
bytes of a frame, so they are a family of their own (:class:`TransportError`), apart from
``common.pace.PaceError`` and the NMEA layer's ``BadSentence``.
"""

from __future__ import annotations

from common.health import Backoff, Every, LinkHealth
from common.service import Service


class TransportError(Exception):
    """The port or the line failed, not the protocol. ``kind`` is what the link counts it under."""

    kind = "io"


class PortLost(TransportError):
    """The port failed or cannot be opened (unplugged adapter, bridge closed or restarted, gpsd
    gone): it must be reopened."""

    kind = "io"


class NoReply(TransportError):
    """Nothing came back within the response timeout."""

    kind = "timeout"


class Stopping(Exception):
    """Raised from inside a long step (a reply still arriving) when the service is asked to stop."""


class DeviceReader:
    """Subclasses implement ``open_port``, ``step`` and ``close_port``, and may extend ``lost``
    and ``publish_link``."""

    def __init__(self, svc: Service, port_name: str, reopen_max_s: float, down_after: int = 2):
        self.svc = svc
        self.health = LinkHealth(port_name, svc.log, down_after=down_after)
        self.backoff = Backoff(0.2, reopen_max_s)
        self.is_open = False
        self._link_every = Every(1.0)

    # What a reader says about its device.
    def open_port(self) -> None:
        """Open the port; raise PortLost when it cannot be opened."""
        raise NotImplementedError

    def step(self) -> None:
        """One step of work on the open port; raise PortLost when the port is lost."""
        raise NotImplementedError

    def close_port(self) -> None:
        raise NotImplementedError

    def publish_link(self) -> None:
        """Publish the link's health (the reader's own link topic)."""
        raise NotImplementedError

    def lost(self, error: PortLost) -> None:
        """The port was lost: close it and count the outage; readers extend this to drop what
        was half-received."""
        self.close_port()
        self.is_open = False
        self.health.fail(error.kind, str(error), lost=True)
        self.tick()

    # The loop.
    def run(self) -> None:
        try:
            while not self.svc.stopping:
                if not self.is_open and not self._open():
                    self.sleep(self.backoff.next())
                    continue
                try:
                    self.step()
                except PortLost as e:
                    self.lost(e)
                    # A port that opens and fails at once (a bridge that accepts and drops) must
                    # not be reopened in a spin: the same capped back-off as a failed open.
                    self.sleep(self.backoff.next())
                self.tick()
        except Stopping:
            pass
        finally:
            if self.is_open:
                self.close_port()

    def _open(self) -> bool:
        try:
            self.open_port()
        except PortLost as e:
            self.health.unreachable(str(e))
            self.tick()
            return False
        self.is_open = True
        return True

    def tick(self) -> None:
        """Publish the link once a second, and at once when its state changed."""
        if self._link_every.due() or self.health.changed:
            self.health.changed = False
            self.publish_link()

    def sleep(self, seconds: float) -> None:
        """Sleep, still publishing the link; returns early when the service is asked to stop."""
        self.svc.sleep(seconds, self.tick)

    def idle(self) -> None:
        """Called while a step waits on the device: keeps the link published, stops promptly."""
        if self.svc.stopping:
            raise Stopping
        self.tick()
