"""The serial link to the BMS: one request in flight, replies cut by the frame splitter.

``serial_for_url`` gives one code path for a device (/dev/ttyUSB0), a TCP serial bridge
(socket://host:port) and RFC 2217 (rfc2217://). Before each request the input is flushed, so a
late reply to an earlier request cannot be taken as this one's answer. The reply must start
within the response timeout; once its header is in, the rest gets the wire time its LENGTH
implies at the configured baud rate plus the same timeout. Frames are never cut by readline()
or by a sleep. An adapter that echoes the request (RS485 half-duplex) is tolerated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import serial

from common import pace
from common.device import NoReply, PortLost
from common.pace.frame import HEADER_CHARS
from common.service import TRACE

log = logging.getLogger(__name__)

READ_SLICE_S = 0.05
HUNT_BLOCK = 4096
BITS_PER_CHAR = 10
# Quiet longer than the gap between two replies of a BMS working through held requests.
DRAIN_QUIET_S = 0.25
DRAIN_MAX_S = 10.0


class Link:
    """An open port to the BMS. Methods raise PaceError for what the BMS sent, and the transport
    errors of common.device for the line: PortLost for the port, NoReply for silence."""

    def __init__(self, url: str, baud: int, response_timeout_s: float):
        self.url = url
        self.baud = baud
        self.response_timeout_s = response_timeout_s
        self.splitter = pace.FrameSplitter()
        self.junk_events = 0
        try:
            self._port = serial.serial_for_url(url, do_not_open=True, baudrate=baud, timeout=READ_SLICE_S,
                                               write_timeout=2.0, exclusive=not url.startswith(("socket:", "rfc2217:")))
            self._port.open()
        except (serial.SerialException, OSError, ValueError) as e:
            raise PortLost(f"cannot open {url}: {e}") from None

    def _wanted(self) -> int:
        """Characters that complete the header or the frame being received (1 while idle)."""
        pending = self.splitter.pending
        if pending == 0:
            return 1
        total = self.splitter.expected_total()
        return (HEADER_CHARS if total is None else total) - pending

    def _read(self, want: int) -> bytes:
        """``want`` characters (or fewer at the read timeout). While hunting for a frame start
        (want 1), whatever else has already arrived is taken too: a line full of junk is read in
        blocks, not one system call per byte."""
        chunk = self._port.read(want)
        if chunk and want == 1:
            self._port.timeout = 0
            try:
                chunk += self._port.read(HUNT_BLOCK)
            finally:
                self._port.timeout = READ_SLICE_S
        return chunk

    def _nap(self, seconds: float, idle: Callable[[], None]) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0.005:
            time.sleep(min(left, 0.1))
            idle()

    def close(self) -> None:
        try:
            self._port.close()
        except (serial.SerialException, OSError):
            pass

    def drain(self, idle: Callable[[], None], quiet_s: float = DRAIN_QUIET_S) -> int:
        """Read and drop whatever arrives until the line has been quiet ``quiet_s`` (at most
        DRAIN_MAX_S): a bridge's backlog after a freeze, whose held requests the BMS may still be
        answering one by one. Returns the bytes dropped; they are not junk (frames, only late)."""
        dropped, deadline = 0, time.monotonic() + DRAIN_MAX_S
        quiet_until = time.monotonic() + quiet_s
        try:
            while (now := time.monotonic()) < min(quiet_until, deadline):
                chunk = self._port.read(HUNT_BLOCK)
                if chunk:
                    dropped += len(chunk)
                    quiet_until = now + quiet_s
                idle()
        except (serial.SerialException, OSError) as e:
            raise PortLost(f"{self.url}: {e}") from None
        self.splitter = pace.FrameSplitter()
        return dropped

    def transact(self, request: bytes, idle: Callable[[], None] = lambda: None) -> pace.Frame:
        """Send ``request`` and return the reply frame (RTN not checked). ``idle`` is called
        between reads, so the caller can publish while a long reply comes in."""
        try:
            self._port.reset_input_buffer()
            self.splitter.reset()
            junk_before = self.splitter.junk_bytes
            log.log(TRACE, "-> %r", request)
            self._port.write(request)
            return self._receive(pace.parse_frame(request), idle, junk_before)
        except (serial.SerialException, OSError) as e:
            raise PortLost(f"{self.url}: {e}") from None

    def _receive(self, request: pace.Frame, idle: Callable[[], None], junk_before: int) -> pace.Frame:
        deadline = time.monotonic() + self.response_timeout_s
        sized = False
        try:
            while True:
                want = self._wanted()
                if sized:
                    # A serial line cannot deliver faster than its baud rate: sleep through most of
                    # the rest of the frame instead of waking for every byte.
                    self._nap(want * BITS_PER_CHAR / self.baud - 0.003, idle)
                chunk = self._read(want)
                now = time.monotonic()
                if chunk:
                    log.log(TRACE, "<- %r", chunk)
                    for event in self.splitter.feed(chunk):
                        if isinstance(event, pace.BadFrame):
                            raise event.error
                        if event == request:
                            # Our own request echoed by the adapter: the reply is still to come.
                            sized, deadline = False, now + self.response_timeout_s
                            continue
                        return event
                    if self.splitter.pending and not sized:
                        total = self.splitter.expected_total()
                        # Until the header is in, allow it the timeout; then the wire time of the rest.
                        chars = total if total is not None else HEADER_CHARS
                        deadline = max(deadline, now + self.response_timeout_s
                                       + (chars - self.splitter.pending) * BITS_PER_CHAR / self.baud)
                        sized = total is not None
                if now >= deadline:
                    if self.splitter.pending:
                        raise pace.FrameError(f"reply stopped after {self.splitter.pending} characters"
                                              + (f" of {self.splitter.expected_total()}" if sized else ""))
                    raise NoReply(f"no reply within {self.response_timeout_s:.2f} s")
                idle()
        finally:
            if self.splitter.junk_bytes > junk_before:
                self.junk_events += 1
                log.log(TRACE, "dropped %d junk bytes", self.splitter.junk_bytes - junk_before)
