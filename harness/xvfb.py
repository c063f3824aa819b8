"""A private Xvfb display for GUI tests and benchmarks (docs/testing.md, "The GUI under Xvfb")."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harness.proc import wait_for


class Xvfb:
    def __init__(self, width: int = 1280, height: int = 800):
        if shutil.which("Xvfb") is None:
            raise RuntimeError("Xvfb is not installed; make test installs it (Debian package xvfb)")
        self.number = next(n for n in range(90, 400) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                           and not Path(f"/tmp/.X{n}-lock").exists())
        self.display = f":{self.number}"
        self.proc = subprocess.Popen(["Xvfb", self.display, "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for(lambda: Path(f"/tmp/.X11-unix/X{self.number}").exists(), 30):
            raise RuntimeError(f"Xvfb did not start on {self.display}")

    def env(self) -> dict:
        return {"DISPLAY": self.display}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
