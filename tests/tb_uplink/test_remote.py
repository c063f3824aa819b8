"""Remote settings from ThingsBoard shared attributes, against a real Mosquitto with the server
side of the session played by harness.tb_server."""

import pytest

from harness.proc import python_module, wait_for
from harness.tb_server import TbServer
from harness.witness import OutboxWitness
from tests.tb_uplink.test_delivery import uplink_config


@pytest.fixture
def tb(broker):
    servers = []

    def make(mq, **shared):
        servers.append(TbServer(mq.port, shared))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


def test_upload_interval_from_a_shared_attribute_applies_at_once_and_bad_values_are_refused(
        spawn, tmp_path, broker, collect, tb):
    mq = broker(persistence=True)
    server = tb(mq)
    outbox = OutboxWitness(tmp_path / "o.db")
    # An hour between records: any record soon after the change is the new setting at work.
    cfg = uplink_config(tmp_path, mq.port, upload_interval=3600)
    spawn(python_module("harness.feed", "--config", cfg, "--period", 0.1))
    uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
    assert wait_for(lambda: server.requests, 60), uplink.text()
    assert "upload_interval" in server.requests[0]["sharedKeys"].split(",")
    assert wait_for(lambda: server.attribute("upload_interval_in_use") == 3600, 60)
    before = len(outbox.made())
    server.set_shared(upload_interval=0.5)
    assert wait_for(lambda: len(outbox.made()) >= before + 5, 60), uplink.text()
    assert wait_for(lambda: server.attribute("upload_interval_in_use") == 0.5, 60)

    server.set_shared(upload_interval="fast")
    assert wait_for(lambda: "upload_interval" in (server.attribute("settings_refused") or ""), 60), uplink.text()
    assert "'fast' is not a number" in server.attribute("settings_refused")
    assert server.attribute("upload_interval_in_use") == 0.5
    made = len(outbox.made())
    assert wait_for(lambda: len(outbox.made()) >= made + 5, 60), "the refused value was applied"

    # A reconnect asks again, and takes what the server holds now.
    server.shared["upload_interval"] = 0.4
    requests = len(server.requests)
    mq.stop()
    mq.start()
    assert wait_for(lambda: len(server.requests) > requests, 60), uplink.text()
    assert wait_for(lambda: server.attribute("upload_interval_in_use") == 0.4, 60)
    assert server.attribute("settings_refused") == ""
    assert uplink.proc.poll() is None
