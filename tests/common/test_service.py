"""The runner: every service starts on it and stops on SIGTERM or SIGINT, status 0 (how soon:
bench/reactions.py)."""

import signal

import pytest

from harness.proc import python_module, write_config

HEADLESS = ["bms_reader", "gps_reader", "tb_uplink"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("service", HEADLESS)
def test_service_stops_cleanly_on_a_signal(tmp_path, spawn, service, sig):
    cfg = write_config(tmp_path / "c.yaml", tb_uplink={"token": "t", "outbox_path": str(tmp_path / "o.db")})
    child = spawn(python_module(f"services.{service}", "--config", cfg))
    assert child.wait_line(rf"{service} running", 60), child.text()
    child.signal(sig)
    assert child.wait(60) == 0, child.text()
    assert any(f"{service} stopped" in line for line in child.text("err"))


def test_a_simulated_drive_stamps_on_its_own_time_and_the_system_clock_otherwise():
    from common.clock import Timebase
    assert Timebase().at(1000.0) == 1000.0
    drive = Timebase(8.0, 1000.0)
    assert drive.at(1000.0) == 1000.0 and drive.at(1010.0) == 1080.0 and drive.at(999.0) == 992.0
    assert drive.real_s(16.0) == 2.0
    with pytest.raises(ValueError):
        Timebase(8.0)
