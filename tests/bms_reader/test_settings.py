"""bms_reader and the simulator as separate processes: the BMS's settings, unsupported commands,
the BMS clock, RS485 stacks asked address by address, and a bridge that freezes."""

import datetime as dt

from common.pace import commands, config
from harness.proc import wait_for
from tests.bms_reader.test_reader import Sim, start_reader

SETTINGS = {c.name: c for c in config.CONFIG_COMMANDS}


def requests(sim, cid2: int, adr: int | None = None) -> list[dict]:
    return [e for e in sim.events("request") if e["command"] == f"{cid2:02X}" and (adr is None or e["adr"] == adr)]


def test_bms_config_carries_the_simulators_settings_exactly(spawn, tmp_path, watch):
    sim = Sim(spawn, tmp_path, "tcp", "--packs", 2)
    reader, bus = start_reader(spawn, tmp_path, sim, watch)
    msg = bus.wait_message("bms.config", timeout=90)
    assert msg is not None, reader.text()
    [pack] = msg.data.packs
    assert pack.address == 1 and msg.data.unsupported == []
    for name, command in SETTINGS.items():
        assert pack.settings[name] == command.sim_default, name
    clock = dt.datetime.fromisoformat(pack.settings["datetime"]["bms_clock"])
    assert abs((clock - dt.datetime.now()).total_seconds()) < 3600, "the simulated clock starts on time"


def test_a_command_the_firmware_refuses_is_asked_once(spawn, tmp_path, watch):
    refused = SETTINGS["cell_overvoltage"].cid2
    sim = Sim(spawn, tmp_path, "tcp", "--unsupported", f"{refused:02X}")
    reader, bus = start_reader(spawn, tmp_path, sim, watch, config_every_s=10)
    datetime_cid2 = commands.COMMANDS["datetime"].cid2
    # Three settings reads: the refused command would have been asked three times.
    assert wait_for(lambda: len(requests(sim, datetime_cid2)) >= 3, 120), sim.child.text()
    assert len(requests(sim, refused)) == 1
    msg = bus.wait_message("bms.config", lambda m: m.data.unsupported == ["cell_overvoltage"], 30)
    assert msg is not None and "cell_overvoltage" not in msg.data.packs[0].settings
    assert msg.data.packs[0].settings["balancing"] == SETTINGS["balancing"].sim_default
    link = bus.messages("bms.link")[-1]
    assert "rtn" not in link.data.errors and link.data.state == "up"


def test_the_bms_clock_is_set_once_when_stopped_and_never_while_current_flows(spawn, tmp_path, watch):
    idle_after_s = 15
    sim = Sim(spawn, tmp_path, "tcp", "--clock-offset-s", 3600, "--current-a", -20, "--idle-after-s", idle_after_s)
    reader, bus = start_reader(spawn, tmp_path, sim, watch, config_every_s=10, system_clock="trusted")
    flowing = bus.wait_message("bms.info", lambda m: m.data.clock_note == "current flows (or is unknown)", 60)
    assert flowing is not None, reader.text()
    assert 3590 <= flowing.data.clock_drift_s <= 3610
    assert sim.child.wait_line('"event": "clock_set"', 90), sim.child.text()
    [clock_set] = sim.events("clock_set")
    assert clock_set["current_a"] == [0.0], "set only while no current flows"
    # The next settings read finds the clock right, and nothing sets it again.
    datetime_cid2 = commands.COMMANDS["datetime"].cid2
    reads_at_set = len(requests(sim, datetime_cid2))
    assert wait_for(lambda: len(requests(sim, datetime_cid2)) >= reads_at_set + 2, 60)
    right = bus.wait_message("bms.info", lambda m: m.data.clock_drift_s is not None and abs(m.data.clock_drift_s) <= 2,
                             30)
    assert right is not None and right.data.clock_set_ts is not None
    assert len(sim.events("clock_set")) == 1
    assert len(requests(sim, 0xB2)) == 1


def test_the_clock_is_left_alone_when_sync_is_off(spawn, tmp_path, watch):
    sim = Sim(spawn, tmp_path, "tcp", "--clock-offset-s", -7200, "--current-a", 0)
    reader, bus = start_reader(spawn, tmp_path, sim, watch, config_every_s=10, system_clock="trusted",
                               bms_clock_sync=False)
    datetime_cid2 = commands.COMMANDS["datetime"].cid2
    assert wait_for(lambda: len(requests(sim, datetime_cid2)) >= 2, 90), sim.child.text()
    info = bus.wait_message("bms.info", lambda m: m.data.clock_note == "bms_clock_sync is off", 30)
    assert info is not None and -7210 <= info.data.clock_drift_s <= -7190
    assert requests(sim, 0xB2) == []


def test_per_address_stack_with_a_dead_address_keeps_the_others(spawn, tmp_path, watch):
    sim = Sim(spawn, tmp_path, "tcp", "--addresses", "1,2,3,4", "--dead", 3)
    reader, bus = start_reader(spawn, tmp_path, sim, watch, stack_addressing="per_address", addresses=[1, 2, 3, 4],
                               response_timeout_s=0.3)
    assert bus.wait(lambda w: len(w.messages("bms.snapshot")) >= 30, 120), reader.text()
    snaps = bus.messages("bms.snapshot")[5:]
    for snap in snaps:
        assert [p.pack for p in snap.data.packs] == [1, 2, 3, 4]
        assert [p.online for p in snap.data.packs] == [True, True, False, True]
        assert all(p.cells_mv and p.warnings is not None for p in snap.data.packs if p.online)
    analog = commands.COMMANDS["analog"].cid2
    asked = {adr: len(requests(sim, analog, adr)) for adr in (1, 2, 3, 4)}
    # The dead address is backed off: asked far less often than the live ones.
    assert asked[3] * 3 < min(asked[1], asked[2], asked[4]), asked
    replies = [e for e in sim.events("reply") if e["command"] == "42"]
    assert all(len(e["packs"]) == 1 for e in replies)
    link = bus.messages("bms.link")[-1].data
    assert link.state == "up" and link.errors.get("timeout", 0) >= 1


def test_a_bridge_freeze_takes_the_link_down_once_and_stale_replies_are_only_counted(spawn, tmp_path, watch):
    sim = Sim(spawn, tmp_path, "tcp", "--packs", 4, "--freeze-at-s", 3, "--freeze-for-s", 15)
    reader, bus = start_reader(spawn, tmp_path, sim, watch, response_timeout_s=1.0)
    assert sim.child.wait_line('"event": "thaw"', 90), sim.child.text()
    [thaw] = sim.events("thaw")
    assert thaw["held_bytes"] > 0, "requests were held in the freeze"
    after = thaw["t"]
    # Wait until the held requests have all been answered and good cycles follow.
    assert bus.wait(lambda w: len([t for t, m in w.items("bms.snapshot") if m.ts > after + 10]) >= 5, 90)
    states = [m.data.state for m in bus.messages("bms.link")]
    changes = [b for a, b in zip(states, states[1:]) if a != b]
    assert changes == ["up", "down", "up"] or changes == ["down", "up"], changes
    errors = bus.messages("bms.link")[-1].data.errors
    assert errors.get("stale", 0) >= 1, errors
    assert not {"decode", "framing", "checksum", "junk"} & set(errors), errors
