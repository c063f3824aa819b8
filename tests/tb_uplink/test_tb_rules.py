"""The uplink against ThingsBoard's rules: harness.tb_proxy (ThingsBoard's reactions, read from
its source) in front of a real Mosquitto, a collector behind it."""

import json
import sqlite3

import pytest

from common.config import load
from harness.proc import python_module, wait_for
from harness.tb_proxy import TbProxy
from services.tb_uplink.outbox import Outbox
from tests.tb_uplink.test_delivery import full_record, prefill, uplink_config

PAUSE_S = 3


@pytest.fixture
def proxy():
    proxies = []

    def make(mq, **kw):
        proxies.append(TbProxy(upstream_port=mq.port, **kw))
        return proxies[-1]
    yield make
    for p in proxies:
        p.close()


def gaps_after(sessions, outcome):
    """Seconds from each session the proxy closed with ``outcome`` to the next connection."""
    return [after["accepted"] - before["closed"] for before, after in zip(sessions, sessions[1:])
            if before["outcome"] == outcome]


@pytest.mark.parametrize("protocol", ["mqttv5", "mqttv311"])
def test_a_rate_limit_in_the_middle_of_a_backlog_pauses_blames_nobody_and_delivers_everything(
        spawn, tmp_path, broker, collect, proxy, protocol):
    mq = broker()
    sink = collect(mq.port)
    tb = proxy(mq, limits={"telemetry_messages": "1000:1"})
    stamps = prefill(tmp_path / "o.db", 2000)
    cfg = uplink_config(tmp_path, tb.port, mqtt_protocol=protocol, rate_limit_pause_s=PAUSE_S)
    uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
    assert wait_for(lambda: len(sink.snapshot()) >= 200, 60), uplink.text()
    # The server's limits drop under the uplink's feet (an administrator, another session of the
    # device): what it learnt at connect no longer holds, and ThingsBoard closes the session.
    tb.set_limits({"telemetry_messages": "4:1,60:20"})
    assert wait_for(lambda: tb.stats()["rate_limit_closes"] >= 1, 60), uplink.text()
    assert wait_for(lambda: sink.has_all(stamps), 300), uplink.text()
    box = Outbox(tmp_path / "o.db")
    assert wait_for(lambda: box.stats()[0] == 0, 60)
    assert box.stats()[3] == 0, "a rate limit dead-lettered good records"
    gaps = gaps_after(tb.sessions(), "rate limit")
    assert gaps and min(gaps) >= PAUSE_S, f"reconnected faster than the pause: {gaps}"
    text = "\n".join(uplink.text())
    assert "rate limited, pausing" in text
    assert uplink.proc.poll() is None


def test_connack_connection_rate_exceeded_waits_the_pause_and_retries(spawn, tmp_path, broker, collect, proxy, watch):
    mq = broker()
    sink = collect(mq.port)
    tb = proxy(mq)
    tb.refuse_connects(2)
    stamps = prefill(tmp_path / "o.db", 20)
    cfg = uplink_config(tmp_path, tb.port, rate_limit_pause_s=PAUSE_S)
    bus = watch([load(cfg).bus.tb_uplink], ["uplink."])
    uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
    refused = bus.wait_message("uplink.status", lambda m: "0x9F connection rate exceeded" in (m.data.error or ""), 60)
    assert refused is not None and not refused.data.connected, uplink.text()
    assert wait_for(lambda: sink.has_all(stamps), 120), uplink.text()
    assert tb.stats()["refused_connects"] == 2
    gaps = gaps_after(tb.sessions(), "refused")
    assert len(gaps) == 2 and min(gaps) >= PAUSE_S, gaps


def test_a_record_over_the_size_limit_is_dead_lettered_at_once_and_the_rest_flow(spawn, tmp_path, broker, collect,
                                                                                  proxy):
    mq = broker()
    sink = collect(mq.port)
    tb = proxy(mq)
    box = Outbox(tmp_path / "o.db")
    stamps = prefill(tmp_path / "o.db", 30)
    huge_ts = stamps[-1] + 1
    box.add(huge_ts, {"poison": "x" * 70_000})
    more = prefill(tmp_path / "o.db", 30)
    cfg = uplink_config(tmp_path, tb.port)
    uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
    assert wait_for(lambda: sink.has_all(stamps + more), 120), uplink.text()
    assert wait_for(lambda: box.stats()[3] == 1 and box.stats()[0] == 0, 60)
    ts, attempts, reason = sqlite3.connect(tmp_path / "o.db").execute(
        "SELECT ts_ms, attempts, reason FROM dead_letter").fetchone()
    assert ts == huge_ts and attempts == 1 and "65536 bytes" in reason
    assert tb.stats()["size_closes"] == 0, "it was never sent"


def test_a_thinned_backlog_keeps_every_full_record_in_the_outbox(spawn, tmp_path, broker, collect, watch):
    mq = broker()
    sink = collect(mq.port)
    box = Outbox(tmp_path / "o.db")
    backlog = dict(full_record(i, 60) for i in range(60))
    for ts, values in backlog.items():
        box.add(ts, values)
    cfg = uplink_config(tmp_path, mq.port, rate_limits="cloud", upload_interval=5)
    bus = watch([load(cfg).bus.tb_uplink], ["uplink."])
    spawn(python_module("harness.feed", "--config", cfg, "--period", 0.1))
    uplink = spawn(python_module("services.tb_uplink", "--config", cfg))
    newest = max(backlog)
    assert wait_for(lambda: box.db.execute("SELECT COUNT(*) FROM outbox WHERE ts_ms <= ?", (newest,)).fetchone()[0]
                    == 0, 120), uplink.text()
    kept = {ts: json.loads(payload)["values"] for ts, payload in
            box.db.execute("SELECT ts_ms, payload FROM kept WHERE ts_ms <= ?", (newest,))}
    whole = [ts for ts in backlog if ts not in kept]
    assert wait_for(lambda: sink.has_all(whole), 30), uplink.text()
    arrived: dict[int, dict] = {}
    for ts, values in sink.snapshot():
        arrived.setdefault(ts, {}).update(values)
    assert len(kept) >= len(backlog) // 2, f"the backlog was not thinned: {len(kept)} of {len(backlog)} kept"
    for ts, values in backlog.items():
        got = arrived.get(ts, {})
        if ts in kept:
            assert kept[ts] == values, "kept whole, as it was stored"
            assert got.items() < values.items(), "the server got only part of it"
        else:
            assert got == values
    status = bus.wait_message("uplink.status", lambda m: m.data.kept >= len(kept), 30)
    assert status is not None and status.data.thinned >= 1, status
