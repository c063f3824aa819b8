"""The whole system under the real honcho with Procfile.demo: simulators, services, a viewer."""

from __future__ import annotations

import json
import re

import psutil

from common.config import load
from harness.proc import PY, free_port, merge, python_module, write_config
from harness.watch import BusWatch
from harness.witness import OutboxWitness

MODULES = {"bms_reader": "services.bms_reader", "gps_reader": "services.gps_reader", "tb_uplink": "services.tb_uplink",
           "gui": "services.gui", "trip": "services.trip", "bms_sim": "sim.pace_bms", "gps_sim": "sim.nmea"}


class System:
    def __init__(self, spawn, tmp_path, procs: list[str], broker_port: int, token: str,
                 bms_args: str = "--packs 2 --events", gps_args: str = "--events --start-s 20",
                 display: str = "", outbox_dir=None, **sections):
        self.bms_port, self.gps_port = free_port(), free_port()
        self.outbox = OutboxWitness((outbox_dir or tmp_path) / "outbox.db")
        self.cfg = write_config(tmp_path / "system.yaml", **merge({
            "debug_output2": 2,
            "bms_reader": {"connection_type": "IP", "bms_ip": "127.0.0.1", "bms_port": self.bms_port,
                           "scan_interval": 0},
            "gps_reader": {"source": "tcp", "tcp_host": "127.0.0.1", "tcp_port": self.gps_port},
            "tb_uplink": {"host": "127.0.0.1", "port": broker_port, "token": token, "token_env": None,
                          "outbox_path": str(self.outbox.path), "upload_interval": 0.5,
                          "reconnect_max_s": 2},
            "trip": {"state_path": str(tmp_path / "trip.db")}}, sections))
        env = {"PYTHON": PY, "PACE_CONFIG": str(self.cfg), "BMS_SIM_PORT": str(self.bms_port),
               "GPS_SIM_PORT": str(self.gps_port), "BMS_SIM_ARGS": bms_args, "GPS_SIM_ARGS": gps_args,
               "DISPLAY": display}
        bus = load(self.cfg).bus
        self.bus = BusWatch([bus.bms_reader, bus.gps_reader, bus.tb_uplink, bus.trip])
        self.honcho = spawn(python_module("honcho", "start", "-f", "Procfile.demo", *procs), env=env)

    def lines(self, name: str) -> list[str]:
        """What process ``name`` printed (honcho's prefix removed)."""
        pattern = re.compile(rf"^\S+ {re.escape(name)}\.1\s+\| (.*)$")
        return [m.group(1) for line in self.honcho.text() if (m := pattern.match(line))]

    def events(self, name: str, kind: str) -> list[dict]:
        out = []
        for line in self.lines(name):
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == kind:
                    out.append(event)
        return out

    def records(self) -> list[int]:
        """The timestamps of every record the uplink has committed to its outbox."""
        return self.outbox.made()

    def pid(self, name: str) -> int | None:
        """The pid of the python process running ``name`` (not its restart loop)."""
        for proc in psutil.Process(self.honcho.pid).children(recursive=True):
            try:
                cmd = proc.cmdline()
            except psutil.Error:
                continue
            if "-m" in cmd and MODULES[name] in cmd and "scripts/respawn" not in " ".join(cmd[:2]):
                return proc.pid
        return None

    def close(self) -> None:
        self.bus.close()
