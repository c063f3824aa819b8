"""Poll cycle time of bms_reader against the simulator paced at 9600 baud with a 20 ms response delay.

The wire limit of a cycle is the time its bytes need on the line: every character of the analog
and status requests and replies x 10 bits / 9600 baud, plus one response delay per request.
The measured figure is the median time between consecutive snapshots with scan_interval 0
(capacities and info requests are kept out of the measured cycles).
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import Result, report
from common.bus import Bus
from common.config import load
from harness.proc import REPO, free_port, write_config

BAUD = 9600
DELAY_S = 0.020
CYCLES = 12
LIMIT_RATIO = 1.10


def wire_limit(packs: int, cells: int = 16, temps: int = 6) -> float:
    request = 18 + 2
    analog = 18 + 2 * (2 + packs * (15 + 2 * cells + 2 * temps))
    status = 18 + 2 * (2 + packs * (14 + cells + temps))
    return (2 * request + analog + status) * 10 / BAUD + 2 * DELAY_S


def measure(packs: int, tmp) -> float:
    sim_port = free_port()
    cfg = write_config(tmp / f"bench-{packs}.yaml", bms_reader={
        "connection_type": "IP", "bms_ip": "127.0.0.1", "bms_port": sim_port, "scan_interval": 0,
        "capacity_every": 100000, "info_every_s": 86400})
    sim = subprocess.Popen([sys.executable, "-m", "sim.pace_bms", "--tcp", str(sim_port), "--packs", str(packs),
                            "--baud", str(BAUD), "--response-delay-ms", str(DELAY_S * 1000)],
                           cwd=REPO, stdout=subprocess.PIPE)
    json.loads(sim.stdout.readline())
    reader = subprocess.Popen([sys.executable, "-m", "services.bms_reader", "--config", str(cfg)], cwd=REPO,
                              stderr=subprocess.DEVNULL)
    stamps = []
    try:
        with Bus() as bus:
            sub = bus.subscriber([load(cfg).bus.bms_reader], ["bms.snapshot"])
            deadline = time.monotonic() + 60
            while len(stamps) < CYCLES + 2 and time.monotonic() < deadline:
                if sub.recv(5.0) is not None:
                    stamps.append(time.monotonic())
    finally:
        for proc in (reader, sim):
            proc.terminate()
            proc.wait(10)
    periods = [b - a for a, b in zip(stamps[2:], stamps[3:])]
    return statistics.median(periods)


def run() -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for packs in (1, 4, 8):
            limit = wire_limit(packs)
            measured = measure(packs, Path(tmp))
            results.append(Result(f"poll cycle, {packs} pack(s), vs wire limit", measured * 1000, limit * 1000, "ms",
                                  target=LIMIT_RATIO))
    return results


if __name__ == "__main__":
    report(run())
