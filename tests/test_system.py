"""The whole system: simulators and every service under honcho (Procfile.demo), a real Mosquitto,
the GUI under Xvfb. End to end, crash isolation, faults in one run, and what must never leak."""

import ipaddress
import json
import time

import psutil
import pytest

from common.pace.config import CONFIG_COMMANDS
from harness.mosquitto import Collector, Mosquitto
from harness.proc import REPO, python_module, wait_for
from harness.system import System
from harness.xvfb import Xvfb

TOKEN = "TB-T0KEN-e2e-5ecret"
HEADLESS = ["bms_sim", "gps_sim", "bms_reader", "gps_reader", "tb_uplink"]


@pytest.fixture
def stack(spawn, tmp_path):
    made = []

    def start(procs=HEADLESS, **kw):
        broker = Mosquitto(tmp_path / "mq", persistence=True)
        sink = Collector(broker.port, client_id="thingsboard", clean=False)
        system = System(spawn, tmp_path, procs, broker.port, TOKEN, **kw)
        made.append((broker, sink, system))
        return broker, sink, system
    yield start
    for broker, sink, system in made:
        system.close()
        sink.close()
        broker.stop()


def test_records_at_the_broker_carry_the_simulated_values(stack):
    broker, sink, system = stack()
    assert sink.wait_records(8, 120), system.honcho.text()[-30:]
    replies = [e for e in system.events("bms_sim", "reply") if e["command"] == "42"]
    status_replies = [e for e in system.events("bms_sim", "reply") if e["command"] == "44"]
    epochs = {e["utc"]: e for e in system.events("gps_sim", "epoch") if e["valid"]}
    checked = 0
    for ts, values in sink.snapshot()[2:]:
        cells = [values[f"v_cell_{i}"] for i in range(1, 17)]
        # The simulator's reply this record was made from: every value the same.
        reply = next((r for r in replies if r["packs"][0]["cells_mv"] == cells
                      and r["packs"][0]["current_a"] == values["i_pack"]
                      and round(r["packs"][0]["soc_pct"], 1) == values["soc"]
                      and r["packs"][1]["cells_mv"][0] == values["pack_2_v_cell_1"]
                      and r["packs"][0]["temps_c"][4] == values["temp_5"]), None)
        assert reply is not None, f"no simulator reply has the values of the record at {ts}"
        status = next(r for r in status_replies if r["n"] == reply["n"] + 1)["packs"][0]
        assert values["warnings"] == ",".join(status["warnings"])
        assert values["charge_fet"] == int(status["charge_fet"])
        speeds = {round(e["speed_km_h"], 1) for e in epochs.values()}
        assert values["speed_km_h"] in speeds
        assert abs(ts / 1000 - time.time()) < 30, "plausible timestamps"
        checked += 1
    assert checked >= 5
    # The BMS's settings reach ThingsBoard as client attributes, the simulator's values exactly.
    expected = {f"bms_{k}": v for c in CONFIG_COMMANDS for k, v in c.sim_default.items() if not k.startswith("reserved")}
    assert wait_for(lambda: any(expected.items() <= a.items() for a in sink.attributes), 60), sink.attributes[-1:]
    everything = "\n".join(system.honcho.text()) + json.dumps(
        [msg.data.__repr__() for msg in system.bus.messages()])
    assert TOKEN not in everything, "the token leaked into a log line or a bus message"
    assert system.bus.messages("uplink.status") and all(TOKEN not in repr(m.data) for m in system.bus.messages())


def test_each_service_killed_comes_back_alone(stack, tmp_path):
    # How fast a killed service is back is measured in bench/reactions.py; here: that it comes back,
    # and that the others neither restart nor lose a message meanwhile.
    display = Xvfb()
    try:
        broker, sink, system = stack(HEADLESS + ["trip", "gui"], display=display.display)
        streams = {"bms_reader": "bms.snapshot", "gps_reader": "gps.fix", "tb_uplink": "uplink.status",
                   "trip": "trip.state"}
        assert wait_for(lambda: all(system.bus.messages(t) for t in streams.values()), 120), system.honcho.text()
        assert wait_for(lambda: system.pid("gui"), 60)
        for victim in ("bms_reader", "gps_reader", "tb_uplink", "trip", "gui"):
            pids = {name: system.pid(name) for name in ["bms_reader", "gps_reader", "tb_uplink", "trip", "gui"]}
            before = {topic: len(system.bus.messages(topic)) for topic in streams.values()}
            killed = time.monotonic()
            psutil.Process(pids[victim]).kill()
            back = wait_for(lambda v=victim, o=pids[victim]: (p := system.pid(v)) and p != o and p, 60)
            assert back, f"{victim} did not come back"
            if victim in streams:
                again = system.bus.wait_message(streams[victim], lambda m: True, 60, after=killed)
                assert again, f"{victim} did not publish again after its kill"
            if victim == "trip":  # back with its counters, less at most the last second's integration
                last = [m for t, m in system.bus.items("trip.state") if t < killed][-1].data
                assert last.total_distance_km > 0
                assert again.data.total_distance_km >= last.total_distance_km - 0.1, (last, again.data)
                assert again.data.total_energy_out_wh >= last.total_energy_out_wh - 10, (last, again.data)
            # The others published on while the victim was away and after, from the same process:
            # from the last message before the kill on, their sequence numbers neither restart nor skip.
            for other, topic in streams.items():
                if other == victim:
                    continue
                assert system.bus.wait(lambda w, t=topic, n=before[topic]: len(w.messages(t)) >= n + 3, 60), topic
                assert system.pid(other) == pids[other], f"{other} was restarted too"
                seqs = [m.seq for m in system.bus.messages(topic)[before[topic] - 1:]]
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{topic} lost messages when {victim} died"
        made = system.records()
        assert made
        assert wait_for(lambda: sink.has_all(made), 60), "records lost at the broker"
    finally:
        display.stop()


