"""Shipped systemd units and the restart loop: absolute paths, real modules, no orphan on stop."""

import configparser
import importlib.util
import os
import signal

import psutil

from harness.proc import REPO, wait_for

UNITS = sorted((REPO / "deploy/systemd").glob("*.service"))


def test_every_unit_runs_an_existing_module_with_absolute_paths_and_restarts():
    assert {u.name for u in UNITS} == {"pace-bms-reader.service", "pace-gps-reader.service",
                                       "pace-tb-uplink.service", "pace-trip.service", "pace-gui.service"}
    target = configparser.ConfigParser(strict=False, interpolation=None)
    target.read_string((REPO / "deploy/systemd/pace-telemetry.target").read_text())
    # The display is left out: a headless car starts the target alone (README).
    assert set(target["Unit"]["Wants"].split()) == {u.name for u in UNITS} - {"pace-gui.service"}
    for unit in UNITS:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string(unit.read_text())
        service = parser["Service"]
        argv = service["ExecStart"].split()
        assert argv[0].startswith("/") and argv[1] == "-m" and argv[3] == "--config" and argv[4].startswith("/")
        assert importlib.util.find_spec(argv[2]) is not None, argv[2]
        assert service["Restart"] == "always" and service["WorkingDirectory"].startswith("/")
        assert parser["Unit"]["StartLimitIntervalSec"] == "0"


def test_the_access_token_reaches_only_the_uplink():
    for unit in UNITS:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string(unit.read_text())
        service = parser["Service"]
        has_secrets = "EnvironmentFile" in service or "LoadCredential" in service
        assert has_secrets == (unit.name == "pace-tb-uplink.service"), unit.name


def test_respawn_passes_a_stop_to_its_child_so_systemd_kill_mode_process_leaves_no_orphan(spawn):
    # honcho export systemd writes KillMode=process: only the restart loop's shell gets SIGTERM.
    loop = spawn([str(REPO / "scripts/respawn"), "python3", "-u", "-m", "harness.ticker", "x"])
    assert loop.wait_line(r"tick x \d+ 0", 60)
    child = psutil.Process(loop.pid).children()[0]
    os.kill(loop.pid, signal.SIGTERM)  # the shell only, not its process group
    assert loop.wait(30) == 0
    assert wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 30), "orphaned child"
