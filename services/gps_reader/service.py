"""gps_reader: NMEA from a serial port, a TCP stream, gpsd or a log file -> gps.fix and gps.link.

One gps.fix per fix epoch (services/gps_reader/nmea.py has the rules). An epoch is published
as soon as the sentence type that ends the receiver's cycle arrives (learnt from the first
epochs, as gpsd does); until that is learnt, or when that sentence is lost, when the next epoch
starts or the line has been quiet for QUIET_S. If the quiet was a stall inside the burst, the
epoch is published again when the rest of it has arrived. With no epoch for ``stale_after_s`` the reader publishes
``valid: false`` with unknown speed every second, and the link goes down. Bad input is counted
by kind in gps.link and skipped; a lost port or gpsd connection is reopened with capped
back-off; the service never exits for either.
"""

from __future__ import annotations

import datetime as dt
import time

from common import clock, messages
from common.device import DeviceReader, PortLost
from common.health import Every
from common.service import TRACE, Service
from services.gps_reader import nmea
from services.gps_reader.sources import FileSource, describe, open_source

QUIET_S = 0.15
READ_SLICE_S = 0.05
# A run of this many bad lines with no good one in between (wrong baud rate, binary protocol).
DOWN_AFTER_BAD_LINES = 20


class GpsReader(DeviceReader):
    """Reads on the shared device loop (common/device.py)."""

    def __init__(self, svc: Service):
        super().__init__(svc, describe(svc.section), svc.section.reopen_max_s, down_after=DOWN_AFTER_BAD_LINES)
        self.cfg = svc.section
        self.pub = svc.publisher()
        self.source = None
        self.splitter = nmea.LineSplitter(json=self.cfg.source == "gpsd")
        self.epochs = nmea.EpochAssembler()
        self.sentences = 0
        self.bad_sentences = 0
        self.bad_at_epoch = 0
        self.rollover_periods = 0
        self.last_data_at = time.monotonic()
        self.last_epoch_at = time.monotonic()
        self.stale_every = Every(1.0)

    def open_port(self) -> None:
        self.source = open_source(self.cfg)
        self.svc.log.info("reading NMEA from %s", self.source.name)
        self.last_data_at = self.last_epoch_at = time.monotonic()

    def close_port(self) -> None:
        if self.source is not None:
            self.source.close()
        self.source = None

    def publish_link(self) -> None:
        self.pub.publish("gps.link", messages.GpsLink(
            **self.health.fields(), sentences=self.sentences, bad_sentences=self.bad_sentences,
            source=self.cfg.source))

    def step(self) -> None:
        """Read what arrived and act on it; close an epoch when the line goes quiet."""
        try:
            data = self.source.read(READ_SLICE_S)
            if data:
                self.last_data_at = time.monotonic()
                self._feed(data)
            elif getattr(self.source, "finished", False):
                self._feed_lines(self.splitter.flush())  # a log file may lack its last line end
                self._publish(self.epochs.flush())
            elif self._quiet():
                self._publish(self.epochs.flush())
        finally:
            self._check_stale()

    def lost(self, error: PortLost) -> None:
        self._publish(self.epochs.flush())
        self.splitter = nmea.LineSplitter(json=self.cfg.source == "gpsd")
        super().lost(error)

    def _quiet(self) -> bool:
        return self.epochs.current is not None and time.monotonic() - self.last_data_at >= QUIET_S

    def _feed(self, data: bytes) -> None:
        self._feed_lines(self.splitter.feed(data))

    def _feed_lines(self, lines) -> None:
        for item in lines:
            if isinstance(item, nmea.BadSentence):
                self._bad(item)
                continue
            if item.startswith(b"{"):
                self.svc.log.log(TRACE, "gpsd: %r", item[:200])
                continue
            try:
                sentence, junk = nmea.parse_line(item)
            except nmea.BadSentence as e:
                self._bad(e)
                continue
            if junk:
                self._bad(nmea.BadSentence("junk", f"bytes before '$' in {item[:40]!r}"))
            self.svc.log.log(TRACE, "<- %s", sentence)
            self.sentences += 1
            self.health.ok()
            self.backoff.reset()
            if nmea.is_fix_data(sentence):
                self._add(sentence)

    def _add(self, sentence) -> None:
        date = self.epochs.date
        closed = self.epochs.add(sentence)
        if closed is not None:
            self._publish(closed, date)
            if isinstance(self.source, FileSource):
                current = self.epochs.current
                self.source.pace(closed.time, current.time if current else None, self.sleep)
        if self.epochs.current.started_at is None:
            self.epochs.current.started_at = clock.now()
        if self.epochs.complete and not isinstance(self.source, FileSource):
            # The receiver's cycle has ended: publish now, not after the quiet window. (A log
            # file is paced by its epochs' times, which needs the next epoch's start.)
            self._publish(self.epochs.flush(early=True))

    def _bad(self, error: nmea.BadSentence) -> None:
        self.bad_sentences += error.count
        self.health.fail(error.kind, str(error).split(": ", 1)[-1], times=error.count)

    def _publish(self, epoch: nmea.Epoch | None, date: dt.date | None = None) -> None:
        if epoch is None:
            return
        fields = nmea.fix_fields(epoch, self._unrolled(date or self.epochs.date))
        self.pub.publish("gps.fix", messages.GpsFix(**fields), ts=epoch.started_at)
        self.last_epoch_at = time.monotonic()
        self.bad_at_epoch = self.bad_sentences

    def _unrolled(self, date: dt.date | None) -> dt.date | None:
        """The receiver's date with the GPS week-number rollover undone (common/clock.py)."""
        if date is None:
            return None
        corrected, periods = clock.unroll(date, self.cfg.date_floor)
        if periods != self.rollover_periods:
            self.rollover_periods = periods
            if periods:
                self.svc.log.warning("the receiver's dates are %d x 1024 weeks behind (GPS week-number "
                                     "rollover): %s taken as %s", periods, date, corrected)
        return corrected

    def _check_stale(self) -> None:
        """No epoch for stale_after_s since the last one (or since the source opened): the fix is
        unknown and the link down, whether the source fell silent, never spoke NMEA (a wrong baud
        rate, a binary protocol, another device) or sends only sentences without a fix."""
        silent = time.monotonic() - self.last_epoch_at
        if silent < self.cfg.stale_after_s:
            return
        if self.health.state != "down":
            bad = self.bad_sentences - self.bad_at_epoch
            what = f"; {bad} unusable line(s) meanwhile" if bad else ""
            self.health.fail("timeout", f"no NMEA epoch for {silent:.1f} s{what}", lost=True)
        if self.stale_every.due():
            self.pub.publish("gps.fix", messages.GpsFix(valid=False))

def main(svc: Service) -> None:
    GpsReader(svc).run()
