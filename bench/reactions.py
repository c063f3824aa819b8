"""Reaction times the tests do not time (a busy machine would make them flaky): how soon a link
is reported down and up, how soon a silent receiver makes speed unknown, how soon a service stops
on SIGTERM, and how soon a killed service publishes again under its restart loop.

Each figure is the worst of TRIALS runs (one for the restarts), measured from the event the test causes (a kill, a
SIGSTOP, a restart) to the message on the bus, with real processes, real sockets and a pty.
"""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

import psutil

from bench import Result, report
from common.config import load
from harness.proc import REPO, Child, free_port, python_module, write_config
from harness.watch import BusWatch
from harness.xvfb import Xvfb

TRIALS = 3
LIMITS_S = {"bms_down": 2.0, "bms_up": 5.0, "gps_stale": 4.0, "stop": 2.0, "restart": 3.0}
STALE_AFTER_S = 3.0
RESPAWN_STEADY_S = 11.0  # scripts/respawn restarts after 1 s a process that ran 10 s or more


class _Run:
    """Children and watchers of one measurement, all stopped at the end."""

    def __init__(self, tmp: Path):
        self.tmp, self.children, self.watches = tmp, [], []

    def spawn(self, args, **kw) -> Child:
        self.children.append(Child([str(a) for a in args], **kw))
        return self.children[-1]

    def watch(self, endpoint: str) -> BusWatch:
        self.watches.append(BusWatch([endpoint]))
        return self.watches[-1]

    def close(self) -> None:
        for watch in self.watches:
            watch.close()
        for child in reversed(self.children):
            child.finish()


def _after(bus: BusWatch, topic: str, test, since: float, timeout: float = 30.0) -> float:
    """Seconds from ``since`` (monotonic) to the arrival of the first matching message after it."""
    found = bus.wait(lambda w: next((t for t, m in w.items(topic) if t >= since and test(m)), None), timeout)
    if found is None:
        raise SystemExit(f"reactions: no matching {topic} within {timeout:g} s")
    return found - since


def bms_link(run: _Run) -> tuple[float, float]:
    """(down after the simulator is killed, up after it is back) for the BMS link over TCP."""
    port = free_port()
    cfg = write_config(run.tmp / "bms.yaml", bms_reader={"connection_type": "IP", "bms_ip": "127.0.0.1",
                                                        "bms_port": port, "scan_interval": 0})
    bus = run.watch(load(cfg).bus.bms_reader)
    sim = run.spawn(python_module("sim.pace_bms", "--tcp", port))
    run.spawn(python_module("services.bms_reader", "--config", cfg))
    _after(bus, "bms.link", lambda m: m.data.state == "up", 0.0)
    downs, ups = [], []
    for _ in range(TRIALS):
        killed = time.monotonic()
        sim.signal(signal.SIGKILL)
        downs.append(_after(bus, "bms.link", lambda m: m.data.state == "down", killed))
        sim.wait(10)
        returned = time.monotonic()
        sim = run.spawn(python_module("sim.pace_bms", "--tcp", port))
        ups.append(_after(bus, "bms.link", lambda m: m.data.state == "up", returned))
    return max(downs), max(ups)


def gps_stale(run: _Run) -> float:
    """From the receiver falling silent (SIGSTOP, port open) to the first gps.fix with valid false."""
    sim = run.spawn(python_module("sim.nmea", "--pty", "--link", run.tmp / "ttyGPS", "--start-s", 20))
    assert sim.wait_line("listening", 30)
    cfg = write_config(run.tmp / "gps.yaml", gps_reader={"source": "serial", "serial_port": str(run.tmp / "ttyGPS"),
                                                        "stale_after_s": STALE_AFTER_S})
    bus = run.watch(load(cfg).bus.gps_reader)
    run.spawn(python_module("services.gps_reader", "--config", cfg))
    worst = 0.0
    for _ in range(TRIALS):
        _after(bus, "gps.fix", lambda m: m.data.valid, time.monotonic())
        silent = time.monotonic()
        sim.signal(signal.SIGSTOP)
        worst = max(worst, _after(bus, "gps.fix", lambda m: not m.data.valid, silent))
        sim.signal(signal.SIGCONT)
    return worst


def _service_config(run: _Run, name: str) -> Path:
    return write_config(run.tmp / f"{name}.yaml", tb_uplink={"token": "bench", "token_env": None,
                                                            "outbox_path": str(run.tmp / f"{name}.db")})


def stop_times(run: _Run, display: str) -> dict[str, float]:
    """Seconds from SIGTERM to the process's exit, per service (worst of TRIALS)."""
    worst: dict[str, float] = {}
    for name in ("bms_reader", "gps_reader", "tb_uplink", "gui"):
        for _ in range(TRIALS):
            child = run.spawn(python_module(f"services.{name}", "--config", _service_config(run, name)),
                              env={"DISPLAY": display})
            if not child.wait_line(rf"{name} running", 30):
                raise SystemExit(f"reactions: {name} did not start: {child.text()[-3:]}")
            time.sleep(1.0)  # into its main loop
            sent = time.monotonic()
            child.signal(signal.SIGTERM)
            if child.proc.wait(30) != 0:
                raise SystemExit(f"reactions: {name} exited with {child.proc.returncode}")
            worst[name] = max(worst.get(name, 0.0), time.monotonic() - sent)
    return worst


def restart_times(run: _Run) -> dict[str, float]:
    """Seconds from kill -9 of a service under scripts/respawn to its first message from the new
    process (the first whose seq is below the last one before the kill: seq starts at 0). Once
    per service, after RESPAWN_STEADY_S of running: a process that dies sooner is in a crash
    loop, which the restart loop backs off on purpose."""
    topics = {"bms_reader": "bms.link", "gps_reader": "gps.link", "tb_uplink": "uplink.status"}
    worst = {}
    for name, topic in topics.items():
        cfg = _service_config(run, f"restart-{name}")
        bus = run.watch(getattr(load(cfg).bus, name))
        started = time.monotonic()
        loop = run.spawn([str(REPO / "scripts/respawn"), *python_module(f"services.{name}", "--config", cfg)])
        _after(bus, topic, lambda m: True, 0.0)
        time.sleep(max(0.0, started + RESPAWN_STEADY_S - time.monotonic()))
        child = psutil.Process(loop.pid).children()[0]
        last = bus.messages(topic)[-1].seq
        killed = time.monotonic()
        child.kill()
        worst[name] = _after(bus, topic, lambda m, s=last: m.seq < s, killed)
    return worst


def run() -> list[Result]:
    display = Xvfb()
    with tempfile.TemporaryDirectory() as tmp:
        runner = _Run(Path(tmp))
        try:
            down, up = bms_link(runner)
            stale = gps_stale(runner)
            stops = stop_times(runner, display.display)
            restarts = restart_times(runner)
        finally:
            runner.close()
            display.stop()
    results = [Result("BMS link down after the simulator is killed", down, LIMITS_S["bms_down"], "s"),
               Result("BMS link up after the simulator returns", up, LIMITS_S["bms_up"], "s"),
               Result(f"GPS speed unknown after the receiver falls silent (stale_after_s {STALE_AFTER_S:g})",
                      stale, LIMITS_S["gps_stale"], "s")]
    results += [Result(f"{name} stops after SIGTERM", s, LIMITS_S["stop"], "s") for name, s in stops.items()]
    results += [Result(f"{name} publishes again after kill -9 (respawn)", s, LIMITS_S["restart"], "s")
                for name, s in restarts.items()]
    return results


if __name__ == "__main__":
    report(run())
