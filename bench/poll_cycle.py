"""Poll cycle time of bms_reader against the simulator paced at 9600 baud with a 20 ms response delay.

The wire limit of a cycle is the time its bytes need on the line: every character of the analog
and status requests and replies x 10 bits / 9600 baud, plus one response delay per request; the
block lengths come from the layouts the decoder uses (common/pace/decode.py). The measured figure
is the median time between consecutive snapshots with scan_interval 0 (capacities, info and
settings requests are kept out of the measured cycles).

``per_address``: four daisy-chained packs asked one address at a time, one of them dead. The
median cycle is held against the wire time of the three that answer; the longest cycle against
that plus one response timeout (the dead address costs one timeout now and then, never more).
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
from common.pace.decode import ANALOG_BLOCK, STATUS_BLOCK
from harness.proc import REPO, free_port, write_config

BAUD = 9600
DELAY_S = 0.020
CYCLES = 12
LIMIT_RATIO = 1.10
ADDRESSES = [1, 2, 3, 4]
DEAD = 3
TIMEOUT_S = 0.3
# Long enough for the dead address to be tried again several times (its back-off grows to 60 s).
PER_ADDRESS_CYCLES = 150


def wire_limit(packs: int, cells: int = 16, temps: int = 6, requests: int = 1) -> float:
    """Wire time of ``requests`` analog + status exchanges, each for ``packs`` packs."""
    request = 18 + 2
    analog = 18 + 2 * (2 + packs * ANALOG_BLOCK.length_for(cells_mv=cells, temps_dk=temps))
    status = 18 + 2 * (2 + packs * STATUS_BLOCK.length_for(cell_codes=cells, temp_codes=temps))
    return requests * ((2 * request + analog + status) * 10 / BAUD + 2 * DELAY_S)


def measure(packs: int, tmp, per_address: bool = False) -> list[float]:
    """The periods between consecutive snapshots, the first cycles left out."""
    sim_port = free_port()
    section = {"connection_type": "IP", "bms_ip": "127.0.0.1", "bms_port": sim_port, "scan_interval": 0,
               "capacity_every": 100000, "info_every_s": 86400, "config_every_s": 86400}
    wiring = ["--packs", str(packs)]
    if per_address:
        section.update(stack_addressing="per_address", addresses=ADDRESSES, response_timeout_s=TIMEOUT_S)
        wiring = ["--addresses", ",".join(map(str, ADDRESSES)), "--dead", str(DEAD)]
    cfg = write_config(tmp / f"bench-{packs}-{per_address}.yaml", bms_reader=section)
    sim = subprocess.Popen([sys.executable, "-m", "sim.pace_bms", "--tcp", str(sim_port), *wiring,
                            "--baud", str(BAUD), "--response-delay-ms", str(DELAY_S * 1000)],
                           cwd=REPO, stdout=subprocess.PIPE)
    json.loads(sim.stdout.readline())
    reader = subprocess.Popen([sys.executable, "-m", "services.bms_reader", "--config", str(cfg)], cwd=REPO,
                              stderr=subprocess.DEVNULL)
    stamps = []
    try:
        with Bus() as bus:
            sub = bus.subscriber([load(cfg).bus.bms_reader], ["bms.snapshot"])
            cycles = PER_ADDRESS_CYCLES if per_address else CYCLES
            deadline = time.monotonic() + 60 + cycles
            while len(stamps) < cycles + 2 and time.monotonic() < deadline:
                if sub.recv(5.0) is not None:
                    stamps.append(time.monotonic())
    finally:
        for proc in (reader, sim):
            proc.terminate()
            proc.wait(10)
    return [b - a for a, b in zip(stamps[2:], stamps[3:])]


def run() -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for packs in (1, 4, 8):
            limit = wire_limit(packs)
            measured = statistics.median(measure(packs, Path(tmp)))
            results.append(Result(f"poll cycle, {packs} pack(s), vs wire limit", measured * 1000, limit * 1000, "ms",
                                  target=LIMIT_RATIO))
        periods = measure(1, Path(tmp), per_address=True)
        live = wire_limit(1, requests=len(ADDRESSES) - 1)
        results.append(Result("poll cycle, per_address 4 x 1 pack (1 dead), median vs wire of the 3",
                              statistics.median(periods) * 1000, live * 1000, "ms", target=LIMIT_RATIO))
        results.append(Result("poll cycle, per_address, longest vs wire of the 3 + one timeout",
                              max(periods) * 1000, (live + TIMEOUT_S) * 1000, "ms", target=LIMIT_RATIO))
    return results


if __name__ == "__main__":
    report(run())
