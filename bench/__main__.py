"""make bench: run every benchmark and print one table (measured, limit, ratio)."""

import datetime
import importlib
import os
import platform

from bench import report

BENCHMARKS = ["bench.poll_cycle", "bench.uplink_drain", "bench.gui_cpu", "bench.services", "bench.bus_latency",
              "bench.reactions", "bench.config_refusal", "bench.junk_cpu", "bench.fix_latency", "bench.rpc_latency"]


def main() -> None:
    print(f"# {datetime.date.today()} on {platform.node()}: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}", flush=True)
    results = []
    for name in BENCHMARKS:
        print(f"# running {name} ...", flush=True)
        results += importlib.import_module(name).run()
    report(results)


if __name__ == "__main__":
    main()
