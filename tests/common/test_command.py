"""The command channel: real ROUTER/REQ sockets in-process, and the CLI and ThingsBoard RPC
against real services."""

import json
import threading

import msgpack
import pytest

from common import bus as busmod
from common import command
from common.config import load
from harness.proc import free_port, python_module, wait_for, write_config
from harness.samples import SAMPLES
from harness.tb_server import TbServer
from tests.bms_reader.test_reader import Sim


@pytest.fixture
def served():
    stop = threading.Event()
    bus = busmod.Bus()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    commands = command.Commands("gps_reader")
    commands.add_topics()
    thread = commands.serve(bus.responder(endpoint), stop)
    yield endpoint, commands
    stop.set()
    thread.join(5)
    bus.close()


def test_the_latest_message_of_each_topic_and_ping_and_help(served):
    endpoint, commands = served
    with pytest.raises(command.CommandFailed, match="no gps.fix published yet"):
        command.call(endpoint, "fix")
    commands.keep("gps.fix", 0, SAMPLES["gps.fix"])
    commands.keep("gps.link", 0, SAMPLES["gps.link"])
    assert command.call(endpoint, "fix")["speed_km_h"] == SAMPLES["gps.fix"].speed_km_h
    assert command.call(endpoint, "status")["state"] == SAMPLES["gps.link"].state
    assert command.call(endpoint, "ping")["service"] == "gps_reader"
    assert {"fix", "link", "status", "ping", "help"} <= set(command.call(endpoint, "help"))


def test_unknown_and_malformed_requests_are_answered_and_counted(served):
    endpoint, commands = served
    with pytest.raises(command.CommandFailed, match="unknown command 'reboot'"):
        command.call(endpoint, "reboot")
    for body in (b"\xc1 not msgpack", msgpack.packb([1, 2]), msgpack.packb({"cmd": 3}),
                 msgpack.packb({"cmd": "fix", "args": [1]})):
        reply = msgpack.unpackb(busmod.request(endpoint, body, 30), raw=False)
        assert reply["ok"] is False and reply["error"]
    assert commands.errors == 5
    assert command.call(endpoint, "ping")["service"] == "gps_reader", "still serving"


def test_a_service_that_is_not_running_is_named():
    with pytest.raises(command.ServiceDown, match="bms_reader is not answering on tcp://127.0.0.1"):
        command.call(f"tcp://127.0.0.1:{free_port()}", "status", timeout_s=0.3, service="bms_reader")


def test_cli_against_a_real_reader_and_a_stopped_one(spawn, tmp_path):
    sim = Sim(spawn, tmp_path, "tcp", "--packs", 2, "--speedup", 40)
    cfg = write_config(tmp_path / "c.yaml", bms_reader={**sim.section, "scan_interval": 0})
    reader = spawn(python_module("services.bms_reader", "--config", cfg))

    def cli(*args):
        child = spawn(python_module("common.command", "--config", cfg, "--timeout", 5, *args))
        return child.wait(60), child
    assert wait_for(lambda: cli("bms_reader", "snapshot")[0] == 0, 60), reader.text()
    code, child = cli("bms_reader", "snapshot")
    assert json.loads("\n".join(child.text("out")))["pack_count"] == 2
    code, child = cli("bms_reader", "info")
    assert code == 0 and json.loads("\n".join(child.text("out")))["pack_count"] == 2
    code, child = cli("gps_reader", "status")
    assert code == 1 and "gps_reader is not answering" in "\n".join(child.text("err"))
    code, child = cli("bms_reader", "write_cell", "n=1")
    assert code == 1 and "unknown command 'write_cell'" in "\n".join(child.text("err"))
    assert reader.proc.poll() is None


def test_a_command_endpoint_in_use_stops_the_service_at_start_naming_the_key(spawn, tmp_path):
    cfg = write_config(tmp_path / "c.yaml")
    taken = busmod.Bus()
    try:
        held = taken.responder(load(cfg).bus.gps_reader_cmd)  # noqa: F841 (kept bound while the service starts)
        child = spawn(python_module("services.gps_reader", "--config", cfg))
        assert child.wait(60) == 2
        assert "bus.gps_reader_cmd" in "\n".join(child.text("err"))
    finally:
        taken._ctx.destroy(linger=0)


def test_thingsboard_rpc_answers_read_only_methods_and_names_a_stopped_service(spawn, tmp_path, broker):
    mq = broker()
    server = TbServer(mq.port)
    try:
        sim = Sim(spawn, tmp_path, "tcp", "--packs", 1, "--speedup", 40)
        cfg = write_config(tmp_path / "c.yaml", bms_reader={**sim.section, "scan_interval": 0}, tb_uplink={
            "host": "127.0.0.1", "port": mq.port, "token": "t", "token_env": None,
            "outbox_path": str(tmp_path / "o.db"), "upload_interval": 1})
        reader = spawn(python_module("services.bms_reader", "--config", cfg))
        uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
        assert wait_for(lambda: server.attribute("software_version"), 60), uplink.text()
        assert wait_for(lambda: "result" in (server.rpc("getBmsInfo", timeout=30) or {}), 60), reader.text()
        assert server.rpc("getBmsInfo")["result"]["pack_count"] == 1
        assert "packs" in server.rpc("getBmsSnapshot")["result"]
        assert "queued" in server.rpc("getOutbox")["result"]
        status = server.rpc("getStatus")
        assert "connected" in status["tb_uplink"] and status["bms_reader"]["state"] == "up"
        assert "gps_reader is not answering" in status["gps_reader"]["error"]
        assert "gps_reader is not answering" in server.rpc("getGpsFix")["error"]
        assert server.rpc("setChargeFet")["error"].startswith("unknown method 'setChargeFet'")
    finally:
        server.close()
