"""bms_reader against the PACE simulator, each in its own process, on a real pty and on TCP."""

import json
import signal
import time

import pytest

from common.config import load
from harness.proc import DATA, free_port, python_module, write_config

ANALOG_KEYS = ("cells_mv", "temps_c", "current_a", "voltage_v", "power_w", "remaining_ah", "full_ah", "design_ah",
               "cycles", "soc_pct", "soh_pct", "cell_min_mv", "cell_max_mv", "cell_delta_mv")
STATUS_KEYS = ("warnings", "protections", "faults", "indicators", "cell_alarms", "temp_alarms", "pack_alarms",
               "balancing", "charge_fet", "discharge_fet", "status_raw")


class Sim:
    """The simulator in its own process, restartable on the same pty link or TCP port."""

    def __init__(self, spawn, tmp_path, transport: str, *args):
        self.spawn, self.transport, self.args = spawn, transport, [str(a) for a in args]
        self.port = free_port()
        self.link = tmp_path / "ttyBMS"
        self.section = ({"connection_type": "IP", "bms_ip": "127.0.0.1", "bms_port": self.port}
                        if transport == "tcp" else {"connection_type": "Serial", "bms_serial": str(self.link)})
        self.start()

    def start(self):
        where = ["--tcp", self.port] if self.transport == "tcp" else ["--pty", "--link", self.link]
        self.child = self.spawn(python_module("sim.pace_bms", *where, "--events", *self.args))
        assert self.child.wait_line('"event": "listening"', 60), self.child.text()

    def events(self, kind: str) -> list[dict]:
        out = []
        for line in self.child.text("out"):
            event = json.loads(line)
            if event["event"] == kind:
                out.append(event)
        return out


def start_reader(spawn, tmp_path, sim, watch, **section):
    """The reader, started after a watcher of its bus (which then misses at most what the reader
    publishes before the connection is up: bms.info again comes only a minute later)."""
    cfg = write_config(tmp_path / "c.yaml", bms_reader={**sim.section, "scan_interval": 0, **section})
    bus = watch([load(cfg).bus.bms_reader], ["bms."])
    return spawn(python_module("services.bms_reader", "--config", cfg)), bus


def analog_of(pack: dict) -> dict:
    return {k: pack.get(k) for k in ANALOG_KEYS}


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_snapshots_on_the_bus_match_the_simulator_state(spawn, tmp_path, watch, transport):
    sim = Sim(spawn, tmp_path, transport, "--packs", 3, "--speedup", 40, "--seed", 7)
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    assert bus.wait(lambda w: len(w.messages("bms.snapshot")) >= 6, 60), reader.text()
    replies = {e["n"]: e for e in sim.events("reply")}
    checked = 0
    for snap in bus.messages("bms.snapshot")[1:]:
        packs = [p for p in json.loads(json.dumps(_builtins(snap.data)))["packs"]]
        # The simulator evolves between replies, so only the reply this snapshot came from matches.
        analog = [n for n, e in replies.items() if e["command"] == "42"
                  and [analog_of(p) for p in e["packs"]] == [analog_of(p) for p in packs]]
        assert len(analog) == 1, "no simulator reply matches this snapshot"
        status = replies[analog[0] + 1]
        assert status["command"] == "44"
        for mine, theirs in zip(packs, status["packs"]):
            assert {k: mine[k] for k in STATUS_KEYS} == {k: theirs[k] for k in STATUS_KEYS}
        assert [p["pack"] for p in packs] == [1, 2, 3] and snap.data.pack_count == 3
        checked += 1
    assert checked >= 5
    values = {tuple(p["cells_mv"]) for e in replies.values() if e["command"] == "42" for p in e["packs"]}
    assert len(values) > 3, "the simulated values should evolve"
    info = bus.wait_message("bms.info", timeout=90)
    assert info is not None and info.data.software_version == "P16S100A-SIM-1.00" and info.data.pack_count == 3
    assert info.data.bms_serial == "SIMBMS0000000007" and info.data.protocol_version == "25"
    assert info.data.protocol == "25"


def _builtins(data):
    import msgspec
    return msgspec.to_builtins(data)


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_link_goes_down_when_the_simulator_dies_and_up_when_it_returns(spawn, tmp_path, watch, transport):
    sim = Sim(spawn, tmp_path, transport, "--packs", 2)
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    # How soon the link goes down and up again is measured in bench/reactions.py.
    assert bus.wait_message("bms.link", lambda m: m.data.state == "up", 60), reader.text()
    sim.child.signal(signal.SIGKILL)
    assert sim.child.wait(30) == -signal.SIGKILL
    killed = time.monotonic()
    down = bus.wait_message("bms.link", lambda m: m.data.state == "down", 60, after=killed)
    assert down is not None, reader.text()
    assert down.data.errors.get("io", 0) >= 1
    sim.start()
    returned = time.monotonic()
    assert bus.wait_message("bms.link", lambda m: m.data.state == "up", 60, after=returned), reader.text()
    assert bus.wait_message("bms.snapshot", timeout=60, after=returned)
    assert reader.proc.poll() is None, "the reader must not exit"


