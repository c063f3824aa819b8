"""A battery stack that behaves like one in a small electric vehicle, for the PACE simulator.

Current follows a repeating drive cycle (stop, hard acceleration, cruise, regeneration, a solar
charging stop); every pack's state of charge integrates its current; cell voltages follow an LFP
open-circuit curve plus the IR drop plus a per-cell offset that slowly spreads; cells at the top
balance while charging; temperatures rise with I²; warnings and protections are raised when the
thresholds below are crossed, as a PACE BMS would. Deterministic for a given seed and time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from common.pace import AnalogPack, StatusPack
from common.pace.decode import PROTECT_1, PROTECT_2, WARN_1, WARN_2, flag_bits

TEMP_OFFSET = 2730

# (seconds into the cycle, current in A per pack, + = charging); linear between points.
DRIVE_CYCLE = [
    (0, -1.0), (15, -1.0), (17, -95.0), (25, -60.0), (30, -30.0), (90, -28.0), (95, 25.0), (105, 18.0),
    (108, -1.0), (125, -1.0), (127, -80.0), (135, -35.0), (200, -32.0), (205, 30.0), (212, -1.0),
    (230, 35.0), (320, 32.0), (322, -1.0), (330, -1.0),
]
CYCLE_S = DRIVE_CYCLE[-1][0]
# Every few cycles the launch is harder than the BMS allows, to show a protection.
OVERCURRENT_EVERY = 4
OVERCURRENT_A = -115.0

CELL_HIGH_WARN_MV, CELL_OVER_PROTECT_MV = 3550, 3650
CELL_LOW_WARN_MV, CELL_UNDER_PROTECT_MV = 2900, 2600
CHARGE_WARN_A, DISCHARGE_WARN_A, DISCHARGE_PROTECT_A = 50.0, -90.0, -110.0
TEMP_HIGH_WARN_C, TEMP_HIGH_PROTECT_C = 45.0, 55.0
LOW_POWER_SOC = 0.10
BALANCE_START_MV, BALANCE_DELTA_MV = 3400, 8
CELL_R_OHM = 0.0009

_OCV = [(0.0, 2.80), (0.05, 3.05), (0.10, 3.20), (0.20, 3.26), (0.40, 3.29), (0.70, 3.31), (0.90, 3.33),
        (0.97, 3.38), (1.0, 3.45)]


def _interp(points: list[tuple[float, float]], x: float) -> float:
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (max(x, x0) - x0) / (x1 - x0)
    return points[-1][1]


def _ocv_integral(soc: float) -> float:
    """The open-circuit voltage integrated over the state of charge from empty to ``soc`` (V)."""
    total = 0.0
    for (x0, y0), (x1, y1) in zip(_OCV, _OCV[1:]):
        if soc <= x0:
            break
        x = min(soc, x1)
        total += (x - x0) * (y0 + (y0 + (y1 - y0) * (x - x0) / (x1 - x0))) / 2
    return total


def drive_current(t: float) -> float:
    """Pack current (A) at time ``t`` s of the drive."""
    cycle, phase = divmod(t, CYCLE_S)
    amps = _interp(DRIVE_CYCLE, phase)
    if int(cycle) % OVERCURRENT_EVERY == OVERCURRENT_EVERY - 1 and 17 <= phase < 20:
        amps = OVERCURRENT_A
    return amps


@dataclass
class SimPack:
    cells: int
    temps: int
    design_ah: float
    full_ah: float
    soc: float
    cycles: int
    offsets_mv: list[float]
    spread_mv_per_h: list[float]
    temps_c: list[float]
    current_a: float = 0.0
    balancing: set[int] = field(default_factory=set)
    online: bool = True

    def deliverable_wh(self) -> float:
        """The energy this pack can still deliver down to empty at its present current: the
        open-circuit curve from here to empty, less the IR drop, plus each cell's offset (the truth
        a range estimate is measured against)."""
        volts = sum(_ocv_integral(self.soc) + self.soc * (self.current_a * CELL_R_OHM + off / 1000)
                    for off in self.offsets_mv)
        return volts * self.full_ah

    def cell_mv(self) -> list[int]:
        ocv = _interp(_OCV, self.soc) * 1000
        ir = self.current_a * CELL_R_OHM * 1000
        return [max(2000, min(3900, round(ocv + ir + off))) for off in self.offsets_mv]


class Battery:
    """``packs`` packs of ``cells`` cells and ``temps`` sensors, evolving with ``advance(dt)``."""

    def __init__(self, packs: int = 1, cells: int = 16, temps: int = 6, seed: int = 1, soc: float = 0.8,
                 ambient_c: float = 24.0, frozen: bool = False):
        rng = random.Random(seed)
        self.t = 0.0
        self.frozen = frozen
        self.ambient_c = ambient_c
        self.packs = [
            SimPack(cells=cells, temps=temps, design_ah=100.0, full_ah=round(100.0 + rng.uniform(-4, 6), 2),
                    soc=max(0.05, min(0.98, soc + rng.uniform(-0.03, 0.03))), cycles=rng.randint(5, 300),
                    offsets_mv=[rng.uniform(-6, 6) for _ in range(cells)],
                    spread_mv_per_h=[rng.uniform(-4, 4) for _ in range(cells)],
                    temps_c=[ambient_c + rng.uniform(-0.5, 0.5) for _ in range(temps)])
            for _ in range(packs)
        ]
        self.advance(0.0)

    def advance(self, dt: float, power_w: float | None = None) -> None:
        """Move on ``dt`` s. ``power_w``: the vehicle's battery power (sim/vehicle.py, positive =
        drawn), shared by the online packs at their own voltage, instead of the drive cycle."""
        if self.frozen:
            dt = 0.0
        self.t += dt
        total = drive_current(self.t)
        online = sum(1 for p in self.packs if p.online)
        for i, pack in enumerate(self.packs):
            if not pack.online:
                continue
            if power_w is None:
                pack.current_a = round(total * (1 + 0.02 * math.sin(self.t / 7 + i)), 2)
            else:  # a PACE BMS reports -327.68 A to 327.67 A: beyond that its sensor is at its end
                amps = -power_w / online / (sum(pack.cell_mv()) / 1000)
                pack.current_a = round(max(-327.0, min(327.0, amps)), 2)
            pack.soc = max(0.0, min(1.0, pack.soc + pack.current_a * dt / 3600 / pack.full_ah))
            for c in range(pack.cells):
                pack.offsets_mv[c] += pack.spread_mv_per_h[c] * dt / 3600
                if c + 1 in pack.balancing:
                    pack.offsets_mv[c] -= 20 * dt / 3600
            heat = (pack.current_a / 100) ** 2
            for s in range(pack.temps):
                target = self.ambient_c + heat * (18 if s < pack.temps - 2 else 30 if s == pack.temps - 2 else 0)
                pack.temps_c[s] += (target - pack.temps_c[s]) * min(1.0, dt / 120)
            mv = pack.cell_mv()
            low = min(mv)
            pack.balancing = ({c + 1 for c, v in enumerate(mv) if v >= BALANCE_START_MV and v - low >= BALANCE_DELTA_MV}
                              if pack.current_a > 0 else set())

    def deliverable_wh(self) -> float:
        return sum(p.deliverable_wh() for p in self.packs if p.online)

    def analog(self, index: int, tail: bytes = b"", design: bool = True, user_count: int = 3) -> AnalogPack:
        pack = self.packs[index]
        if not pack.online:
            return AnalogPack(cells_mv=(0,) * pack.cells, temps_dk=(TEMP_OFFSET,) * pack.temps, current_10ma=0,
                              voltage_mv=0, remaining_10mah=0, user_count=user_count, full_10mah=0, cycles=0,
                              design_10mah=0 if design else None, extra=bytes(len(tail)))
        mv = pack.cell_mv()
        return AnalogPack(
            cells_mv=tuple(mv), temps_dk=tuple(round(t * 10) + TEMP_OFFSET for t in pack.temps_c),
            current_10ma=round(pack.current_a * 100), voltage_mv=sum(mv),
            remaining_10mah=round(pack.soc * pack.full_ah * 100), user_count=user_count,
            full_10mah=round(pack.full_ah * 100), cycles=pack.cycles,
            design_10mah=round(pack.design_ah * 100) if design else None, extra=tail)

    def status(self, index: int, extra: bytes = b"") -> StatusPack:
        pack = self.packs[index]
        if not pack.online:
            return StatusPack((0,) * pack.cells, (0,) * pack.temps, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, extra)
        mv, amps, temps = pack.cell_mv(), pack.current_a, pack.temps_c
        warn_1 = [name for name, on in (
            ("cell_high_voltage", max(mv) >= CELL_HIGH_WARN_MV), ("cell_low_voltage", min(mv) <= CELL_LOW_WARN_MV),
            ("charge_current", amps >= CHARGE_WARN_A), ("discharge_current", amps <= DISCHARGE_WARN_A)) if on]
        hot = max(temps) >= TEMP_HIGH_WARN_C
        warn_2 = [name for name, on in (
            ("charge_high_temp", hot and amps > 0), ("discharge_high_temp", hot and amps < 0),
            ("low_power", pack.soc <= LOW_POWER_SOC)) if on]
        protect_1 = [name for name, on in (
            ("cell_overvoltage", max(mv) >= CELL_OVER_PROTECT_MV), ("cell_undervoltage", min(mv) <= CELL_UNDER_PROTECT_MV),
            ("discharge_overcurrent", amps <= DISCHARGE_PROTECT_A)) if on]
        protect_2 = [name for name, on in (
            ("charge_overtemp", max(temps) >= TEMP_HIGH_PROTECT_C and amps > 0),
            ("discharge_overtemp", max(temps) >= TEMP_HIGH_PROTECT_C and amps <= 0),
            ("fully_charged", pack.soc >= 0.999)) if on]
        charge_fet = not ({"cell_overvoltage", "charge_overtemp"} & set(protect_1 + protect_2))
        discharge_fet = not ({"cell_undervoltage", "discharge_overcurrent", "discharge_overtemp"} & set(protect_1 + protect_2))
        instruction = (0x02 if charge_fet else 0) | (0x04 if discharge_fet else 0) | (0x08 if amps < 0 else 0)
        instruction |= 0x20 if amps > 0 else 0
        balance = sum(1 << (c - 1) for c in pack.balancing)
        return StatusPack(
            cell_codes=tuple(2 if v >= CELL_HIGH_WARN_MV else 1 if v <= CELL_LOW_WARN_MV else 0 for v in mv),
            temp_codes=tuple(2 if t >= TEMP_HIGH_WARN_C else 0 for t in temps),
            charge_current_code=2 if amps >= CHARGE_WARN_A else 0, total_voltage_code=0,
            discharge_current_code=2 if amps <= DISCHARGE_WARN_A else 0,
            protect_1=flag_bits(protect_1, PROTECT_1), protect_2=flag_bits(protect_2, PROTECT_2),
            instruction=instruction, control=0x01, fault=0, balance_1=balance & 0xFF, balance_2=balance >> 8 & 0xFF,
            warn_1=flag_bits(warn_1, WARN_1), warn_2=flag_bits(warn_2, WARN_2), extra=extra)
