"""Prints ``tick NAME PID N`` every 0.1 s until stopped: a process whose output shows gaps."""

import os
import signal
import sys
import time

name = sys.argv[1]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
n = 0
while True:
    print(f"tick {name} {os.getpid()} {n}", flush=True)
    n += 1
    time.sleep(0.1)
