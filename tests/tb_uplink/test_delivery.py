"""tb_uplink against a real Mosquitto started by the test: shape, outages, crashes, power loss,
credentials, TLS, a poisoned batch, session limits."""

import json
import shutil
import signal
import sqlite3
import time

import pytest

from common.config import load
from common.messages import Message
from harness.mosquitto import make_certs, wait_broker_gone
from harness.proc import python_module, wait_for, write_config
from harness.samples import UPLINK_FIX, UPLINK_SNAPSHOT
from harness.witness import OutboxWitness
from services.tb_uplink.outbox import Outbox
from services.tb_uplink.records import build_record

TOKEN = "S3CRET-T0KEN-4711"


def uplink_config(tmp_path, port, **section):
    return write_config(tmp_path / "c.yaml", debug_output2=2, tb_uplink={
        "host": "127.0.0.1", "port": port, "token": TOKEN, "token_env": None, "outbox_path": str(tmp_path / "o.db"),
        "upload_interval": 0.3, "reconnect_max_s": 2, "auth_retry_s": 1, "rate_limit_pause_s": 1, **section})


def full_record(i: int, n: int) -> tuple[int, dict]:
    """Record i of a backlog of n, one per second up to now."""
    now = time.time()
    _, values = build_record(Message("bms.snapshot", "t", 0, now, UPLINK_SNAPSHOT),
                             Message("gps.fix", "t", 0, now, UPLINK_FIX), 0, 0, True, bool(i % 2))
    return int((now - n + i) * 1000), values


def prefill(path, n, poison_at=None) -> list[int]:
    box = Outbox(path)
    stamps = []
    for i in range(n):
        ts, values = full_record(i, n)
        if i == poison_at:
            values = {"poison": "x" * 30_000}
        box.add(ts, values)
        stamps.append(ts)
    box.close()
    return stamps


def test_records_arrive_in_the_documented_shape_from_real_bus_messages(spawn, tmp_path, broker, collect):
    mq = broker()
    sink = collect(mq.port)
    cfg = uplink_config(tmp_path, mq.port)
    spawn(python_module("harness.feed", "--config", cfg, "--period", 0.1))
    uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
    assert sink.wait_records(3, 60), uplink.text()
    ts, values = sink.snapshot()[-1]
    assert abs(ts / 1000 - time.time()) < 5, "ts is the observation time in ms"
    for key in ("alive", "analog_data_packs", "total_cells", "cell_max_volt", "cell_min_volt", "total_temps",
                "cell_max_temp", "cell_min_temp", "temp_5", "temp_6", "i_pack", "v_pack", "p_pack",
                "i_remaining_capacity", "soc", "cycles", "warning_info_packs", "current_limit", "charge_fet",
                "discharge_fet", "pack_indicate", "reverse", "ac_in", "heart", "warning_string", "balancing_1",
                "balancing_2", "speed_km_h"):
        assert key in values, key
    pack = UPLINK_SNAPSHOT.packs[0]
    assert values["cell_max_volt"] == pack.cell_max_mv and values["i_remaining_capacity"] == 47500
    assert values["i_pack"] == pack.current_a and values["speed_km_h"] == UPLINK_FIX.speed_km_h
    assert values["pack_2_cell_max_volt"] == UPLINK_SNAPSHOT.packs[1].cell_max_mv and values["v_cell_16"] == 3325
    assert wait_for(lambda: sink.attributes, 60)
    attributes = sink.attributes[-1]
    assert attributes["bms_serial"] == "FEEDBMS01" and attributes["pack_count"] == 2
    assert attributes["software_version"] and attributes["host_ip"]
    assert not any(TOKEN in line for line in uplink.text())


def test_outage_every_record_made_meanwhile_arrives_in_order(spawn, tmp_path, broker, collect, watch):
    mq = broker(persistence=True)
    sink = collect(mq.port, client_id="tb-stand-in", clean=False)
    outbox = OutboxWitness(tmp_path / "o.db")
    cfg = uplink_config(tmp_path, mq.port, upload_interval=0.2)
    bus = watch([load(cfg).bus.tb_uplink], ["uplink."])
    spawn(python_module("harness.feed", "--config", cfg, "--period", 0.05))
    uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
    assert sink.wait_records(5, 60), uplink.text()
    mq.stop()
    assert wait_broker_gone(mq.port, 30)
    # Records pile up while the broker is away...
    away = time.monotonic()
    assert bus.wait_message("uplink.status", lambda m: not m.data.connected and m.data.queued >= 10, 60, after=away)
    made_during = len(outbox.made())
    mq.start()
    # ...and go on being made after it is back, while the backlog drains.
    assert bus.wait_message("uplink.status", lambda m: m.data.connected, 60, after=time.monotonic()), uplink.text()
    assert wait_for(lambda: len(outbox.made()) >= made_during + 5, 60)
    made = outbox.made()
    assert wait_for(lambda: sink.has_all(made), 60), "records were lost"
    first_seen = list(dict.fromkeys(ts for ts, _ in sink.snapshot()))
    assert first_seen == sorted(first_seen), "records arrived out of order"
    assert uplink.proc.poll() is None


