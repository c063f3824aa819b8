"""make screenshots: the driver and detail pages at 800x480, from the simulators through the real services.

Starts Xvfb, the PACE simulator (4 packs) and the NMEA simulator (a car under way), bms_reader,
gps_reader, a private Mosquitto with tb_uplink when mosquitto is installed, then the GUI with
--screenshot, and writes docs/screenshots/driver.png and detail.png.
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


def main() -> None:
    out = REPO / "docs" / "screenshots"
    display = Xvfb()
    procs, broker = [], None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            bms, gps = free_port(), free_port()
            uplink = {}
            if shutil.which("mosquitto"):
                broker = Mosquitto(tmp / "mq")
                uplink = {"host": "127.0.0.1", "port": broker.port, "token": "screenshots", "token_env": None,
                          "outbox_path": str(tmp / "o.db"), "upload_interval": 1}
            cfg = write_config(tmp / "c.yaml",
                               bms_reader={"connection_type": "IP", "bms_ip": "127.0.0.1", "bms_port": bms,
                                           "scan_interval": 0},
                               gps_reader={"source": "tcp", "tcp_host": "127.0.0.1", "tcp_port": gps},
                               tb_uplink=uplink)
            env = {**os.environ, **display.env()}

            def start(*args):
                procs.append(subprocess.Popen([sys.executable, "-m", *map(str, args)], cwd=REPO, env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            start("sim.pace_bms", "--tcp", bms, "--packs", 4, "--seed", 3)
            start("sim.nmea", "--tcp", gps, "--start-s", 30)
            start("services.bms_reader", "--config", cfg)
            start("services.gps_reader", "--config", cfg)
            if broker:
                start("services.tb_uplink", "--config", cfg)
            time.sleep(6)
            shot = subprocess.run([sys.executable, "-m", "services.gui", "--config", str(cfg), "--screenshot",
                                   str(out)], cwd=REPO, env=env, timeout=60)
            if shot.returncode:
                sys.exit(f"the GUI exited with {shot.returncode}")
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
            if broker:
                broker.stop()
            display.stop()
    print(f"wrote {out / 'driver.png'} and {out / 'detail.png'}")


if __name__ == "__main__":
    main()
