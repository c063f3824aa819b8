"""Bus latency: from publish() in one process to a checked Message in another, p50 and p99.

The publisher stamps each gps.fix with the time it publishes it; the subscriber measures on
arrival against the same clock. Both sides include envelope encoding, the contract check on
send and decoding plus validation on receive.
"""

import os
import subprocess
import sys
import time

from bench import Result, percentile, report
from common.bus import Bus
from harness.proc import free_port

MESSAGES = 2000
RATE_HZ = 200
LIMIT_P50_MS = 2.0
LIMIT_P99_MS = 10.0

_PUBLISHER = """
import sys, time
from common.bus import Bus
from common.messages import GpsFix
with Bus() as bus:
    pub = bus.publisher(sys.argv[1], "bench")
    time.sleep(0.5)
    for i in range(int(sys.argv[2])):
        pub.publish("gps.fix", GpsFix(valid=True, speed_km_h=float(i)), ts=time.time())
        time.sleep(1 / int(sys.argv[3]))
"""


def run() -> list[Result]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    latencies = []
    with Bus() as bus:
        sub = bus.subscriber([endpoint], ["gps.fix"])
        proc = subprocess.Popen([sys.executable, "-c", _PUBLISHER, endpoint, str(MESSAGES), str(RATE_HZ)],
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        try:
            while (msg := sub.recv(5.0)) is not None:
                latencies.append((time.time() - msg.ts) * 1000)
        finally:
            proc.kill()
            proc.wait()
    return [Result(f"bus latency p50 ({len(latencies)} msgs)", percentile(latencies, 50), LIMIT_P50_MS, "ms"),
            Result("bus latency p99", percentile(latencies, 99), LIMIT_P99_MS, "ms")]


if __name__ == "__main__":
    report(run())
