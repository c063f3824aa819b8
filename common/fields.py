"""One table of telemetry quantities: ThingsBoard key, unit, decimals and display label.

The uplink builds its records from these rows and the display takes its labels, units and
precision from them, so a quantity is declared once. Pack 1 uses exactly the keys (and units)
the original bms.py sent, so existing dashboards keep working; those rows are ``original``.
Packs 2..N use the same keys behind a ``pack_<n>_`` prefix, cells and temperatures are numbered
from 1 (``v_cell_<n>``, ``temp_<n>``), and the numbers are zero-padded to
``zero_pad_number_packs`` / ``zero_pad_number_cells`` digits as the original options did.
A quantity whose value is unknown is left out of a record, never sent as 0.

docs/thingsboard.md lists every key with its unit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.messages import GpsFix, Pack


@dataclass(frozen=True)
class Field:
    key: str
    label: str
    unit: str
    decimals: int
    get: Callable[[Any], Any]
    original: bool = False

    def value(self, source) -> Any:
        """The value to send, or None when it is unknown (a missing source counts as unknown)."""
        if source is None:
            return None
        value = self.get(source)
        if isinstance(value, float):
            value = round(value, self.decimals)
        return value


def _cell_temps(p: Pack) -> list[float]:
    """Cell sensors: every temperature but the last two (MOSFET and environment in the SPEC's
    layout), as the original's cell_max_temp/cell_min_temp did with the first four of six."""
    return p.temps_c[:-2] if len(p.temps_c) > 2 else p.temps_c


def _indicator(name: str) -> Callable[[Pack], int | None]:
    return lambda p: None if p.indicators is None else int(name in p.indicators)


def _raw_bits(name: str) -> Callable[[Pack], str | None]:
    return lambda p: None if p.status_raw is None or name not in p.status_raw else f"{p.status_raw[name]:08b}"


def _names(attr: str) -> Callable[[Pack], str | None]:
    return lambda p: None if getattr(p, attr) is None else ",".join(getattr(p, attr))


def _mah(ah: float | None) -> int | None:
    return None if ah is None else round(ah * 1000)


def _opt(func: Callable[[Pack], Any]) -> Callable[[Pack], Any]:
    """None when the pack sent no cells or temperatures (offline, or no analog data)."""
    def guarded(p: Pack):
        try:
            return func(p)
        except (ValueError, IndexError):
            return None
    return guarded


def warning_text(p: Pack) -> str | None:
    """Every non-normal alarm and state of a pack as one line, like the original warning_string
    ("" when there is none, None when the status is unknown)."""
    if p.warnings is None:
        return None
    parts = [f"cell {i} {w}" for i, w in sorted((p.cell_alarms or {}).items())]
    parts += [f"temp {i} {w}" for i, w in sorted((p.temp_alarms or {}).items())]
    parts += [f"{name.replace('_', ' ')} {w}" for name, w in (p.pack_alarms or {}).items()]
    for title, names in (("protection", p.protections), ("fault", p.faults), ("warning", p.warnings)):
        if names:
            parts.append(f"{title}: {' | '.join(names)}")
    return ", ".join(parts)


