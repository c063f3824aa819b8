"""The simulated battery behaves like one in a vehicle (the simulator's values must be worth testing against)."""

from sim.battery import CYCLE_S, OVERCURRENT_EVERY, Battery


def drive(battery: Battery, seconds: float, step: float = 1.0):
    for _ in range(int(seconds / step)):
        battery.advance(step)
        yield battery


def test_current_soc_and_cells_follow_the_drive_cycle():
    battery = Battery(packs=2, cells=16, temps=6, seed=3, soc=0.6)
    soc_start = battery.packs[0].soc
    currents, cell_means = [], []
    for b in drive(battery, CYCLE_S):
        currents.append(b.packs[0].current_a)
        cell_means.append(sum(b.packs[0].cell_mv()) / 16)
    assert min(currents) < -50 and max(currents) > 20, "accelerations and charging both happen"
    assert battery.packs[0].soc != soc_start
    hard = currents.index(min(currents))
    assert cell_means[hard] < cell_means[0], "cells sag under load"


def test_warnings_protections_and_balancing_appear_when_thresholds_are_crossed():
    battery = Battery(packs=1, seed=5, soc=0.97)
    seen = {"warnings": set(), "protections": set(), "balancing": False}
    for b in drive(battery, CYCLE_S * OVERCURRENT_EVERY, 0.5):
        status = b.status(0)
        seen["warnings"] |= set(status.warnings)
        seen["protections"] |= set(status.protections)
        seen["balancing"] |= bool(status.balancing)
        if "discharge_overcurrent" in status.protections:
            assert not status.discharge_fet, "a protection opens its MOSFET"
    assert "discharge_current" in seen["warnings"] and "charge_current" not in seen["protections"]
    assert "discharge_overcurrent" in seen["protections"]
    assert seen["balancing"], "top cells balance while charging"


def test_cells_spread_over_time_and_offline_packs_send_zeros():
    battery = Battery(packs=2, seed=9)
    spread_start = max(battery.packs[0].offsets_mv) - min(battery.packs[0].offsets_mv)
    battery.packs[1].online = False
    for _ in drive(battery, 3 * 3600, 60):
        pass
    assert max(battery.packs[0].offsets_mv) - min(battery.packs[0].offsets_mv) > spread_start
    offline = battery.analog(1)
    assert not offline.online and offline.voltage_mv == 0 and offline.full_10mah == 0


def test_frozen_battery_keeps_its_values():
    battery = Battery(packs=1, frozen=True)
    before = battery.analog(0)
    for _ in drive(battery, 100):
        pass
    assert battery.analog(0) == before
