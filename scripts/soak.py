"""make soak: the whole system for a while (default 10 min) with faults injected at random.

Simulators, the three services and a private Mosquitto (persistent, with a persistent subscriber
standing in for ThingsBoard) run under honcho from Procfile.demo; the simulators also inject
their own faults. Every 15-45 s one of these happens at random: the BMS simulator is killed (the
link drops and returns), the GPS simulator is killed, the GPS receiver freezes for 8 s, the broker
is stopped for 10-40 s. At the end: records the uplink made vs records delivered (must be equal),
restarts of each process, and each service's resident memory after the warm-up and at the end
(growth must stay under 10 %).

    python scripts/soak.py [--minutes 10] [--seed N]
"""

import argparse
import random
import re
import signal
import sys
import tempfile
import time
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    children: list[Child] = []

    def spawn(argv, **kw):
        children.append(Child([str(a) for a in argv], **kw))
        return children[-1]

    faults: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        broker = Mosquitto(tmp / "mq", persistence=True)
        sink = Collector(broker.port, client_id="thingsboard", clean=False)
        system = System(spawn, tmp, ["bms_sim", "gps_sim", "bms_reader", "gps_reader", "tb_uplink"], broker.port,
                        "soak-token", bms_args="--packs 4 --fault corrupt --fault junk --fault no_answer "
                                               "--fault-prob 0.03", gps_args="--fault lose_fix --fault bad_checksum "
                                                                             "--fault-prob 0.02")
        try:
            end = time.monotonic() + args.minutes * 60
            time.sleep(WARMUP_S)
            start_rss = {name: psutil.Process(system.pid(name)).memory_info().rss for name in SERVICES}
            start_pids = {name: system.pid(name) for name in SERVICES}
            print(f"soak: seed {args.seed}, {args.minutes:g} min", flush=True)
            while time.monotonic() < end - 60:
                time.sleep(rng.uniform(15, 45))
                fault = rng.choice(["kill bms_sim", "kill gps_sim", "freeze gps_sim", "broker outage"])
                faults.append(fault)
                print(f"soak: {time.strftime('%H:%M:%S')} {fault}", flush=True)
                if fault.startswith("kill"):
                    pid = system.pid(fault.split()[1])
                    if pid:
                        psutil.Process(pid).kill()
                elif fault == "freeze gps_sim":
                    pid = system.pid("gps_sim")
                    if pid:
                        psutil.Process(pid).send_signal(signal.SIGSTOP)
                        time.sleep(8)
                        psutil.Process(pid).send_signal(signal.SIGCONT)
                else:
                    broker.stop()
                    time.sleep(rng.uniform(10, 40))
                    broker.start()
            time.sleep(max(0.0, end - time.monotonic()))
            end_rss = {name: psutil.Process(system.pid(name)).memory_info().rss for name in SERVICES}
            end_pids = {name: system.pid(name) for name in SERVICES}
            made = system.records()
            wait_for(lambda: sink.has_all(made), 120)
            delivered = {ts for ts, _ in sink.snapshot()} & set(made)
            restarts = {}
            for line in system.honcho.text():
                if m := re.match(r"^\S+ (\S+)\.1\s+\| respawn: ", line):
                    restarts[m.group(1)] = restarts.get(m.group(1), 0) + 1
        finally:
            system.honcho.signal(signal.SIGINT)
            system.honcho.wait(15)
            log = REPO / "var" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.log"
            log.parent.mkdir(exist_ok=True)
            log.write_text("\n".join(system.honcho.text()) + "\n")
            print(f"soak: the system's output is in {log}")
            for child in children:
                child.finish()
            sink.close()
            broker.stop()
            system.close()

    ok = True
    print(f"\nfaults injected: {len(faults)} ({', '.join(sorted(set(faults)))})")
    print(f"records made {len(made)} ({len(set(made))} distinct ts), delivered {len(delivered)}")
    ok &= len(made) == len(set(made)) == len(delivered) and len(made) > 0
    print("restarts: " + (", ".join(f"{k} {v}" for k, v in sorted(restarts.items())) or "none"))
    print(f"{'service':<12} {'RSS after warm-up':>18} {'RSS at end':>12} {'growth':>8}")
    for name in SERVICES:
        growth = end_rss[name] / start_rss[name] - 1
        same = start_pids[name] == end_pids[name]
        print(f"{name:<12} {start_rss[name] / 2**20:>15.1f} MB {end_rss[name] / 2**20:>9.1f} MB {growth:>+7.1%}"
              f"{'' if same else '  (restarted)'}")
        ok &= same and growth <= MAX_GROWTH
    print("soak: " + ("PASSED" if ok else "FAILED"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