PACK_FIELDS: tuple[Field, ...] = (
    Field("total_cells", "Cells", "", 0, lambda p: len(p.cells_mv) or None, original=True),
    Field("cell_max_volt", "Cell max", "mV", 0, lambda p: p.cell_max_mv, original=True),
    Field("cell_min_volt", "Cell min", "mV", 0, lambda p: p.cell_min_mv, original=True),
    Field("cell_max_diff_volt", "Cell delta", "mV", 0, lambda p: p.cell_delta_mv),
    Field("total_temps", "Temperature sensors", "", 0, lambda p: len(p.temps_c) or None, original=True),
    Field("cell_max_temp", "Temp max", "°C", 1, _opt(lambda p: max(_cell_temps(p))), original=True),
    Field("cell_min_temp", "Temp min", "°C", 1, _opt(lambda p: min(_cell_temps(p))), original=True),
    Field("i_pack", "Current", "A", 2, lambda p: p.current_a, original=True),
    Field("v_pack", "Voltage", "V", 2, lambda p: p.voltage_v, original=True),
    Field("p_pack", "Power", "W", 1, lambda p: p.power_w, original=True),
    Field("i_remaining_capacity", "Remaining", "mAh", 0, lambda p: _mah(p.remaining_ah), original=True),
    Field("i_full_capacity", "Full capacity", "mAh", 0, lambda p: _mah(p.full_ah)),
    Field("i_design_capacity", "Design capacity", "mAh", 0, lambda p: _mah(p.design_ah)),
    Field("soc", "State of charge", "%", 1, lambda p: p.soc_pct, original=True),
    Field("soh", "State of health", "%", 1, lambda p: p.soh_pct),
    Field("cycles", "Cycles", "", 0, lambda p: p.cycles, original=True),
    Field("current_limit", "Current limit", "", 0, _indicator("current_limit_on"), original=True),
    Field("charge_fet", "Charge FET", "", 0, lambda p: None if p.charge_fet is None else int(p.charge_fet), original=True),
    Field("discharge_fet", "Discharge FET", "", 0,
          lambda p: None if p.discharge_fet is None else int(p.discharge_fet), original=True),
    Field("pack_indicate", "Pack indicate", "", 0, _indicator("pack_indicate"), original=True),
    Field("reverse", "Reverse", "", 0, _indicator("reverse"), original=True),
    Field("ac_in", "AC in", "", 0, _indicator("ac_in"), original=True),
    Field("heart", "Heartbeat", "", 0, _indicator("heart"), original=True),
    Field("warning_string", "Warnings", "", 0, warning_text, original=True),
    Field("balancing_1", "Balancing 1-8", "", 0, _raw_bits("balance_1"), original=True),
    Field("balancing_2", "Balancing 9-16", "", 0, _raw_bits("balance_2"), original=True),
    Field("protections", "Protections", "", 0, _names("protections")),
    Field("faults", "Faults", "", 0, _names("faults")),
    Field("warnings", "Warnings", "", 0, _names("warnings")),
    Field("pack_online", "Online", "", 0, lambda p: int(p.online)),
)

GPS_FIELDS: tuple[Field, ...] = (
    Field("speed_km_h", "Speed", "km/h", 1, lambda f: f.speed_km_h if f.valid else None, original=True),
    Field("latitude", "Latitude", "°", 7, lambda f: f.lat if f.valid else None),
    Field("longitude", "Longitude", "°", 7, lambda f: f.lon if f.valid else None),
    Field("gps_alt_m", "Altitude", "m", 1, lambda f: f.alt_m if f.valid else None),
    Field("gps_course_deg", "Course", "°", 1, lambda f: f.course_deg if f.valid else None),
    Field("gps_sats", "Satellites", "", 0, lambda f: f.sats),
)

TRIP_FIELDS: tuple[Field, ...] = (
    Field("trip_distance_km", "Trip", "km", 2, lambda t: t.distance_km),
    Field("trip_energy_wh", "Trip energy", "Wh", 0, lambda t: t.energy_out_wh - t.energy_in_wh),
    Field("trip_energy_in_wh", "Recovered", "Wh", 0, lambda t: t.energy_in_wh),
    Field("wh_per_km", "Trip rate", "Wh/km", 0, lambda t: t.wh_per_km),
    Field("wh_per_km_recent", "Rate", "Wh/km", 0, lambda t: t.wh_per_km_recent),
    Field("range_km", "Range", "km", 0, lambda t: t.range_km),
    Field("laps", "Laps", "", 0, lambda t: t.laps if t.last_lap_s is not None else None),
    Field("last_lap_s", "Last lap", "s", 1, lambda t: t.last_lap_s),
    Field("best_lap_s", "Best lap", "s", 1, lambda t: t.best_lap_s),
)

