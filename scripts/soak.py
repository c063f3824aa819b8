"""make soak: the whole system for a while (default 10 min) with faults injected at random.

Simulators, the three services and a private Mosquitto (persistent, with a persistent subscriber
standing in for ThingsBoard) run under honcho from Procfile.demo; the simulators also inject
their own faults. Every 15-45 s one of these happens at random: the BMS simulator is killed (the
link drops and returns), the GPS simulator is killed, the GPS receiver freezes for 8 s, the broker
is stopped for 10-40 s, the outbox's disk is full for 10-30 s (a 64 MiB tmpfs; needs root, left
out with a line otherwise), the uplink is killed with a backlog queued and its outbox's header
overwritten (it must set the file aside and salvage it).

At the end: records the uplink committed vs records delivered (every committed record must be
delivered; records the full disk could not store are never committed, and are counted as
dropped), restarts of each process, and each service's resident memory after the warm-up and at
the end (growth must stay under 10 %; a service a fault killed is reported, not compared).

    python scripts/soak.py [--minutes 10] [--seed N] [--only FAULT ...]
"""

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from harness.mosquitto import Collector, Mosquitto  # noqa: E402
from harness.proc import Child, wait_for  # noqa: E402
from harness.system import System  # noqa: E402

SERVICES = ["bms_reader", "gps_reader", "tb_uplink"]
WARMUP_S = 60
MAX_GROWTH = 0.10
FAULTS = ["kill bms_sim", "kill gps_sim", "freeze gps_sim", "broker outage", "disk full", "damage outbox"]


class Faults:
    """Injects one fault at a time into the running system. While it waits it reads the outbox
    witness every second, so that records committed to an outbox about to be damaged, and to the
    new one that replaces it, are seen (the witness only learns of a new file when it looks)."""

    def __init__(self, system: System, broker: Mosquitto, sink: Collector, rng: random.Random,
                 disk: Path | None, only: list[str] | None = None):
        self.system, self.broker, self.sink, self.rng, self.disk = system, broker, sink, rng, disk
        self.kinds = [f for f in only or FAULTS if disk or f != "disk full"]
        self.killed: set[str] = set()

    def wait(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.system.records()
            time.sleep(min(1.0, max(0.0, until - time.monotonic())))

    def inject(self) -> str:
        fault = self.rng.choice(self.kinds)
        print(f"soak: {time.strftime('%H:%M:%S')} {fault}", flush=True)
        {"kill": self._kill, "freeze": self._freeze, "broker": self._outage, "disk": self._disk_full,
         "damage": self._damage}[fault.split()[0]](fault.split()[-1])
        return fault

    def _kill(self, name: str) -> None:
        if pid := self.system.pid(name):
            psutil.Process(pid).kill()

    def _freeze(self, name: str) -> None:
        if pid := self.system.pid(name):
            psutil.Process(pid).send_signal(signal.SIGSTOP)
            self.wait(8)
            psutil.Process(pid).send_signal(signal.SIGCONT)

    def _outage(self, _: str) -> None:
        self.broker.stop()
        self.wait(self.rng.uniform(10, 40))
        self.broker.start()

    def _disk_full(self, _: str) -> None:
        filler = self.disk / "filler"
        with open(filler, "wb", buffering=0) as f:  # unbuffered: no ENOSPC left over for close()
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass  # ENOSPC: the disk is full
        self.wait(self.rng.uniform(10, 30))
        filler.unlink()

    def _damage(self, _: str) -> None:
        """With the broker down for a while (so records are queued), freeze the uplink (nothing
        half-written), note what it committed, overwrite the first 100 bytes of its outbox (an SD
        card's damaged first sector), then kill it: the respawned uplink must set the file aside
        and salvage every queued record from it."""
        pid = self.system.pid("tb_uplink")
        if not pid:
            return
        self.broker.stop()
        self.wait(self.rng.uniform(10, 20))
        psutil.Process(pid).send_signal(signal.SIGSTOP)
        made = self.system.records()
        queued = len(set(made) - {ts for ts, _ in self.sink.snapshot()})
        print(f"soak: {queued} record(s) queued in the outbox as it is damaged", flush=True)
        with open(self.system.outbox.path, "r+b") as f:
            f.write(self.rng.randbytes(100))
        psutil.Process(pid).kill()
        self.killed.add("tb_uplink")
        self.wait(5)
        self.broker.start()


def small_disk(tmp: Path) -> Path | None:
    if os.geteuid() != 0:
        print("soak: not root, so no tmpfs to fill: the disk-full fault is left out", flush=True)
        return None
    where = tmp / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(where)], check=True)
    return where


@dataclass
class Outcome:
    """What one soak run saw, gathered before the system is stopped."""

    faults: list[str] = field(default_factory=list)
    made: list[int] = field(default_factory=list)
    delivered: set[int] = field(default_factory=set)
    dead_letters: int = 0
    not_stored: int = 0
    salvaged: list[int] = field(default_factory=list)
    restarts: dict[str, int] = field(default_factory=dict)
    rss: dict[str, tuple[int, int]] = field(default_factory=dict)  # after warm-up, at the end
    same_pid: dict[str, bool] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)


