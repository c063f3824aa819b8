"""The terminal viewer in a real terminal: tmux runs it in a pane of 100x16, the test reads the pane
back (capture-pane) while harness.feed publishes, and again after the feed has stopped."""

import os
import re
import shutil
import subprocess

import pytest

from harness.proc import REPO, python_module, wait_for, write_config

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by make test")


class Tmux:
    """A private tmux server (its own socket), so nothing of the user's is touched."""

    def __init__(self, socket_path):
        self.base = ["tmux", "-S", str(socket_path)]
        self.env = {**os.environ, "TERM": "xterm-256color"}

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=30, env=self.env, check=False)

    def start(self, command: list[str], width: int = 100, height: int = 16) -> None:
        result = self.run("new-session", "-d", "-s", "tui", "-x", str(width), "-y", str(height), "-c", str(REPO),
                          " ".join(command))
        assert result.returncode == 0, result.stderr

    def pane(self) -> str:
        return self.run("capture-pane", "-p", "-t", "tui").stdout

    def pane_with(self, test) -> str | None:
        """The pane's text if it passes ``test``, else None."""
        text = self.pane()
        return text if test(text) else None

    def stop(self) -> None:
        self.run("kill-server")


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(tmp_path / "tmux.sock")
    yield t
    t.stop()


def test_the_terminal_viewer_shows_the_drivers_values_and_marks_them_stale(spawn, tmp_path, tmux):
    cfg = write_config(tmp_path / "c.yaml")
    feed = spawn(python_module("harness.feed", "--config", cfg, "--links", "--period", 0.2))
    tmux.start(python_module("services.tui", "--config", cfg))
    live = wait_for(lambda: tmux.pane_with(lambda p: "42 km/h" in p and "48 %" in p), 60)
    assert live, tmux.pane()
    # The labels are the field table's; the values those of harness.samples, as on the display.
    for line in ("SPEED", "STATE OF CHARGE  48 %", "POWER", "discharging", "VOLTAGE", "CELL MIN", "3310 mV P1",
                 "CELL MAX", "3335 mV P2", "TEMP MAX", "23.5 °C P1", "WARNING: cell high voltage P1-2",
                 "BMS up", "GPS up", "Uplink connected", "7 queued"):
        assert line in live, (line, live)
    assert "(" not in live.split("ALARM")[0], "nothing is stale while the feed runs"
    feed.proc.kill()
    stale = wait_for(lambda: tmux.pane_with(lambda p: re.search(r"48 % \(\d+s\)", p)), 60)
    assert stale, tmux.pane()
    assert "BMS lost: alarms unknown" in stale and "up?" in stale, stale
    assert wait_for(lambda: "NO GPS" in tmux.pane() or re.search(r"\d+ km/h", tmux.pane()), 5)


def test_without_a_terminal_it_prints_the_screen_as_text(tmp_path, spawn):
    cfg = write_config(tmp_path / "c.yaml")
    spawn(python_module("harness.feed", "--config", cfg, "--links", "--period", 0.2))
    # --once: the screen after --every seconds; the feed's first messages are in by then.

    def screen():
        r = subprocess.run(python_module("services.tui", "--config", cfg, "--once", "--every", 2), cwd=REPO,
                           capture_output=True, text=True, timeout=60)
        return r if "42 km/h" in r.stdout else None

    out = wait_for(screen, 60)
    assert out and out.returncode == 0, out
    assert "\x1b[" not in out.stdout, "no terminal codes into a pipe"
    assert "STATE OF CHARGE  48 %" in out.stdout and "Uplink connected" in out.stdout
