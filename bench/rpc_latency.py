"""ThingsBoard RPC round trip: a server-side RPC published on a local Mosquitto to the reply
arriving, through the uplink and the command channel to a real bms_reader on the PACE simulator
(getBmsSnapshot, getStatus with gps_reader stopped: its 0.3 s timeout is in the figure), and a
direct command-channel call. 30 calls each, p99 against the 1 s the RPC must answer within."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench import Result, percentile, report
from common import command
from common.config import load
from harness.mosquitto import Mosquitto
from harness.proc import Child, free_port, python_module, wait_for, write_config
from harness.tb_server import TbServer

CALLS = 30
LIMIT_S = 1.0


def _timed(call) -> list[float]:
    out = []
    for _ in range(CALLS):
        start = time.perf_counter()
        assert call() is not None
        out.append(time.perf_counter() - start)
    return out


def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mq = Mosquitto(tmp / "mq")
        sim_port = free_port()
        cfg = write_config(tmp / "c.yaml", bms_reader={"connection_type": "IP", "bms_ip": "127.0.0.1",
                                                        "bms_port": sim_port, "scan_interval": 0},
                           tb_uplink={"host": "127.0.0.1", "port": mq.port, "token": "t", "token_env": None,
                                      "outbox_path": str(tmp / "o.db")})
        children = [Child(python_module("sim.pace_bms", "--tcp", sim_port, "--packs", 2, "--events"))]
        server = TbServer(mq.port)
        try:
            children[0].wait_line('"event": "listening"', 60)
            children += [Child(python_module("services.bms_reader", "--config", cfg)),
                         Child(python_module("services.tb_uplink", "--config", cfg))]
            wait_for(lambda: "result" in (server.rpc("getBmsSnapshot", timeout=5) or {}), 60)
            endpoint = load(cfg).bus.command_endpoint("bms_reader")
            direct = _timed(lambda: command.call(endpoint, "snapshot", timeout_s=5))
            snapshot = _timed(lambda: server.rpc("getBmsSnapshot", timeout=30))
            status = _timed(lambda: server.rpc("getStatus", timeout=30))
        finally:
            server.close()
            for child in children:
                child.finish()
            mq.stop()
    return [Result("command channel call, bms_reader snapshot, p99", percentile(direct, 99) * 1000,
                   LIMIT_S * 1000, "ms"),
            Result(f"ThingsBoard RPC getBmsSnapshot round trip, p99 ({CALLS} calls)", percentile(snapshot, 99) * 1000,
                   LIMIT_S * 1000, "ms"),
            Result("ThingsBoard RPC getStatus with gps_reader stopped, p99", percentile(status, 99) * 1000,
                   LIMIT_S * 1000, "ms")]


if __name__ == "__main__":
    report(run())
