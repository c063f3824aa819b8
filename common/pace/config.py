"""The BMS's own settings (protection thresholds, balancing, sleep, full charge), read only.

None of these commands is in the 2018 SPEC. The codes and layouts are those nkinnan decoded by
watching PBmsTools 2.4 talk to a Jakiper P16S100A pack (16S LFP, 100 Ah), in
github.com/nkinnan/esphome-pace-bms @2ba4bc650980361afe3f0f7549b6d32d83335a95,
components/pace_bms/pace_bms_protocol_v25.cpp/.h; syssi/esphome-pace-bms
docs/pbmstools-communication.md repeats the same captures. Those frames, with the values they
decode to, are tests/data/pace/config_vectors.json.

Every read request carries no INFO (LENID 0): the 01 that starts most replies is part of the
reply, not an echo of anything sent. What that byte means is unknown (00 in the E3 reply); it is
kept as ``reserved_1`` so a reply re-encodes byte for byte. Units as sent: voltages in mV,
currents in whole A (discharge over-current 1 comes back negative), temperatures in 0.1 K with
the SPEC's 2730 offset, delays in 100 ms, 25 ms or 25 us steps as noted on each layout.

The write codes (D0, D2 ... E6, B5, A8, AE) are left out on purpose: a telemetry reader never
changes a setting. The control switches (99) have no read command either; their state is the
control byte of the 0x44 status reply. B1 (clock) is decoded by decode.decode_datetime; only the
INFO of the B2 request (and of a simulated B1 reply) is built here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from common.pace.errors import DecodeError
from common.pace.frame import Frame
from common.pace.layout import Field, Layout

# 0.1 K with the SPEC's offset: raw 3240 -> 51.0 °C (the offset is 2730 tenths, as in 0x42 replies).
_KELVIN = {"scale": 0.1, "offset": -273.0}


def _mv(name: str) -> Field:
    return Field(f"{name}_mv")


def _celsius(name: str) -> Field:
    return Field(f"{name}_c", **_KELVIN)


def _delay_100ms(name: str) -> Field:
    """One byte of 100 ms steps: PBmsTools shows 1000 ms for the 0x0A it reads."""
    return Field(f"{name}_delay_ms", size=1, scale=100)


def _reserved(number: int) -> Field:
    return Field(f"reserved_{number}", size=1)


def _voltage_layout(name: str) -> Layout:
    """D1/D3/D5/D7: 8 bytes. The pack thresholds are in mV too (0xE100 = 57600 = 57.6 V)."""
    return Layout(_reserved(1), _mv(f"{name}_alarm"), _mv(f"{name}_protect"), _mv(f"{name}_release"),
                  _delay_100ms(name))


def _current_layout(name: str, signed: bool = False) -> Layout:
    """D9/DB: 6 bytes, thresholds in whole amperes."""
    return Layout(_reserved(1), Field(f"{name}_alarm_a", signed=signed), Field(f"{name}_protect_a", signed=signed),
                  _delay_100ms(name))


def _temperature_layout(*names: str) -> Layout:
    """DD/DF/E1/E7: alarm, protect and release per group; no delay is sent."""
    fields = [_celsius(f"{name}_{level}") for name in names for level in ("alarm", "protect", "release")]
    return Layout(_reserved(1), *fields)


@dataclass(frozen=True)
class ConfigCommand:
    name: str
    cid2: int
    request_info: bytes
    layout: Layout
    sim_default: dict  # what a simulated BMS reports: the captured pack's values


def _command(name: str, cid2: int, layout: Layout, **sim_default: int | float) -> ConfigCommand:
    if list(sim_default) != layout.names:
        raise ValueError(f"{name}: sim_default fields {list(sim_default)} are not the layout's {layout.names}")
    return ConfigCommand(name, cid2, b"", layout, dict(sim_default))


def _voltage_command(name: str, cid2: int, alarm_mv: int, protect_mv: int, release_mv: int) -> ConfigCommand:
    """A D1/D3/D5/D7 command, simulated with the captured values and a 1000 ms delay."""
    return _command(name, cid2, _voltage_layout(name), reserved_1=1, **{
        f"{name}_alarm_mv": alarm_mv, f"{name}_protect_mv": protect_mv, f"{name}_release_mv": release_mv,
        f"{name}_delay_ms": 1000})


CELL_OVERVOLTAGE = _voltage_command("cell_overvoltage", 0xD1, 3600, 3700, 3380)
CELL_UNDERVOLTAGE = _voltage_command("cell_undervoltage", 0xD3, 2800, 2500, 2900)
PACK_OVERVOLTAGE = _voltage_command("pack_overvoltage", 0xD5, 57600, 59200, 54000)
PACK_UNDERVOLTAGE = _voltage_command("pack_undervoltage", 0xD7, 44800, 40000, 46400)
# There is one charge over-current command; PBmsTools has no second charge level.
CHARGE_OVERCURRENT = _command(
    "charge_overcurrent", 0xD9, _current_layout("charge_overcurrent"), reserved_1=1,
    charge_overcurrent_alarm_a=104, charge_overcurrent_protect_a=110, charge_overcurrent_delay_ms=1000)
# Sent as negative amperes (FF97 = -105 A), kept so: the sign of 0x42's current. PBmsTools shows 105.
DISCHARGE_OVERCURRENT_1 = _command(
    "discharge_overcurrent_1", 0xDB, _current_layout("discharge_overcurrent_1", signed=True), reserved_1=1,
    discharge_overcurrent_1_alarm_a=-105, discharge_overcurrent_1_protect_a=-110,
    discharge_overcurrent_1_delay_ms=1000)
# 6 bytes: 00, amperes (one byte), delay in 25 ms steps, then the same three bytes again, which
# PBmsTools does not write back (nkinnan: "garbage"); kept as reserved so the reply round-trips.
DISCHARGE_OVERCURRENT_2 = _command(
    "discharge_overcurrent_2", 0xE3,
    Layout(_reserved(1), Field("discharge_overcurrent_2_protect_a", size=1),
           Field("discharge_overcurrent_2_delay_ms", size=1, scale=25), _reserved(2), _reserved(3), _reserved(4)),
    reserved_1=0, discharge_overcurrent_2_protect_a=150, discharge_overcurrent_2_delay_ms=100,
    reserved_2=0, reserved_3=150, reserved_4=4)
SHORT_CIRCUIT = _command(
    "short_circuit", 0xE5, Layout(Field("short_circuit_delay_us", size=1, scale=25)), short_circuit_delay_us=300)
CHARGE_DISCHARGE_OVERTEMP = _command(
    "charge_discharge_overtemp", 0xDD, _temperature_layout("charge_overtemp", "discharge_overtemp"), reserved_1=1,
    charge_overtemp_alarm_c=51.0, charge_overtemp_protect_c=55.0, charge_overtemp_release_c=50.0,
    discharge_overtemp_alarm_c=56.0, discharge_overtemp_protect_c=60.0, discharge_overtemp_release_c=55.0)
CHARGE_DISCHARGE_UNDERTEMP = _command(
    "charge_discharge_undertemp", 0xDF, _temperature_layout("charge_undertemp", "discharge_undertemp"), reserved_1=1,
    charge_undertemp_alarm_c=0.0, charge_undertemp_protect_c=-5.0, charge_undertemp_release_c=0.0,
    discharge_undertemp_alarm_c=-15.0, discharge_undertemp_protect_c=-20.0, discharge_undertemp_release_c=-15.0)
MOS_OVERTEMP = _command(
    "mos_overtemp", 0xE1, _temperature_layout("mos_overtemp"), reserved_1=1,
    mos_overtemp_alarm_c=90.0, mos_overtemp_protect_c=110.0, mos_overtemp_release_c=85.0)
# Under-temperature first, then over-temperature, as on the wire.
ENV_TEMP = _command(
    "env_temp", 0xE7, _temperature_layout("env_undertemp", "env_overtemp"), reserved_1=1,
    env_undertemp_alarm_c=-20.0, env_undertemp_protect_c=-25.0, env_undertemp_release_c=-20.0,
    env_overtemp_alarm_c=65.0, env_overtemp_protect_c=70.0, env_overtemp_release_c=65.0)
# No leading reserved byte in B6, A0 and AF.
BALANCING = _command(
    "balancing", 0xB6, Layout(_mv("balancing_threshold"), _mv("balancing_delta")),
    balancing_threshold_mv=3400, balancing_delta_mv=30)
# nkinnan reads the byte before the delay as a separate, always-zero byte (the delay, 1-120 min,
# fits one byte); it could as well be the high byte of a 16-bit delay.
SLEEP = _command(
    "sleep", 0xA0, Layout(_mv("sleep_cell"), _reserved(1), Field("sleep_delay_min", size=1)),
    sleep_cell_mv=3100, reserved_1=0, sleep_delay_min=5)
FULL_CHARGE_LOW_SOC = _command(
    "full_charge_low_soc", 0xAF,
    Layout(_mv("full_charge_voltage"), Field("full_charge_current_ma"), Field("low_soc_alarm_pct", size=1)),
    full_charge_voltage_mv=56000, full_charge_current_ma=2000, low_soc_alarm_pct=5)

CONFIG_COMMANDS: tuple[ConfigCommand, ...] = (
    CELL_OVERVOLTAGE, CELL_UNDERVOLTAGE, PACK_OVERVOLTAGE, PACK_UNDERVOLTAGE, CHARGE_OVERCURRENT,
    DISCHARGE_OVERCURRENT_1, DISCHARGE_OVERCURRENT_2, SHORT_CIRCUIT, CHARGE_DISCHARGE_OVERTEMP,
    CHARGE_DISCHARGE_UNDERTEMP, MOS_OVERTEMP, ENV_TEMP, BALANCING, SLEEP, FULL_CHARGE_LOW_SOC,
)
BY_CID2 = {c.cid2: c for c in CONFIG_COMMANDS}
BY_NAME = {c.name: c for c in CONFIG_COMMANDS}


def decode_config(command: ConfigCommand, frame: Frame) -> dict:
    """The settings in ``frame``, the reply to ``command``. Raises DeviceError for a refusal
    (firmwares without the command answer RTN 04) and DecodeError for any other length."""
    info = frame.check_rtn().info
    if len(info) != command.layout.size:
        raise DecodeError(f"{command.name} reply has {len(info)} bytes, expected {command.layout.size}")
    return command.layout.decode(info)


def encode_config(command: ConfigCommand, values: dict) -> bytes:
    """The INFO of ``command``'s reply carrying ``values`` (for the simulator and round-trip tests)."""
    return command.layout.encode(values)


DATETIME = Layout(*(Field(name, size=1) for name in ("year_2000", "month", "day", "hour", "minute", "second")))


def datetime_info(when: dt.datetime) -> bytes:
    """B2 request INFO (and a B1 reply's): year - 2000, month, day, hour, minute, second, one
    plain binary byte each (not BCD, whatever the SPEC's "decimal" says). Microseconds are dropped;
    a year outside 2000-2255 is a ValueError."""
    return DATETIME.encode({"year_2000": when.year - 2000, "month": when.month, "day": when.day,
                            "hour": when.hour, "minute": when.minute, "second": when.second})