FAULT_ORDER = ["no_answer", "corrupt", "checksum", "split", "junk", "rtn", "truncated", "drop"]


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_every_injected_fault_is_counted_under_its_kind(spawn, tmp_path, watch, transport):
    faults = [arg for kind in FAULT_ORDER for arg in ("--fault", kind)]
    sim = Sim(spawn, tmp_path, transport, *faults, "--fault-every", 3, "--fault-limit", len(FAULT_ORDER))
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    assert sim.child.wait_line('"kind": "drop"', 120), sim.child.text()
    last_fault = time.monotonic()
    # After the last fault the next good cycles must be published.
    assert bus.wait(lambda w: len([t for t, _ in w.items("bms.snapshot") if t > last_fault]) >= 3, 60)
    injected = sim.events("fault")
    assert [e["kind"] for e in injected] == FAULT_ORDER
    expected = {}
    for e in injected:
        if e["counted_as"]:
            expected[e["counted_as"]] = expected.get(e["counted_as"], 0) + 1
    link = bus.wait_message("bms.link", lambda m: m.data.errors == expected and m.data.state == "up", 30)
    assert link is not None, (bus.messages("bms.link")[-1].data.errors, expected)
    snaps = bus.items("bms.snapshot")
    for e in injected:
        assert any(m.ts > e["t"] for _, m in snaps), f"no snapshot after the {e['kind']} fault"
    assert reader.proc.poll() is None


@pytest.mark.parametrize("broken", ["42", "44"])
def test_a_failed_or_partial_cycle_never_publishes_zeros(spawn, tmp_path, watch, broken):
    sim = Sim(spawn, tmp_path, "tcp", "--fault", "rtn", "--fault-every", 1, "--fault-command", broken)
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    link = bus.wait_message("bms.link", lambda m: m.data.errors.get("rtn", 0) >= 4, 60)
    assert link is not None and link.data.state == "up"
    snaps = bus.messages("bms.snapshot")
    if broken == "42":
        assert snaps == [], "no analog data, so no snapshot"
    else:
        assert snaps, "analog data came, so snapshots with status unknown"
        for snap in snaps:
            for pack in snap.data.packs:
                assert pack.cells_mv and pack.voltage_v > 0
                assert all(getattr(pack, k) is None for k in STATUS_KEYS)


def test_field_quirks_through_the_service(spawn, tmp_path, watch):
    sim = Sim(spawn, tmp_path, "tcp", "--packs", 3, "--tail", 14, "--status-extra", 1, "--reply-adr", 0,
              "--offline", 2)
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    snap = bus.wait_message("bms.snapshot", timeout=60)
    assert snap is not None, reader.text()
    p1, p2, p3 = snap.data.packs
    assert p2.online is False and p2.cells_mv == [] and p2.soc_pct is None and p2.current_a is None
    assert p2.warnings is None, "an offline pack's zero status block says nothing"
    for pack in (p1, p3):
        assert pack.online and len(pack.cells_mv) == 16 and pack.reported_soc_pct is not None
        assert pack.warnings is not None and len(pack.extra_hex) == 28
    info = bus.wait_message("bms.info", timeout=90)
    assert info is not None and info.data.address == 0, "a reply address that differs from the request is accepted"


def test_reader_decodes_captured_frames_served_by_the_simulator(spawn, tmp_path, watch):
    sim = Sim(spawn, tmp_path, "tcp", "--vectors", DATA / "pace/vectors.json")
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    vectors = json.loads((DATA / "pace/vectors.json").read_text())
    captured = [v for v in vectors if v["command"] == "42" and v.get("request_info") == "FF" and v["checksum_ok"]]
    want = {tuple(tuple(p["cells_mV"]) for p in v["expected"]["packs"]) for v in captured}
    assert bus.wait(lambda w: len(w.messages("bms.snapshot")) >= 2 * len(captured), 60), reader.text()
    got = {tuple(tuple(p.cells_mv) for p in m.data.packs) for m in bus.messages("bms.snapshot")}
    assert got == want


def test_an_adapter_that_echoes_requests_and_a_long_reply(spawn, tmp_path, watch):
    # 12 packs: a 1438-character reply, 1.5 s on the wire, longer than the 1 s response timeout.
    sim = Sim(spawn, tmp_path, "tcp", "--packs", 12, "--echo")
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    snap = bus.wait_message("bms.snapshot", timeout=60)
    assert snap is not None and snap.data.pack_count == 12, reader.text()
    link = bus.wait_message("bms.link", timeout=30, after=time.monotonic())
    assert link is not None and link.data.errors == {}, link.data.errors
    # Asked to stop while such a reply is coming in, it stops at once, not by the runner's deadline.
    assert sim.child.wait_line('"event": "reply"', 60)
    reader.signal(signal.SIGTERM)
    assert reader.wait(60) == 0
    assert any("bms_reader stopped" in line for line in reader.text("err")), reader.text()[-3:]
