"""Procfiles under the real honcho: one killed process comes back alone, the others run on."""

import re
import signal

import psutil

from harness.proc import PY, REPO, python_module, wait_for, write_config

RESTART = "exec scripts/respawn ${PYTHON:-.venv/bin/python} -m "


def _procfile_lines(name):
    return [line for line in (REPO / name).read_text().splitlines() if line and not line.startswith("#")]


def test_every_procfile_line_runs_under_the_restart_loop():
    for name in ("Procfile", "Procfile.demo"):
        for line in _procfile_lines(name):
            assert line.split(": ", 1)[1].startswith("exec scripts/respawn "), line


def _ticks(child, name):
    """(pid, count) of every tick line of process ``name`` in honcho's output."""
    pattern = re.compile(rf"tick {name} (\d+) (\d+)$")
    return [(int(m.group(1)), int(m.group(2))) for line in child.text() if (m := pattern.search(line))]


def test_killed_process_comes_back_alone_while_the_other_runs_on(tmp_path, spawn):
    procfile = tmp_path / "Procfile"
    procfile.write_text("".join(f"{name}: {RESTART}harness.ticker {name}\n" for name in ("steady", "victim")))
    honcho = spawn(python_module("honcho", "start", "-f", procfile, "-d", REPO), env={"PYTHON": PY})
    assert wait_for(lambda: _ticks(honcho, "steady") and _ticks(honcho, "victim"), 60), honcho.text()
    victim_pid = _ticks(honcho, "victim")[-1][0]
    steady_pid = _ticks(honcho, "steady")[-1][0]
    psutil.Process(victim_pid).kill()
    back = wait_for(lambda: [pid for pid, _ in _ticks(honcho, "victim") if pid != victim_pid], 60)
    assert back, "the killed process did not come back"
    seen_after = len(_ticks(honcho, "steady")) + 10
    assert wait_for(lambda: len(_ticks(honcho, "steady")) >= seen_after, 60)

    # The other process ran on throughout: one pid, and every line it printed came through in order.
    steady = _ticks(honcho, "steady")
    assert {pid for pid, _ in steady} == {steady_pid}, "the other process was restarted too"
    assert [n for _, n in steady] == list(range(len(steady))), "the other process's output was interrupted"
    assert any("victim exited with status -9" in line or "status 137" in line for line in honcho.text())

    honcho.signal(signal.SIGINT)
    assert honcho.wait(30) is not None
    assert wait_for(lambda: not any(psutil.pid_exists(p) for p in (steady_pid, back[0])), 30), "processes left behind"


def test_headless_set_starts_from_the_production_procfile(tmp_path, spawn):
    cfg = write_config(tmp_path / "c.yaml", tb_uplink={"token": "t", "outbox_path": str(tmp_path / "o.db")})
    honcho = spawn(python_module("honcho", "start", "bms_reader", "gps_reader", "tb_uplink"),
                   env={"PYTHON": PY, "PACE_CONFIG": str(cfg)})
    for name in ("bms_reader", "gps_reader", "tb_uplink"):
        assert honcho.wait_line(rf"{name} running", 60), honcho.text()
    children = psutil.Process(honcho.pid).children(recursive=True)
    assert not any("services.gui" in " ".join(p.cmdline()) for p in children)
    honcho.signal(signal.SIGINT)
    assert honcho.wait(30) is not None
    assert wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children), 30)
