"""CPU use of the GUI process under Xvfb with live data, as a fraction of one core.

The PACE simulator (4 packs) and the NMEA simulator feed the real readers; the GUI runs its
10 frames/s loop for 30 s after a 5 s warm-up. CPU time is the GUI process's user + system time
(Mesa's llvmpipe threads included) from psutil, divided by the wall time. Measured twice: with
the default ``render: on_change`` (held against the limit) and with ``render: always``, which
rasterises every one of the 10 frames a second (shown for information: under software GL an
800x480 frame costs about 8 ms of CPU even when the window is empty).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench import Result, report
from harness.proc import REPO, free_port, write_config
from harness.xvfb import Xvfb

SECONDS = 30
LIMIT = 0.10


def run() -> list[Result]:
    on_change = measure("on_change")
    always = measure("always")
    return [Result(f"GUI CPU under Xvfb, 10 frames/s loop, {SECONDS} s live data", on_change, LIMIT, "cores"),
            Result("GUI CPU, render: always (every frame drawn)", always, LIMIT, "cores", target=None)]


def measure(render: str) -> float:
    display = Xvfb()
    procs = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bms_port, gps_port = free_port(), free_port()
            cfg = write_config(Path(tmp) / "c.yaml",
                               bms_reader={"connection_type": "IP", "bms_ip": "127.0.0.1", "bms_port": bms_port,
                                           "scan_interval": 0},
                               gps_reader={"source": "tcp", "tcp_host": "127.0.0.1", "tcp_port": gps_port},
                               gui={"fps": 10, "render": render})
            env = {**__import__("os").environ, **display.env()}

            def start(*args):
                procs.append(subprocess.Popen([sys.executable, "-m", *map(str, args)], cwd=REPO, env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                return procs[-1]
            start("sim.pace_bms", "--tcp", bms_port, "--packs", 4)
            start("sim.nmea", "--tcp", gps_port, "--start-s", 20)
            start("services.bms_reader", "--config", cfg)
            start("services.gps_reader", "--config", cfg)
            gui = psutil.Process(start("services.gui", "--config", cfg).pid)
            time.sleep(5)
            before, t0 = gui.cpu_times(), time.monotonic()
            time.sleep(SECONDS)
            after, t1 = gui.cpu_times(), time.monotonic()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        display.stop()
    used = (after.user + after.system) - (before.user + before.system)
    return used / (t1 - t0)


if __name__ == "__main__":
    report(run())
