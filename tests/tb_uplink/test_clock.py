"""Record timestamps from a receiver with the GPS week-number rollover bug, through the real
simulator, gps_reader, tb_uplink and Mosquitto. The system clock is set back with libfaketime
(Debian's faketime) on the processes that stand for the car, so the machine's own clock is left
alone."""

import glob
import time

import pytest

from common.config import load
from harness.proc import python_module, write_config
from tests.gps_reader.test_reader import NmeaSim

YEAR_2020 = "@2020-01-01 00:00:00"
ROLLOVER_S = 1024 * 7 * 86400
# The library itself, preloaded, not the faketime wrapper: the wrapper names a semaphore after its
# process id and leaves it behind when it is killed, so a later wrapper that is given the same id
# fails ("sem_open: File exists") and the service never starts; it did once in a long suite.
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
needs_faketime = pytest.mark.skipif(LIBFAKETIME is None, reason="needs Debian's faketime (make test installs it)")


def _car(spawn, tmp_path, sim, mq_port, watch, fake_time=None, **sections):
    cfg = write_config(tmp_path / "c.yaml", **{
        "gps_reader": {**sim.section, **sections.get("gps_reader", {})},
        "tb_uplink": {"host": "127.0.0.1", "port": mq_port, "token": "t", "token_env": None,
                      "outbox_path": str(tmp_path / "o.db"), "upload_interval": 0.3, **sections.get("tb_uplink", {})}})
    status = watch([load(cfg).bus.tb_uplink], ["uplink.status"])
    # Only the wall clock is set back, as on a Pi whose clock is wrong: its monotonic clock still
    # counts from boot. With libfaketime's monotonic clock faked as well (its default), a timed
    # wait (threading.Event.wait, queue.get with a timeout) never returns, because Python gives the
    # kernel a deadline on the faked clock (wolfcw/libfaketime#390); it hung a service in CI once
    # that wait happened to block.
    env = {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": fake_time, "FAKETIME_DONT_FAKE_MONOTONIC": "1"} if fake_time else None
    car = [spawn(python_module(module, "--config", cfg), env=env) for module in ("services.gps_reader", "services.tb_uplink")]
    return status, car


def _said(status, car) -> str:
    """What a failed wait had: the last status and each process's exit status and last lines."""
    last = status.messages("uplink.status")[-1:]
    reason = last[0].data.clock_reason if last else None
    tails = [f"exit {child.proc.poll()}: {child.text()[-8:]}" for child in car]
    return f"last clock_reason {reason!r}; " + "; ".join(tails)


def _stamps(sink, n: int) -> list[float]:
    assert sink.wait_records(n, 90), "no records arrived"
    return [ts / 1000 for ts, _ in sink.snapshot()]


def test_with_a_synchronised_clock_records_keep_the_system_time(spawn, tmp_path, broker, collect, watch):
    # The reader is told to pass the receiver's dates on as they are (a floor before 1999), so
    # the uplink sees GPS time 1024 weeks in the past on every fix, all of them agreeing.
    mq = broker()
    sink = collect(mq.port)
    sim = NmeaSim(spawn, tmp_path, "tcp", "--start-s", 20, "--quirk", "rollover")
    status, car = _car(spawn, tmp_path, sim, mq.port, watch, gps_reader={"date_floor": "1999-01-01"},
                       tb_uplink={"system_clock": "trusted"})
    stamps = _stamps(sink, 8)
    assert all(abs(ts - time.time()) < 300 for ts in stamps), stamps
    said = status.wait_message("uplink.status",
                               lambda m: m.data.clock_reason == "the system clock is NTP-synchronised", 30)
    assert said is not None and said.data.clock_source == "system", _said(status, car)


@needs_faketime
def test_with_the_clock_at_2020_records_carry_the_corrected_gps_date(spawn, tmp_path, broker, collect, watch):
    mq = broker()
    sink = collect(mq.port)
    sim = NmeaSim(spawn, tmp_path, "tcp", "--start-s", 20, "--quirk", "rollover")
    status, car = _car(spawn, tmp_path, sim, mq.port, watch, fake_time=YEAR_2020)
    gps = status.wait_message("uplink.status", lambda m: m.data.clock_source == "gps", 90)
    assert gps is not None, _said(status, car)
    assert "not synchronised" in gps.data.clock_reason or "before the software's date floor" in gps.data.clock_reason
    stamped_by_gps = [ts for ts in _stamps(sink, 10) if abs(ts - time.time()) < 300]
    assert len(stamped_by_gps) >= 3, "records stamped with the corrected GPS date, this week, not 2020 or 2007"


@needs_faketime
def test_gps_time_before_the_floor_is_refused_and_the_status_says_why(spawn, tmp_path, broker, collect, watch):
    mq = broker()
    sink = collect(mq.port)
    sim = NmeaSim(spawn, tmp_path, "tcp", "--start-s", 20, "--quirk", "rollover")
    status, car = _car(spawn, tmp_path, sim, mq.port, watch, fake_time=YEAR_2020, gps_reader={"date_floor": "1999-01-01"})
    refused = status.wait_message("uplink.status", lambda m: m.data.clock_reason is not None
                                  and "GPS time is before the software's date floor" in m.data.clock_reason, 90)
    assert refused is not None, _said(status, car)
    assert refused.data.clock_source == "system-unsynced"
    assert not any(abs(ts - (time.time() - ROLLOVER_S)) < 86400 for ts in _stamps(sink, 5)), "a record filed in 2007"