def _matches(lines: list[str], pattern: str) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.search(pattern, line))]


def _gather(system: System, sink: Collector, outcome: Outcome) -> None:
    outcome.made = system.records()
    wait_for(lambda: sink.has_all(outcome.made), 120)
    outcome.delivered = {ts for ts, _ in sink.snapshot()} & set(outcome.made)
    outcome.dead_letters = system.bus.messages("uplink.status")[-1].data.dead_letters
    uplink = system.lines("tb_uplink")
    outcome.not_stored = sum(_matches(uplink, r"; (\d+) were not stored"))
    outcome.salvaged = _matches(uplink, r"set aside as \S+, (\d+) record\(s\) saved$")
    for line in system.honcho.text():
        if m := re.match(r"^\S+ (\S+)\.1\s+\| respawn: ", line):
            outcome.restarts[m.group(1)] = outcome.restarts.get(m.group(1), 0) + 1


def _soak(args: argparse.Namespace, tmp: Path, spawn, outcome: Outcome) -> None:
    rng = random.Random(args.seed)
    disk = small_disk(tmp)
    broker = Mosquitto(tmp / "mq", persistence=True)
    sink = Collector(broker.port, client_id="thingsboard", clean=False)
    system = System(spawn, tmp, ["bms_sim", "gps_sim", "bms_reader", "gps_reader", "tb_uplink"], broker.port,
                    "soak-token", bms_args="--packs 4 --fault corrupt --fault junk --fault no_answer "
                                           "--fault-prob 0.03", gps_args="--fault lose_fix --fault bad_checksum "
                                                                         "--fault-prob 0.02",
                    outbox_dir=disk)
    faulter = Faults(system, broker, sink, rng, disk, args.only)
    try:
        end = time.monotonic() + args.minutes * 60
        time.sleep(WARMUP_S)
        start_rss = {name: psutil.Process(system.pid(name)).memory_info().rss for name in SERVICES}
        start_pids = {name: system.pid(name) for name in SERVICES}
        print(f"soak: seed {args.seed}, {args.minutes:g} min", flush=True)
        while time.monotonic() < end - 60:
            faulter.wait(rng.uniform(15, 45))
            outcome.faults.append(faulter.inject())
        faulter.wait(max(0.0, end - time.monotonic()))
        for name in SERVICES:
            outcome.rss[name] = (start_rss[name], psutil.Process(system.pid(name)).memory_info().rss)
            outcome.same_pid[name] = start_pids[name] == system.pid(name)
        outcome.killed = faulter.killed
        _gather(system, sink, outcome)
    finally:
        system.honcho.signal(signal.SIGINT)
        system.honcho.wait(15)
        log = REPO / "var" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.log"
        log.parent.mkdir(exist_ok=True)
        log.write_text("\n".join(system.honcho.text()) + "\n")
        print(f"soak: the system's output is in {log}")
        sink.close()
        broker.stop()
        system.close()
        if disk:
            subprocess.run(["umount", "-l", str(disk)], check=False)


def _report(o: Outcome) -> bool:
    print(f"\nfaults injected: {len(o.faults)} ({', '.join(sorted(set(o.faults)))})")
    print(f"records made {len(o.made)} ({len(set(o.made))} distinct ts), delivered {len(o.delivered)}")
    ok = len(o.made) == len(set(o.made)) == len(o.delivered) and len(o.made) > 0
    print(f"records the full disk could not store (counted as dropped): {o.not_stored}; "
          f"salvaged from damaged outboxes: {o.salvaged or 'none'}; dead letters: {o.dead_letters}")
    print("restarts: " + (", ".join(f"{k} {v}" for k, v in sorted(o.restarts.items())) or "none"))
    print(f"{'service':<12} {'RSS after warm-up':>18} {'RSS at end':>12} {'growth':>8}")
    for name in SERVICES:
        before, after = o.rss[name]
        growth = after / before - 1
        same = o.same_pid[name]
        note = "" if same else "  (killed by a fault)" if name in o.killed else "  (restarted)"
        print(f"{name:<12} {before / 2**20:>15.1f} MB {after / 2**20:>9.1f} MB {growth:>+7.1%}{note}")
        ok &= (same and growth <= MAX_GROWTH) or name in o.killed
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--only", action="append", choices=FAULTS, help="inject only these faults (repeatable)")
    args = parser.parse_args()
    children: list[Child] = []

    def spawn(argv, **kw):
        children.append(Child([str(a) for a in argv], **kw))
        return children[-1]

    outcome = Outcome()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _soak(args, Path(tmp), spawn, outcome)
        finally:
            for child in children:
                child.finish()
    ok = _report(outcome)
    print("soak: " + ("PASSED" if ok else "FAILED"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