BACKLOG = 20


def test_faults_in_one_run_every_service_keeps_running_and_nothing_is_lost(stack):
    broker, sink, system = stack(gps_args="--events --start-s 20 --fault lose_fix --fault-every 8")
    assert sink.wait_records(4, 120), system.honcho.text()[-20:]
    pids = {name: system.pid(name) for name in ("bms_reader", "gps_reader", "tb_uplink")}

    # The BMS link drops and returns: the simulator dies, its restart loop brings it back.
    dropped = time.monotonic()
    psutil.Process(system.pid("bms_sim")).kill()
    assert system.bus.wait_message("bms.link", lambda m: m.data.state == "down", 60, after=dropped)
    assert system.bus.wait_message("bms.link", lambda m: m.data.state == "up", 60, after=dropped)

    # The broker goes away while the GPS loses its fix now and then: records queue up.
    broker.stop()
    away = time.monotonic()
    status = system.bus.wait_message("uplink.status", lambda m: not m.data.connected and m.data.error
                                     and m.data.queued >= 1, 60, after=away)
    assert status is not None, system.bus.messages("uplink.status")[-1:]
    assert system.bus.wait_message("gps.fix", lambda m: not m.data.valid and m.data.speed_km_h is None, 60, after=away)
    backlog = system.bus.wait_message("uplink.status", lambda m: not m.data.connected and m.data.queued >= BACKLOG,
                                      120, after=away)
    assert backlog is not None, system.bus.messages("uplink.status")[-1:]
    broker.start()
    made = system.records()
    assert wait_for(lambda: sink.has_all(made), 120), "records lost during the outage"
    assert {name: system.pid(name) for name in pids} == pids, "a service restarted"
    assert system.bus.wait_message("uplink.status", lambda m: m.data.connected and m.data.queued <= 2, 60,
                                   after=time.monotonic())


def _loopback(ip: str) -> bool:
    """127.0.0.1, ::1, or 127.0.0.1 as an IPv6 socket shows it (::ffff:127.0.0.1)."""
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def test_with_the_default_config_nothing_listens_beyond_loopback(spawn, tmp_path):
    display = Xvfb()
    try:
        token = tmp_path / "token"
        token.write_text(TOKEN)
        text = (REPO / "config.yaml").read_text()
        # The shipped file with only the secret and the outbox moved: its bus and every other default kept.
        defaults = tmp_path / "defaults.yaml"
        defaults.write_text(text.replace("token_file: null", f"token_file: {token}")
                            .replace("outbox_path: var/outbox.sqlite3", f"outbox_path: {tmp_path}/o.db")
                            .replace("state_path: var/trip.sqlite3", f"state_path: {tmp_path}/trip.db"))
        services = ("bms_reader", "gps_reader", "tb_uplink", "trip", "gui")
        children = [spawn(python_module(f"services.{name}", "--config", defaults), env={"DISPLAY": display.display})
                    for name in services]
        children += [spawn(python_module("sim.pace_bms", "--tcp", 0)), spawn(python_module("sim.nmea", "--tcp", 0))]
        for child in children[:len(services)]:
            assert child.wait_line("running", 60), child.text()

        def listening():
            found = []
            for child in children:
                for conn in psutil.Process(child.pid).net_connections(kind="inet"):
                    if conn.status == psutil.CONN_LISTEN:
                        found.append((child.proc.args[2], conn.laddr.ip, conn.laddr.port))
            return found
        # The four publishers' bus sockets and the two simulators' ports.
        assert wait_for(lambda: len(listening()) >= 6, 60), listening()
        assert all(_loopback(ip) for _, ip, _ in listening()), listening()
        for child in children:
            assert not any(TOKEN in line for line in child.text())
    finally:
        display.stop()
