"""How long a service takes to refuse a hostile config file: from the start of the process to its
exit with status 2 (one line), for a YAML alias bomb (739 bytes that expand to 9**9 strings), 5,000
nested brackets, and a 2 MB value. The limit is one second: a restart loop must not spin on it."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import Result, report
from harness.hostile import HOSTILE_CONFIGS
from harness.proc import REPO

LIMIT_S = 1.0


def run() -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, text in HOSTILE_CONFIGS.items():
            path = Path(tmp) / f"{case}.yaml"
            path.write_text(text)
            started = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "services.bms_reader", "--config", str(path)],
                                  cwd=REPO, capture_output=True, text=True, timeout=120)
            elapsed = time.monotonic() - started
            lines = done.stderr.splitlines()
            if done.returncode != 2 or len(lines) != 1 or len(lines[0]) >= 300:
                raise SystemExit(f"config_refusal: {case}: status {done.returncode}, {len(lines)} lines")
            results.append(Result(f"config refused with one line: {case} (process start to exit 2)", elapsed,
                                  LIMIT_S, "s"))
    return results


if __name__ == "__main__":
    report(run())