def test_kill_9_while_draining_a_backlog_loses_nothing(spawn, tmp_path, broker, collect):
    mq = broker()
    sink = collect(mq.port)
    stamps = prefill(tmp_path / "o.db", 3000)
    cfg = uplink_config(tmp_path, mq.port, batch_max_bytes=4000, inflight_window=1)
    first = spawn(python_module("services.tb_uplink", "--config", cfg))
    assert sink.wait_records(1000, 60), '\n'.join(first.text()[:8])
    first.signal(signal.SIGSTOP)  # frozen at once, mid-drain; the kill then finds it in that state
    assert len({ts for ts, _ in sink.snapshot()}) < 3000, "the kill came too late to test anything"
    first.signal(signal.SIGKILL)
    assert first.wait(30) == -signal.SIGKILL
    spawn(python_module("services.tb_uplink", "--config", cfg))
    assert wait_for(lambda: sink.has_all(stamps), 120), "records were lost"
    seen = {}
    for ts, values in sink.snapshot():
        assert seen.setdefault(ts, values) == values, "a duplicate must be the same record"
    assert Outbox(tmp_path / "o.db").stats()[0] == 0


def test_power_loss_keeps_every_committed_record(spawn, tmp_path):
    db = tmp_path / "o.db"
    for round_ in range(5):
        writer = spawn(python_module("harness.outbox_writer", db))
        assert writer.wait_line(r"^open ", 60)
        time.sleep(0.1 + 0.07 * round_)
        if round_ % 2:  # a copy of the files taken while a write is in progress
            assert writer.wait_line(r"^open ", 60)
            copy = tmp_path / f"copy{round_}"
            copy.mkdir()
            writer.signal(signal.SIGSTOP)
            committed = [int(t.split()[1]) for t in writer.text("out") if t.startswith("committed")]
            for suffix in ("", "-wal", "-shm"):
                if (tmp_path / f"o.db{suffix}").exists():
                    shutil.copy(tmp_path / f"o.db{suffix}", copy / f"o.db{suffix}")
            writer.signal(signal.SIGKILL)
            target = copy / "o.db"
        else:  # the process killed, inside a transaction or between them
            writer.signal(signal.SIGKILL)
            assert writer.wait(30) == -signal.SIGKILL
            committed = [int(t.split()[1]) for t in writer.text("out") if t.startswith("committed")]
            target = db
        assert committed
        reopened = Outbox(target)
        assert reopened.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        present = {ts for (ts,) in reopened.db.execute("SELECT ts_ms FROM outbox")}
        assert set(committed) <= present, f"round {round_}: committed records missing"
        assert all(ts % 2 == 1 for ts in present), "a write that was never committed came back"
        reopened.close()


def test_wrong_password_keeps_queuing_and_resumes_when_the_config_is_fixed(spawn, tmp_path, broker, collect, watch):
    (tmp_path / "passwd").write_text("")
    import subprocess
    subprocess.run(["mosquitto_passwd", "-b", str(tmp_path / "passwd"), "car1", "right-password"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(tmp_path / "passwd"), "reader", "r"], check=True)
    mq = broker(conf=f"allow_anonymous false\npassword_file {tmp_path / 'passwd'}\n")
    sink = collect(mq.port, username="reader", password="r")
    outbox = OutboxWitness(tmp_path / "o.db")
    cfg = uplink_config(tmp_path, mq.port, auth="basic", username="car1", password="wrong-password")
    bus = watch([load(cfg).bus.tb_uplink], ["uplink."])
    spawn(python_module("harness.feed", "--config", cfg, "--period", 0.1))
    uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
    refused = bus.wait_message("uplink.status", lambda m: m.data.queued >= 5 and m.data.error
                               and "credentials rejected" in m.data.error, 60)
    assert refused is not None, uplink.text()
    assert not refused.data.connected and sink.snapshot() == []
    text = cfg.read_text().replace("wrong-password", "right-password")
    cfg.write_text(text)
    assert bus.wait_message("uplink.status", lambda m: m.data.connected and m.data.queued <= 2, 60)
    made = outbox.made()
    assert len(made) >= 5
    assert wait_for(lambda: sink.has_all(made), 60), "queued records lost"
    assert uplink.proc.poll() is None
    everything = "\n".join(uplink.text()) + json.dumps([m.data.error for m in bus.messages()])
    assert "right-password" not in everything and "wrong-password" not in everything


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def test_tls_delivery_with_a_test_ca_and_a_client_certificate(spawn, tmp_path, broker, collect, certs):
    mq = broker(tls={**certs, "require_client_cert": True})
    sink = collect(mq.port, tls=certs)
    cfg = uplink_config(tmp_path, mq.port, tls=True, ca_file=certs["ca"], cert_file=certs["client_cert"],
                        key_file=certs["client_key"])
    spawn(python_module("harness.feed", "--config", cfg, "--period", 0.1))
    uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
    assert sink.wait_records(3, 60), uplink.text()