CELL_VOLT = Field("v_cell", "Cell", "mV", 0, lambda mv: mv)
TEMP = Field("temp", "Temperature", "°C", 1, lambda c: c)
BY_KEY = {f.key: f for f in PACK_FIELDS + GPS_FIELDS + TRIP_FIELDS}
ORIGINAL_KEYS = ("alive", "analog_data_packs", "total_cells", "cell_max_volt", "cell_min_volt", "total_temps",
                 "cell_max_temp", "cell_min_temp", "temp_5", "temp_6", "i_pack", "v_pack", "p_pack",
                 "i_remaining_capacity", "soc", "cycles", "warning_info_packs", "current_limit", "charge_fet",
                 "discharge_fet", "pack_indicate", "reverse", "ac_in", "heart", "warning_string",
                 "balancing_1", "balancing_2", "speed_km_h")


def number(n: int, digits: int) -> str:
    return f"{n:0{digits}d}" if digits else str(n)


def pack_values(pack: Pack, pad_cells: int, full: bool = True) -> dict[str, Any]:
    """The known values of one pack under pack-1 keys. ``full`` False keeps the original keys only."""
    out = {}
    for f in PACK_FIELDS:
        if full or f.original:
            value = f.value(pack)
            if value is not None:
                out[f.key] = value
    for i, temp in enumerate(pack.temps_c, start=1):
        if full or i in (5, 6):
            out[f"{TEMP.key}_{i}"] = TEMP.value(temp)
    if full:
        for i, mv in enumerate(pack.cells_mv, start=1):
            out[f"{CELL_VOLT.key}_{number(i, pad_cells)}"] = mv
    return out


def gps_values(fix: GpsFix, full: bool = True) -> dict[str, Any]:
    return {f.key: value for f in GPS_FIELDS if (full or f.original) and (value := f.value(fix)) is not None}


def trip_values(state: Any) -> dict[str, Any]:
    """The known values of a trip.state (services/trip)."""
    return {f.key: value for f in TRIP_FIELDS if (value := f.value(state)) is not None}


def pack_prefix(number_: int, pad_packs: int) -> str:
    """Key prefix of pack ``number_``: "" for pack 1 (the original keys), "pack_<n>_" after it."""
    return "" if number_ == 1 else f"pack_{number(number_, pad_packs)}_"


# --- The BMS's own settings (bms.config) ---------------------------------------------------------
# Their names come from the layouts of common/pace/config.py and end in their unit; this table
# turns the suffix into the unit and precision shown, so a new setting needs no row here.
SETTING_UNITS = {"_mv": ("mV", 0), "_ma": ("mA", 0), "_a": ("A", 0), "_c": ("°C", 1), "_ms": ("ms", 0),
                 "_us": ("µs", 0), "_min": ("min", 0), "_pct": ("%", 0), "_s": ("s", 1), "_v": ("V", 2)}
SETTING_KEY_PREFIX = "bms_"


def setting_unit(name: str) -> tuple[str, str, int]:
    """(label, unit, decimals) of a setting field, from its unit-carrying name."""
    for suffix, (unit, decimals) in SETTING_UNITS.items():
        if name.endswith(suffix):
            return name[: -len(suffix)].replace("_", " ").capitalize(), unit, decimals
    return name.replace("_", " ").capitalize(), "", 0


def setting_values(settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The shown settings of one BMS, field -> value: the clock (its own key, bms_clock_drift_s)
    and the bytes whose meaning nobody knows (``reserved_*``) are left out."""
    return {name: value for command, fields_ in sorted(settings.items()) if command != "datetime"
            for name, value in fields_.items() if not name.startswith("reserved_")}


def setting_attributes(packs: list, pad_packs: int = 0) -> dict[str, Any]:
    """ThingsBoard client attributes of a bms.config's packs: ``bms_<field>`` for the first
    BMS, behind the ``pack_<n>_`` prefix for the others (in address order)."""
    out: dict[str, Any] = {}
    for position, pack in enumerate(sorted(packs, key=lambda p: p.address), start=1):
        prefix = pack_prefix(position, pad_packs) + SETTING_KEY_PREFIX
        out.update({prefix + name: value for name, value in setting_values(pack.settings).items()})
    return out
