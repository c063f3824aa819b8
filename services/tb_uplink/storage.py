"""The outbox as the uplink's main thread keeps it: the writer's connection, and what the disk
under it is doing.

States (``uplink.status.outbox_state``): ``ok``; ``full`` (records that could not be stored are
counted as dropped, and stored again as soon as there is room); ``recovered`` (the file was
damaged: it was set aside with its WAL for inspection, every readable record was copied into a
new outbox, and delivery went on; shown for RECOVERED_SHOWN_S); ``failed`` (another storage error,
named in ``error``). The sender has its own connection; while a damaged file is replaced it steps
aside through the :class:`Gate`.
"""

from __future__ import annotations

import logging
import threading
import time

from services.tb_uplink.outbox import Outbox, OutboxCorrupt, OutboxError, OutboxFull, salvage, set_aside

MAINTAIN_S = 60.0
RECOVERED_SHOWN_S = 600.0
GATE_WAIT_S = 10.0


class Gate:
    """Lets the main thread replace the outbox file while the sender's connection is closed."""

    def __init__(self) -> None:
        self.recovery_requested = threading.Event()
        self.sender_running = False
        self._hold = threading.Event()
        self._held = threading.Event()

    # The sender's side.
    def must_step_aside(self) -> bool:
        return self._hold.is_set()

    def step_aside(self, halt: threading.Event) -> None:
        """Called with the sender's connection closed; returns when it may reopen it."""
        self._held.set()
        while self._hold.is_set() and not halt.is_set():
            halt.wait(0.05)
        self._held.clear()

    # The main thread's side.
    def hold(self) -> None:
        self._hold.set()
        if self.sender_running:
            self._held.wait(GATE_WAIT_S)

    def release(self) -> None:
        self.recovery_requested.clear()
        self._hold.clear()


class Storage:
    def __init__(self, path: str, max_rows: int, max_age_s: float, log: logging.Logger, gate: Gate,
                 keep_s: float = 7 * 86400):
        self.path, self.max_rows, self.max_age_s, self.log, self.gate = path, max_rows, max_age_s, log, gate
        self.keep_s = keep_s
        self.state = "ok"
        self.problem: str | None = None
        self.unstored = 0  # records not stored because the disk was full, not yet in the dropped counter
        self._stats: tuple[int, int | None, int, int, int] = (0, None, 0, 0, 0)
        self._recovered_at: float | None = None
        self._maintained_at = time.monotonic()
        self._was_queued = False
        try:
            self.box = self._open()
        except OutboxCorrupt as e:
            self.box = self._replace(str(e))

    def _open(self) -> Outbox:
        return Outbox(self.path, self.max_rows, self.max_age_s, keep_s=self.keep_s)

    def close(self) -> None:
        self.box.close()

    def add(self, ts_ms: int, values: dict) -> bool:
        """Commit one record; False (and counted) when it could not be stored."""
        try:
            self.box.add(ts_ms, values)
        except OutboxCorrupt as e:
            self.box = self._replace(str(e))
            return self.add(ts_ms, values)
        except OutboxFull as e:
            self.unstored += 1
            self._trouble("full", f"disk full: {self.unstored} record(s) not stored ({e})")
            return False
        except OutboxError as e:
            self.unstored += 1
            self._trouble("failed", str(e))
            return False
        self._stored()
        return True

    def _stored(self) -> None:
        if self.unstored:
            try:
                self.box.count_dropped(self.unstored)
                self.log.warning("the outbox stores records again; %d were not stored and are counted as dropped",
                                 self.unstored)
                self.unstored = 0
            except OutboxError:
                return
        if self.state in ("full", "failed"):
            self.state, self.problem = "ok", None

    def _trouble(self, state: str, problem: str) -> None:
        if self.state != state:
            self.log.error("outbox: %s", problem)
        self.state, self.problem = state, problem

    def stats(self) -> tuple[int, int | None, int, int, int]:
        """(queued, oldest ts_ms, dropped including the records not stored, dead letters, kept)."""
        try:
            self._stats = self.box.stats()
        except OutboxCorrupt as e:
            self.box = self._replace(str(e))
        except OutboxError as e:
            self._trouble("failed", str(e))
        queued, oldest, dropped, dead, kept = self._stats
        return queued, oldest, dropped + self.unstored, dead, kept

    def tick(self) -> None:
        """Once a second: recover if the sender found the file damaged, maintain it on schedule."""
        if self.gate.recovery_requested.is_set():
            self.box = self._replace("the sender could not read it")
        if self.state == "recovered" and time.monotonic() - self._recovered_at >= RECOVERED_SHOWN_S:
            self.state, self.problem = "ok", None
        queued = self._stats[0]
        if time.monotonic() - self._maintained_at >= MAINTAIN_S or (queued == 0 and self._was_queued):
            self._maintained_at = time.monotonic()
            try:
                self.box.maintain(queued)
            except OutboxError as e:
                self.log.warning("outbox maintenance postponed: %s", e)
        self._was_queued = queued > 0

    def _replace(self, reason: str) -> Outbox:
        """Set the damaged file aside, start a new one, and copy into it what can be read."""
        self.gate.hold()
        try:
            try:
                self.box.close()
            except (AttributeError, OutboxError):
                pass
            aside = set_aside(self.path)
            box = self._open()
            saved = salvage(aside, box)
        finally:
            self.gate.release()
        self._recovered_at = time.monotonic()
        self.state = "recovered"
        self.problem = f"the outbox was damaged ({reason}); set aside as {aside.name}, {saved} record(s) saved"
        self.log.error("%s", self.problem)
        return box
