"""The VER 20 layout families next to PACE v2.5: EG4 (CID1 4A) and Seplos.

Older and rebranded packs answer the same frames (YD/T 1363 style) with their own INFO layouts.
Only layouts that real captures pin down are decoded here:

- ``20-eg4``: analog and status, from nkinnan/esphome-pace-bms @2ba4bc65 (vectors ``nk20-eg4-*``).
  Requests carry no INFO; the reply starts with 0x10; the temperature count says 4 and the MOSFET
  and environment sensors follow; voltage is in 10 mV (the cells of the capture add up to it); the
  BMS's own SOC and SOH, cell extremes and lifetime counters follow the cycle count, after a
  user-defined byte of 0x0F.
- ``20-seplos``: analog only (``nk20-seplos-42-resp-reconstructed``, agreeing with Seplos's V2.0
  document): after the remaining capacity a user-defined byte of 0x0A, then full capacity, SOC in
  0.1 %, design capacity, cycles, SOH in 0.1 %, port voltage and four reserved words. No capture of
  its status reply exists, so it is not asked: a Seplos pack's alarms are unknown.

Pylontech's layout is the v2.5 one with P = 2 and no design capacity, the same bytes as the Itel
VER 20 hybrid whose captures carry PACE's units; Pylontech's document gives other units (100 mA,
1 mAh) that no capture confirms. So such replies are read with PACE's units (family ``25``) and
``20-pylon`` is refused at start (common/config.py).

``identify`` names the family of an analog reply from its bytes alone, which is how
``protocol: auto`` settles on one from the first reply. The family's commands are in the one
command table (common/pace/commands.py) with their ``family``.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.pace.decode import (
    ANALOG_BLOCK,
    AnalogPack,
    CodedStatus,
    PackReply,
    StatusPack,
    decode_analog,
    flag_names,
)
from common.pace.errors import DecodeError, PaceError
from common.pace.frame import Frame
from common.pace.layout import Counted, Field, Layout

VER_20 = 0x20
CID1_EG4 = 0x4A
FAMILIES = ("25", "20-eg4", "20-seplos")  # the order protocol: auto tries them in
EG4_INFOFLAG = 0x10
EG4_ANALOG_MARK = 0x0F
EG4_STATUS_MARK = 0x09
SEPLOS_ANALOG_MARK = 0x0A

EG4_ANALOG = Layout(
    Field("infoflag", 1), Field("group", 1), Counted("cells_mv"), Counted("cell_temps_dk"),
    Field("mos_temp_dk"), Field("env_temp_dk"), Field("current_10ma", signed=True), Field("voltage_mv", scale=10),
    Field("remaining_10mah"), Field("full_10mah"), Field("cycles"), Field("user_count", 1), Field("bms_soc_pct"),
    Field("bms_soh_pct"), Field("cell_max_mv"), Field("cell_min_mv"), Field("cell_delta_mv"),
    Field("cell_temp_max_dk"), Field("cell_temp_min_dk"), Field("charged_10mah", 4), Field("discharged_10mah", 4),
    Field("charged_wh", 4), Field("discharged_wh", 4), Field("charging_h", 4), Field("discharging_h", 4),
    Field("charges"), Field("discharges"))

EG4_STATUS = Layout(
    Field("infoflag", 1), Field("group", 1), Counted("cell_codes", 1), Counted("cell_temp_codes", 1),
    Field("mos_temp_code", 1), Field("env_temp_code", 1), Field("current_code", 1), Field("total_voltage_code", 1),
    Field("user_count", 1), Field("balance_event", 1), Field("voltage_event", 1), Field("temperature_event", 2),
    Field("current_event", 1), Field("capacity_event", 1), Field("fet_state", 1), Field("system_state", 1),
    Field("balancing_bits", 4), Field("reserved", 1))

SEPLOS_ANALOG = Layout(
    Field("infoflag", 1), Field("group", 1), Counted("cells_mv"), Counted("temps_dk"),
    Field("current_10ma", signed=True), Field("voltage_mv", scale=10), Field("remaining_10mah"), Field("user_count", 1),
    Field("full_10mah"), Field("bms_soc_pct", scale=0.1), Field("design_10mah"), Field("cycles"),
    Field("bms_soh_pct", scale=0.1), Field("port_voltage_mv", scale=10), *(Field(f"reserved_{i}") for i in range(4)))

# EG4's event bytes (nkinnan's StatusDecode_EG4), in the v2.5 names where the meaning is the same.
_EG4_EVENTS = {
    "balance_event": (("balancing", "warning"), None, None, None, ("cell_delta", "warning"),
                      ("charge_mos_fault", "fault"), ("discharge_mos_fault", "fault"), None),
    "voltage_event": (("cell_high_voltage", "warning"), ("cell_overvoltage", "protection"),
                      ("cell_low_voltage", "warning"), ("cell_undervoltage", "protection"),
                      ("pack_high_voltage", "warning"), ("pack_overvoltage", "protection"),
                      ("pack_low_voltage", "warning"), ("pack_undervoltage", "protection")),
    "temperature_event": (("charge_high_temp", "warning"), ("charge_overtemp", "protection"),
                          ("charge_low_temp", "warning"), ("charge_undertemp", "protection"),
                          ("discharge_high_temp", "warning"), ("discharge_overtemp", "protection"),
                          ("discharge_low_temp", "warning"), ("discharge_undertemp", "protection"),
                          ("env_high_temp", "warning"), ("env_overtemp", "protection"),
                          ("env_low_temp", "warning"), ("env_undertemp", "protection"),
                          ("mos_overtemp", "protection"), ("fire_alarm", "fault"), None, None),
    "current_event": (("charge_current", "warning"), ("charge_overcurrent", "protection"),
                      ("discharge_current", "warning"), ("discharge_overcurrent", "protection"),
                      ("discharge_overcurrent_2", "protection"), ("short_circuit", "protection"),
                      ("discharge_overcurrent_2_lockout", "fault"), ("short_circuit_lockout", "fault")),
    "capacity_event": (("low_power", "warning"), None, None, None, None, None, None, None),
}
_EG4_FET = ("dfet_on", "cfet_on", "current_limit_on", "heater_on", None, None, None, None)
_EG4_SYSTEM = ("discharging", "charging", None, "standby", None, None, None, None)


@dataclass(frozen=True)
class Eg4Status(CodedStatus):
    """An EG4 status reply, with the same reading properties as StatusPack (pack_fields reads either)."""

    current_code: int
    total_voltage_code: int
    balance_event: int
    voltage_event: int
    temperature_event: int
    current_event: int
    capacity_event: int
    fet_state: int
    system_state: int
    balancing_bits: int

    def _events(self, severity: str) -> list[str]:
        out = []
        for byte, table in _EG4_EVENTS.items():
            value = getattr(self, byte)
            out += [entry[0] for bit, entry in enumerate(table)
                    if value >> bit & 1 and entry is not None and entry[1] == severity]
            out += [f"{byte}_bit{bit}" for bit in range(len(table)) if value >> bit & 1 and table[bit] is None
                    and severity == "warning"]
        return out

    @property
    def warnings(self) -> list[str]:
        return [w for w in self._events("warning") if w != "balancing"]

    @property
    def protections(self) -> list[str]:
        return self._events("protection")

    @property
    def faults(self) -> list[str]:
        return self._events("fault")

    @property
    def indicators(self) -> list[str]:
        return flag_names(self.fet_state, _EG4_FET) + flag_names(self.system_state, _EG4_SYSTEM)

    @property
    def charge_fet(self) -> bool:
        return bool(self.fet_state & 0x02)

    @property
    def discharge_fet(self) -> bool:
        return bool(self.fet_state & 0x01)

    @property
    def balancing(self) -> list[int]:
        return [bit + 1 for bit in range(32) if self.balancing_bits >> bit & 1]

    def _pack_codes(self) -> dict[str, int]:
        return {"current": self.current_code, "pack_voltage": self.total_voltage_code}

    @property
    def status_raw(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in (*_EG4_EVENTS, "fet_state", "system_state", "balancing_bits")}


def _decode(layout: Layout, frame: Frame, marks: dict[str, int], family: str) -> dict:
    """The layout's values, when the frame is VER 20 and every marker byte has its value: a v2.5
    reply can have the same length and a 0x0A or 0x0F in the same place, never VER 20 with them."""
    frame.check_rtn()
    if frame.ver != VER_20:
        raise DecodeError(f"VER {frame.ver:02X} is not 20: not the {family} layout")
    values = layout.decode(frame.info)
    for name, mark in marks.items():
        if values[name] != mark:
            raise DecodeError(f"{name} 0x{values[name]:02X} is not 0x{mark:02X}: not the {family} layout")
    return values


_EG4_VENDOR = ("cell_temp_max_dk", "cell_temp_min_dk", "charged_10mah", "discharged_10mah", "charged_wh",
               "discharged_wh", "charging_h", "discharging_h", "charges", "discharges")


def decode_eg4_analog(frame: Frame, *_) -> PackReply:
    v = _decode(EG4_ANALOG, frame, {"infoflag": EG4_INFOFLAG, "user_count": EG4_ANALOG_MARK}, "EG4 analog")
    pack = AnalogPack(
        cells_mv=v["cells_mv"], temps_dk=(*v["cell_temps_dk"], v["mos_temp_dk"], v["env_temp_dk"]),
        current_10ma=v["current_10ma"], voltage_mv=v["voltage_mv"], remaining_10mah=v["remaining_10mah"],
        user_count=v["user_count"], full_10mah=v["full_10mah"], cycles=v["cycles"], design_10mah=None,
        bms_soc_pct=float(v["bms_soc_pct"]), bms_soh_pct=float(v["bms_soh_pct"]),
        vendor=tuple((name, v[name]) for name in _EG4_VENDOR))
    return PackReply(v["infoflag"], v["group"], False, (pack,))


def encode_eg4_analog(reply: PackReply) -> bytes:
    """The EG4 INFO of a reply's one pack (for the simulator and round trips). The lifetime counters
    are not modelled: zeros."""
    p: AnalogPack = reply.packs[0]
    cell_temps, (mos, env) = p.temps_dk[:-2], p.temps_dk[-2:]
    return EG4_ANALOG.encode({
        "infoflag": EG4_INFOFLAG, "group": reply.count_byte, "cells_mv": p.cells_mv, "cell_temps_dk": cell_temps,
        "mos_temp_dk": mos, "env_temp_dk": env, "current_10ma": p.current_10ma,
        "voltage_mv": round(p.voltage_mv, -1), "remaining_10mah": p.remaining_10mah, "full_10mah": p.full_10mah or 0,
        "cycles": p.cycles or 0, "user_count": EG4_ANALOG_MARK, "bms_soc_pct": round(_soc(p)),
        "bms_soh_pct": round(_soh(p)), "cell_max_mv": p.cell_max_mv or 0,
        "cell_min_mv": p.cell_min_mv or 0, "cell_delta_mv": p.cell_delta_mv or 0,
        "cell_temp_max_dk": max(cell_temps), "cell_temp_min_dk": min(cell_temps),
        **dict.fromkeys(_EG4_VENDOR[2:], 0), **dict(p.vendor)})


def _soc(p: AnalogPack) -> float:
    return p.bms_soc_pct if p.bms_soc_pct is not None else p.soc_pct or 0


def _soh(p: AnalogPack) -> float:
    return p.bms_soh_pct if p.bms_soh_pct is not None else min(p.soh_pct or 100, 100)


def decode_eg4_status(frame: Frame, *_) -> PackReply:
    v = _decode(EG4_STATUS, frame, {"infoflag": EG4_INFOFLAG, "user_count": EG4_STATUS_MARK}, "EG4 status")
    status = Eg4Status(
        cell_codes=v["cell_codes"], temp_codes=(*v["cell_temp_codes"], v["mos_temp_code"], v["env_temp_code"]),
        **{name: v[name] for name in ("current_code", "total_voltage_code", "balance_event", "voltage_event",
                                      "temperature_event", "current_event", "capacity_event", "fet_state",
                                      "system_state", "balancing_bits")})
    return PackReply(v["infoflag"], v["group"], False, (status,))


def _event_bits(names: list[str], byte: str, severity: str) -> int:
    return sum(1 << bit for bit, entry in enumerate(_EG4_EVENTS[byte]) if entry and entry[1] == severity
               and entry[0] in names)


def eg4_status_of(s: StatusPack) -> Eg4Status:
    """The EG4 status a v2.5 status block would be (for the simulator): codes, events, FETs."""
    warn, protect = s.warnings, s.protections
    return Eg4Status(
        cell_codes=s.cell_codes, temp_codes=s.temp_codes,
        current_code=s.charge_current_code or s.discharge_current_code, total_voltage_code=s.total_voltage_code,
        **{byte: _event_bits(warn, byte, "warning") | _event_bits(protect, byte, "protection")
           for byte in ("voltage_event", "temperature_event", "current_event", "capacity_event")},
        balance_event=_event_bits(s.faults, "balance_event", "fault") | (1 if s.balancing else 0),
        fet_state=(s.discharge_fet and 0x01) | (s.charge_fet and 0x02), system_state=0,
        balancing_bits=sum(1 << (cell - 1) for cell in s.balancing))


def encode_eg4_status(reply: PackReply) -> bytes:
    s = reply.packs[0]
    s = s if isinstance(s, Eg4Status) else eg4_status_of(s)
    return EG4_STATUS.encode({
        **{name: getattr(s, name) for name in s.__dataclass_fields__}, "infoflag": EG4_INFOFLAG,
        "group": reply.count_byte, "cell_temp_codes": s.temp_codes[:-2], "mos_temp_code": s.temp_codes[-2],
        "env_temp_code": s.temp_codes[-1], "user_count": EG4_STATUS_MARK, "reserved": 0})


def decode_seplos_analog(frame: Frame, *_) -> PackReply:
    v = _decode(SEPLOS_ANALOG, frame, {"user_count": SEPLOS_ANALOG_MARK}, "Seplos analog")
    # Seplos sends the environment sensor before the MOSFET one; the contract has MOSFET first.
    temps = (*v["temps_dk"][:-2], v["temps_dk"][-1], v["temps_dk"][-2]) if len(v["temps_dk"]) >= 6 else v["temps_dk"]
    pack = AnalogPack(**{name: v[name] for name in ANALOG_BLOCK.names if name != "temps_dk"}, temps_dk=temps,
                      bms_soc_pct=v["bms_soc_pct"], bms_soh_pct=v["bms_soh_pct"],
                      vendor=(("port_voltage_mv", v["port_voltage_mv"]),))
    return PackReply(v["infoflag"], v["group"], False, (pack,))


def encode_seplos_analog(reply: PackReply) -> bytes:
    p: AnalogPack = reply.packs[0]
    t = p.temps_dk
    return SEPLOS_ANALOG.encode({
        **p.__dict__, "temps_dk": (*t[:-2], t[-1], t[-2]) if len(t) >= 6 else t, "infoflag": 0, "group": reply.count_byte, "voltage_mv": round(p.voltage_mv, -1),
        "user_count": SEPLOS_ANALOG_MARK, "full_10mah": p.full_10mah or 0, "cycles": p.cycles or 0,
        "design_10mah": p.design_10mah or 0, "bms_soc_pct": round(_soc(p), 1), "bms_soh_pct": round(_soh(p), 1),
        "port_voltage_mv": round(p.voltage_mv, -1), **{f"reserved_{i}": 0 for i in range(4)}, **dict(p.vendor)})


_IDENTIFY = (("20-eg4", decode_eg4_analog), ("20-seplos", decode_seplos_analog), ("25", decode_analog))


def identify(frame: Frame, pack: int | None = None, force_pack_offset: int = 0) -> str | None:
    """The family whose analog layout this reply has (the vendor layouts first: their VER and
    marks are checked, v2.5 takes nearly anything), decoded as the reader would (the request's
    pack byte, ``force_pack_offset``); None for an error reply or one that fits none."""
    if frame.rtn != 0:
        return None
    for family, decode in _IDENTIFY:
        try:
            decode(frame, pack, force_pack_offset)
        except PaceError:
            continue
        return family
    return None
