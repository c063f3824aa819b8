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
