"""make screenshots: the driver, detail and trend pages at 800x480, from the simulators through the real services.

For each set (dark and light; live, and with a BMS warning and no GPS receiver) it starts the PACE
simulator (4 packs) and the NMEA simulator (a car under way), bms_reader, gps_reader, the trip
computer, a private Mosquitto with tb_uplink when mosquitto is installed, then the GUI with
--screenshot, and writes docs/screenshots/{driver,detail,trend}{,-light,-alarms,-alarms-light}.png.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.mosquitto import Mosquitto  # noqa: E402
from harness.proc import free_port, write_config  # noqa: E402
from harness.xvfb import Xvfb  # noqa: E402

SETS = [  # (name suffix, theme, the PACE simulator's extra options, with GPS)
    ("", "dark", [], True),
    ("-light", "light", [], True),
    # 100 A out of each pack is over the simulator's discharge warning (90 A); no receiver: NO GPS.
    ("-alarms", "dark", ["--current-a", -100], False),
    ("-alarms-light", "light", ["--current-a", -100], False),
]


def main() -> None:
    out = REPO / "docs" / "screenshots"
    display = Xvfb()
    try:
        for suffix, theme, bms_args, gps in SETS:
            shoot(display, out, suffix, theme, bms_args, gps)
    finally:
        display.stop()
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('*.png')))} in {out}")


def shoot(display, out: Path, suffix: str, theme: str, bms_args: list, gps: bool) -> None:
    """The GUI's three pages from the simulators through the real services, as {page}{suffix}.png."""
    procs, broker = [], None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            bms, gps_port = free_port(), free_port()
            uplink = {}
            if shutil.which("mosquitto"):
                broker = Mosquitto(tmp / "mq")
                uplink = {"host": "127.0.0.1", "port": broker.port, "token": "screenshots", "token_env": None,
                          "outbox_path": str(tmp / "o.db"), "upload_interval": 1}
            cfg = write_config(tmp / "c.yaml",
                               bms_reader={"connection_type": "IP", "bms_ip": "127.0.0.1", "bms_port": bms,
                                           "scan_interval": 0},
                               gps_reader={"source": "tcp", "tcp_host": "127.0.0.1", "tcp_port": gps_port},
                               tb_uplink=uplink, trip={"state_path": str(tmp / "trip.db")}, gui={"theme": theme})
            env = {**os.environ, **display.env()}

            def start(*args):
                procs.append(subprocess.Popen([sys.executable, "-m", *map(str, args)], cwd=REPO, env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            start("sim.pace_bms", "--tcp", bms, "--packs", 4, "--seed", 3, *bms_args)
            if gps:
                start("sim.nmea", "--tcp", gps_port, "--start-s", 30)
            for service in ("bms_reader", "gps_reader", "trip") + (("tb_uplink",) if broker else ()):
                start(f"services.{service}", "--config", cfg)
            time.sleep(6)
            shot = subprocess.run([sys.executable, "-m", "services.gui", "--config", str(cfg), "--screenshot",
                                   str(tmp / "shots")], cwd=REPO, env=env, timeout=120)
            if shot.returncode:
                sys.exit(f"the GUI exited with {shot.returncode}")
            for png in (tmp / "shots").glob("*.png"):
                shutil.copyfile(png, out / f"{png.stem}{suffix}.png")
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
            if broker:
                broker.stop()


if __name__ == "__main__":
    main()