def test_tls_server_certificate_for_another_name_is_refused(spawn, tmp_path, broker, certs, watch):
    mq = broker(tls={"ca": certs["ca"], "cert": certs["wrong_cert"], "key": certs["wrong_key"]})
    cfg = uplink_config(tmp_path, mq.port, tls=True, ca_file=certs["ca"])
    bus = watch([load(cfg).bus.tb_uplink], ["uplink."])
    spawn(python_module("harness.feed", "--config", cfg, "--period", 0.1))
    uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
    status = bus.wait_message("uplink.status", lambda m: m.data.queued >= 3 and m.data.error, 60)
    assert status is not None, uplink.text()
    assert "TLS certificate rejected" in status.data.error and not status.data.connected
    assert status.data.sent == 0


def test_a_poisoned_batch_is_moved_aside_and_the_rest_flows(spawn, tmp_path, broker, collect):
    # Mosquitto closes the connection of a client that sends a packet over max_packet_size: the
    # same thing ThingsBoard does to a batch it cannot take on an MQTT 3.1.1 session.
    mq = broker(conf="max_packet_size 20000\n")
    sink = collect(mq.port)
    stamps = prefill(tmp_path / "o.db", 120, poison_at=60)
    cfg = uplink_config(tmp_path, mq.port, mqtt_protocol="mqttv311", batch_max_bytes=8000, dead_letter_after=3)
    uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
    good = set(stamps) - {stamps[60]}
    assert wait_for(lambda: sink.has_all(good), 120), uplink.text()
    assert stamps[60] not in {ts for ts, _ in sink.snapshot()}
    box = Outbox(tmp_path / "o.db")
    assert wait_for(lambda: box.stats()[3] == 1 and box.stats()[0] == 0, 60)
    assert sqlite3.connect(tmp_path / "o.db").execute("SELECT ts_ms, attempts FROM dead_letter").fetchone() == (stamps[60], 3)


def test_session_limits_from_the_server_are_applied(spawn, tmp_path, broker, collect, watch):
    import paho.mqtt.client as mqtt
    mq = broker()
    sink = collect(mq.port)
    server = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rpc-server")
    reply = {"maxPayloadSize": 20000, "maxInflightMessages": 2,
             "rateLimits": {"messages": "20:1,300:60", "telemetryMessages": "10:1", "telemetryDataPoints": "50000:1"}}

    def answer(client, userdata, msg):
        if json.loads(msg.payload).get("method") == "getSessionLimits":
            client.publish(msg.topic.replace("request", "response"), json.dumps(reply), qos=1)
    server.on_message = answer
    server.on_connect = lambda c, u, f, rc, p: c.subscribe("v1/devices/me/rpc/request/+", qos=1)
    server.connect("127.0.0.1", mq.port)
    server.loop_start()
    try:
        cfg = uplink_config(tmp_path, mq.port)
        bus = watch([load(cfg).bus.tb_uplink], ["uplink."])
        uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
        status = bus.wait_message("uplink.status", lambda m: m.data.rate_limits != "unlimited", 60)
        assert status is not None, uplink.text()
        assert status.data.rate_limits == "messages 20:1,300:60, telemetryMessages 10:1, telemetryDataPoints 50000:1"
        # A backlog that the default batch size (52,000 B) would send in a few payloads goes out in
        # payloads that keep the server's 20,000 B (less the uplink's margin).
        stamps = prefill(tmp_path / "o.db", 120)
        assert wait_for(lambda: sink.has_all(stamps), 120), uplink.text()
        assert sink.telemetry_sizes and max(sink.telemetry_sizes) <= 16000, sink.telemetry_sizes
        assert max(sink.telemetry_sizes) > 8000, "the backlog went in batches, not one record at a time"
    finally:
        server.loop_stop()


def test_the_trip_computers_keys_reach_thingsboard(spawn, tmp_path, broker, collect):
    mq = broker()
    sink = collect(mq.port)
    cfg = uplink_config(tmp_path, mq.port)
    spawn(python_module("harness.feed", "--config", cfg, "--period", 0.1))
    spawn(python_module("harness.publish", "trip", "--config", cfg, "--period", 0.1))
    uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
    assert wait_for(lambda: any("range_km" in v for _, v in sink.snapshot()), 60), uplink.text()
    values = next(v for _, v in sink.snapshot() if "range_km" in v)
    assert {k: values[k] for k in ("trip_distance_km", "trip_energy_wh", "wh_per_km", "range_km", "laps",
                                   "last_lap_s")} == {"trip_distance_km": 12.5, "trip_energy_wh": 860,
                                                      "wh_per_km": 69, "range_km": 61, "laps": 3, "last_lap_s": 97.4}
    assert "speed_km_h" in values and "soc" in values, "in the same record as the car's values"
