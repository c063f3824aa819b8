"""The real GUI process under Xvfb with real bus messages: the widgets show what was published."""

import json
import os
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from common.config import load
from harness.proc import free_port, python_module, wait_for, write_config
from harness.samples import SAMPLES, UPLINK_FIX, UPLINK_SNAPSHOT
from harness.xvfb import Xvfb
from services.gui.themes import THEMES


@pytest.fixture
def xvfb():
    x = Xvfb()
    yield x
    x.stop()


def read_dump(path: Path) -> dict:
    """The GUI's latest dump; {} while it has written none (or is replacing it)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed image data of a PNG (filter bytes included)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return size[0], size[1], zlib.decompress(idat)


def assert_not_blank(path: Path, width: int, height: int) -> None:
    w, h, pixels = png_pixels(path)
    assert (w, h) == (width, height)
    assert len(set(pixels)) > 20, f"{path.name} looks blank"


@pytest.mark.parametrize(("width", "height", "theme"), [(800, 480, "dark"), (1024, 600, "light"), (1280, 720, "dark")])
def test_gui_shows_what_was_published_and_screenshots_each_page(spawn, tmp_path, xvfb, width, height, theme):
    cfg = write_config(tmp_path / "c.yaml", gui={"width": width, "height": height, "theme": theme})
    spawn(python_module("harness.feed", "--config", cfg, "--links", "--period", 0.1))
    spawn(python_module("harness.publish", "trip", "--config", cfg, "--period", 0.1))
    dump, shots = tmp_path / "dump.json", tmp_path / "shots"
    gui = spawn(python_module("services.gui", "--config", cfg, "--dump", dump, "--screenshot", shots), env=xvfb.env())
    assert gui.wait(120) == 0, gui.text()
    shown = json.loads(dump.read_text())
    p1, p2 = UPLINK_SNAPSHOT.packs
    assert shown["speed"] == f"{UPLINK_FIX.speed_km_h:.0f}"
    soc = 100 * (p1.remaining_ah + p2.remaining_ah) / (p1.full_ah + p2.full_ah)
    assert shown["soc_text"] == f"{soc:.0f} %" and shown["soc_bar"] == pytest.approx(soc / 100, abs=1e-3)
    assert shown["power"] == f"{(p1.power_w + p2.power_w) / 1000:+.1f} kW" and shown["power_state"] == "discharging"
    assert shown["current"] == f"{p1.current_a + p2.current_a:+.1f} A"
    assert shown["cell_max"] == f"{p2.cell_max_mv} mV" and shown["cell_min"] == f"{p1.cell_min_mv} mV"
    assert shown["cell_max_label"] == "Cell max P2" and shown["cell_min_label"] == "Cell min P1", "the pack on the label"
    # The worst alarm in full and a count on the driver page; all of them on the detail page.
    assert shown["banner"] == "WARNING: cell high voltage P1-2"
    assert shown["alarm_list"] == "WARNING: cell high voltage P1-2"
    assert shown["health_BMS"].startswith("BMS up") and shown["health_Uplink"].startswith("Uplink connected")
    assert shown["queued"] == "7 queued"
    trip = SAMPLES["trip.state"]
    assert (shown["range"], shown["rate"]) == (f"{trip.range_km:.0f} km", f"{trip.wh_per_km_recent:.0f} Wh/km")
    levels = THEMES[theme]["levels"]
    assert shown["colours"]["soc_text"] == list(levels["good"]) and shown["colours"]["banner"] == list(levels["caution"])
    assert shown["cells_series"][1][0] == p1.cells_mv[0] and shown["balancing_series"][1][1] == p1.cells_mv[1]
    assert "MOS 30.1" in shown["pack_temps"] and shown["pack_overview"].count("\n") == 1
    settings = SAMPLES["bms.config"].packs[0].settings["cell_overvoltage"]
    assert f"Cell overvoltage: alarm {settings['cell_overvoltage_alarm_mv']} mV" in shown["pack_settings"]
    assert "Not supported: sleep" in shown["pack_settings"]
    for page in ("driver", "detail"):
        assert_not_blank(shots / f"{page}.png", width, height)


def test_bad_messages_are_counted_and_the_display_goes_on(spawn, tmp_path, xvfb):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cfg = write_config(tmp_path / "c.yaml", bus={"gps_reader": endpoint})
    dump = tmp_path / "dump.json"
    gui = spawn(python_module("services.gui", "--config", cfg, "--dump", dump), env=xvfb.env())
    assert wait_for(dump.exists, 60), gui.text()
    spawn(python_module("harness.raw_sender", endpoint, "bad"))
    shown = wait_for(lambda: (d := json.loads(dump.read_text()))["speed"] == "42" and d["errors"] and d, 60)
    assert shown, gui.text()
    # garbage 3, version 1, shape 2, frames 1; the unknown topics are not subscribed to and the 20 kB
    # body is within the default size limit (its extra field is ignored).
    assert shown["errors"] == "7 display errors"
    assert gui.proc.poll() is None


def test_without_a_display_the_gui_says_so_and_exits_2(spawn, tmp_path):
    cfg = write_config(tmp_path / "c.yaml")
    gui = spawn(python_module("services.gui", "--config", cfg), env={"DISPLAY": ""})
    assert gui.wait(60) == 2
    assert gui.text("err") == ["gui: no display: DISPLAY is not set; run it on the car's screen, under Xvfb, "
                               "or use another viewer (python -m services.tui)"]


def test_an_opengl_too_old_for_dear_pygui_is_one_line_and_exit_2_not_an_abort(spawn, tmp_path, xvfb):
    # As on a Raspberry Pi 0-3 (VC4: OpenGL 2.1), where Dear PyGui aborts inside GLFW (SIGABRT).
    cfg = write_config(tmp_path / "c.yaml")
    gui = spawn(python_module("services.gui", "--config", cfg), env={**xvfb.env(), "MESA_GL_VERSION_OVERRIDE": "2.1"})
    assert gui.wait(60) == 2, gui.text()
    lines = gui.text("err")
    assert len(lines) == 1 and "refuses an OpenGL 3.0 context" in lines[0] and "Raspberry Pi 4 or 5" in lines[0], lines
    assert "python -m services.tui" in lines[0]


def test_gui_stops_cleanly_on_sigterm(spawn, tmp_path, xvfb):
    # How soon it stops is measured in bench/reactions.py.
    import signal
    cfg = write_config(tmp_path / "c.yaml")
    dump = tmp_path / "dump.json"
    gui = spawn(python_module("services.gui", "--config", cfg, "--dump", dump), env=xvfb.env())
    assert wait_for(dump.exists, 60), gui.text()  # its loop is drawing frames
    gui.signal(signal.SIGTERM)
    assert gui.wait(60) == 0, gui.text()
    assert any("gui stopped" in line for line in gui.text("err")), gui.text()


def test_packs_that_are_gone_are_gone_from_the_detail_page(spawn, tmp_path, xvfb):
    cfg = write_config(tmp_path / "c.yaml")
    trigger = tmp_path / "no-packs"
    spawn(python_module("harness.feed", "--config", cfg, "--links", "--period", 0.1, "--empty-when", trigger))
    dump = tmp_path / "dump.json"
    gui = spawn(python_module("services.gui", "--config", cfg, "--page", "detail", "--dump", dump), env=xvfb.env())

    def shown():
        return read_dump(dump)
    assert wait_for(lambda: "Voltage" in shown().get("pack_lines", "") and shown()["pack_overview"], 60), gui.text()
    trigger.touch()
    assert wait_for(lambda: shown().get("pack_lines") == "" and shown().get("pack_overview") == "", 60), shown()
    assert shown()["cells_series"] == [[], []] and shown()["pack_temps"] == ""
    assert gui.proc.poll() is None


def test_the_new_trip_button_starts_a_new_trip(spawn, tmp_path, xvfb, watch):
    cfg = write_config(tmp_path / "c.yaml", trip={"state_path": str(tmp_path / "trip.db")})
    bus = watch([load(cfg).bus.trip], ["trip.state"])
    spawn(python_module("services.trip", "--config", cfg))
    spawn(python_module("harness.vehicle_feed", "--config", cfg, "--seconds", 3600, "--speedup", 10))
    dump = tmp_path / "dump.json"
    gui = spawn(python_module("services.gui", "--config", cfg, "--page", "detail", "--dump", dump), env=xvfb.env())

    def shown():
        return read_dump(dump)
    assert bus.wait_message("trip.state", lambda m: m.data.distance_km > 0.2, 60), gui.text()
    assert wait_for(lambda: shown().get("new_trip_rect", [0, 0, 0, 0])[2] > 0, 60), gui.text()
    x, y, w, h = shown()["new_trip_rect"]
    vx, vy = shown()["viewport_pos"]
    clicked = time.monotonic()
    subprocess.run(["xdotool", "mousemove", str(int(vx + x + w / 2)), str(int(vy + y + h / 2)), "click", "1"],
                   env={**os.environ, **xvfb.env()}, check=True, timeout=30)
    assert wait_for(lambda: "new trip started" in shown().get("trip_reset", ""), 30), (shown(), gui.text())
    fresh = bus.wait_message("trip.state", lambda m: m.data.distance_km < 0.2, 30, after=clicked)
    assert fresh is not None and fresh.data.total_distance_km > 0.2, "a new trip; the total goes on"
