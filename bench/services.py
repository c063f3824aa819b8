"""Steady state of every service, and the latency from a BMS reply to its snapshot on the bus.

One simulated pack polled as fast as the line allows (9600 baud, 20 ms response delay), the NMEA
simulator at 1 Hz, a private Mosquitto, and all five services (the GUI under Xvfb). After a 10 s
warm-up, each service's CPU (user + system, as a fraction of one core) and resident memory are
sampled over 60 s. Latency: the simulator prints when it wrote the last byte of each reply
(wall clock); a subscriber notes when each bms.snapshot arrives; a snapshot is published after
its cycle's status reply, so latency = arrival - end of the status reply before it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench import Result, percentile, report
from common.bus import Bus
from common.config import load
from harness.mosquitto import Mosquitto
from harness.proc import REPO, free_port, write_config
from harness.xvfb import Xvfb

SECONDS = 60
WARMUP_S = 10
LIMITS = {  # (CPU in cores, resident MB)
    "bms_reader": (0.05, 60), "gps_reader": (0.05, 60), "tb_uplink": (0.05, 80), "gui": (0.10, 150),
    "trip": (0.02, 40)}
LATENCY_P50_MS, LATENCY_P99_MS = 10.0, 50.0


def run() -> list[Result]:
    display = Xvfb()
    procs: dict[str, subprocess.Popen] = {}
    arrivals: list[float] = []
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        broker = Mosquitto(tmp / "mq")
        bms, gps = free_port(), free_port()
        cfg = write_config(tmp / "c.yaml",
                           bms_reader={"connection_type": "IP", "bms_ip": "127.0.0.1", "bms_port": bms,
                                       "scan_interval": 0, "capacity_every": 100000, "info_every_s": 86400},
                           gps_reader={"source": "tcp", "tcp_host": "127.0.0.1", "tcp_port": gps},
                           tb_uplink={"host": "127.0.0.1", "port": broker.port, "token": "bench", "token_env": None,
                                      "outbox_path": str(tmp / "o.db")},
                           trip={"state_path": str(tmp / "trip.db")})
        env = {**os.environ, **display.env()}

        def start(name, *args, out=subprocess.DEVNULL):
            procs[name] = subprocess.Popen([sys.executable, "-m", *map(str, args)], cwd=REPO, env=env,
                                           stdout=out, stderr=subprocess.DEVNULL, text=True)

        def listen():
            with Bus() as bus:
                sub = bus.subscriber([load(cfg).bus.bms_reader], ["bms.snapshot"])
                while not stop.is_set():
                    if sub.recv(0.2) is not None:
                        arrivals.append(time.time())
        listener = threading.Thread(target=listen, daemon=True)
        try:
            start("bms_sim", "sim.pace_bms", "--tcp", bms, "--events", out=subprocess.PIPE)
            start("gps_sim", "sim.nmea", "--tcp", gps)
            for name in LIMITS:
                start(name, f"services.{name}", "--config", cfg)
            sent: list[float] = []
            reader = threading.Thread(target=_collect_sent, args=(procs["bms_sim"].stdout, sent), daemon=True)
            reader.start()
            listener.start()
            time.sleep(WARMUP_S)
            handles = {n: psutil.Process(procs[n].pid) for n in LIMITS}
            before = {n: p.cpu_times() for n, p in handles.items()}
            t0, peak = time.monotonic(), dict.fromkeys(LIMITS, 0)
            arrivals_from = len(arrivals)
            while time.monotonic() - t0 < SECONDS:
                for n, p in handles.items():
                    peak[n] = max(peak[n], p.memory_info().rss)
                time.sleep(1)
            elapsed = time.monotonic() - t0
            after = {n: p.cpu_times() for n, p in handles.items()}
            measured_arrivals = arrivals[arrivals_from:]
        finally:
            stop.set()
            for proc in procs.values():
                proc.terminate()
                proc.wait(10)
            broker.stop()
            display.stop()
    results = []
    for name, (cpu_limit, mb_limit) in LIMITS.items():
        cpu = (after[name].user + after[name].system - before[name].user - before[name].system) / elapsed
        results.append(Result(f"{name} CPU, 1 pack at line speed + GPS 1 Hz, {SECONDS} s", cpu, cpu_limit, "cores"))
        results.append(Result(f"{name} resident memory", peak[name] / 2**20, mb_limit, "MB"))
    latencies = []
    for arrived in measured_arrivals:
        ends = [t for t in sent if t <= arrived]
        if ends:
            latencies.append((arrived - ends[-1]) * 1000)
    results.append(Result(f"BMS reply last byte -> snapshot at a subscriber, p50 ({len(latencies)})",
                          percentile(latencies, 50), LATENCY_P50_MS, "ms"))
    results.append(Result("BMS reply last byte -> snapshot at a subscriber, p99", percentile(latencies, 99),
                          LATENCY_P99_MS, "ms"))
    return results


def _collect_sent(stream, sent: list[float]) -> None:
    """End times of the status (0x44) replies: the last reply of each cycle."""
    last_command = None
    for line in stream:
        event = json.loads(line)
        if event["event"] == "reply":
            last_command = event["command"]
        elif event["event"] == "sent" and last_command == "44":
            sent.append(event["t_end"])


if __name__ == "__main__":
    report(run())
