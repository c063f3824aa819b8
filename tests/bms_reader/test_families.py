"""bms_reader and the simulator as separate processes, the simulator speaking a VER 20 vendor layout:
``protocol: auto`` settles on it from the first reply that has it, and the values arrive."""

from tests.bms_reader.test_reader import Sim, start_reader

SAME = ("cells_mv", "temps_c", "current_a", "remaining_ah", "full_ah", "soc_pct", "cycles")


def _pack(snapshot):
    [pack] = snapshot.data.packs
    return pack


def _matches_the_simulator(sim, pack) -> None:
    [reply] = {str(e["packs"]): e for e in sim.events("reply") if e["command"] == "42"}.values()  # --freeze
    [theirs] = reply["packs"]
    assert {k: getattr(pack, k) for k in SAME} == {k: theirs[k] for k in SAME}
    assert abs(pack.voltage_v - theirs["voltage_v"]) <= 0.005  # these layouts send 10 mV steps


def test_auto_finds_an_eg4_pack_that_ignores_other_frames(spawn, tmp_path, watch):
    sim = Sim(spawn, tmp_path, "tcp", "--family", "20-eg4", "--foreign", "silent", "--freeze")
    reader, bus = start_reader(spawn, tmp_path, sim, watch, response_timeout_s=0.5)
    info = bus.wait_message("bms.info", lambda m: m.data.protocol == "20-eg4", 60)
    assert info is not None, reader.text()
    assert info.data.protocol_version == "20"
    snap = bus.wait_message("bms.snapshot", lambda m: _pack(m).charge_fet is not None, 30)
    assert snap is not None, reader.text()
    pack = _pack(snap)
    _matches_the_simulator(sim, pack)
    assert pack.reported_soc_pct is not None and pack.design_ah is None
    assert pack.protections == [] and pack.charge_fet is True
    # Once settled, only EG4's two commands are asked: no v2.5 info, capacities or settings.
    asked_after = {(e["command"]) for e in sim.events("request")[3:]}
    assert asked_after <= {"42", "44"}, asked_after
    link = bus.wait_message("bms.link", lambda m: m.data.state == "up", 30)
    assert link is not None and "decode" not in link.data.errors


def test_auto_finds_a_seplos_pack_that_answers_other_frames_with_an_error(spawn, tmp_path, watch):
    sim = Sim(spawn, tmp_path, "tcp", "--family", "20-seplos", "--freeze")
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    info = bus.wait_message("bms.info", lambda m: m.data.protocol == "20-seplos", 60)
    assert info is not None, reader.text()
    snap = bus.wait_message("bms.snapshot", timeout=30)
    assert snap is not None
    pack = _pack(snap)
    _matches_the_simulator(sim, pack)
    assert pack.design_ah is not None and pack.reported_soh_pct is not None
    # No capture of Seplos's status reply: its alarms are unknown, never "none".
    assert pack.protections is None and pack.warnings is None and pack.charge_fet is None
    # Before it: a v2.5 try (answered with the VER error) and an EG4 one (the CID1 error), then Seplos's.
    tries = [(e["ver"], e["cid1"]) for e in sim.events("request") if e["command"] == "42"]
    assert tries[:3] == [("25", "46"), ("20", "4A"), ("20", "46")], tries
    assert set(tries[3:]) == {("20", "46")}


def test_a_configured_family_the_pack_does_not_speak_is_a_decode_error_never_a_misread(spawn, tmp_path, watch):
    sim = Sim(spawn, tmp_path, "tcp")  # a v2.5 pack, which answers any frame in its own layout
    reader, bus = start_reader(spawn, tmp_path, sim, watch, protocol="20-eg4")
    link = bus.wait_message("bms.link", lambda m: m.data.errors.get("decode", 0) >= 3, 60)
    assert link is not None, reader.text()
    assert bus.messages("bms.snapshot") == []
    assert reader.proc.poll() is None
