"""What a driver's viewer shows (the display, services/gui, and the terminal viewer, services/tui),
computed from the latest bus messages (pure; no display).

``ViewModel.update(message, at)`` takes each bus message with its arrival time (monotonic s);
``ViewModel.view(now)`` returns every text and number the screen shows, each with its level (what
it means: normal, good, charging, caution, warning, alarm, stale, inactive); a theme gives each
level its colour (services/gui/themes.py), so the view model never says what colour a thing is.
The viewers only draw that, so all display logic is tested here without a window.

Rules:
* Unknown is "--", never 0, and so is a number that cannot be true (not finite, a negative
  speed, voltage or cell voltage, a state of charge outside 0-100 %): such a value is never
  drawn as a figure or a bar. A value whose source is older than three of its periods is stale:
  greyed, with its age, never shown as if it were live. A source's period is the interval at
  which it has been arriving (at least 1 s).
* Several packs make one vehicle view: current and power add up, voltage is the mean (packs in
  parallel), SOC is remaining / full over all online packs, cell and temperature extremes are the
  worst of any pack (with its number).
* Alarms: faults (alarm) > protections (warning) > warnings (caution); the banner names them all
  and flashes for FLASH_S when one appears that was not there before; ``alarm`` is the worst in
  full and a count of the rest. A value the BMS flags as outside its limits (LIMIT_FLAGS) takes
  the level of the worst such flag.
* The trend keeps one sample a second for TREND_S; its x values are seconds before the newest
  sample (``trend_at``), so the plot only changes when a sample is added.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from dataclasses import dataclass, field

from common import fields
from common.fields import BY_KEY
from common.messages import GpsFix, Message, Pack

# What a viewer subscribes to.
TOPICS = ["bms.snapshot", "bms.link", "bms.config", "gps.fix", "gps.link", "uplink.status", "trip.state"]
STALE_PERIODS = 3.0
UPLINK_STALLED_S = 30.0  # connected, records queued, nothing acknowledged for this long: stalled
MIN_PERIOD_S = 1.0
FLASH_S = 3.0
TREND_S = 600.0
TREND_STEP_S = 1.0

# What a shown thing means; None in a Shown is "normal".
LEVELS = ("normal", "good", "charging", "caution", "warning", "alarm", "stale", "inactive")
SEVERITY_LEVELS = {"fault": "alarm", "protection": "warning", "warning": "caution"}
STATE_LEVELS = {"up": "good", "connecting": "caution", "down": "alarm"}
# The BMS's own alarm flags that say a value on the driver page is outside its limits (until the
# limits themselves are read from bms.config, these are what the BMS judged).
LIMIT_FLAGS = {
    "cell_max": ("cell_overvoltage", "cell_high_voltage"),
    "cell_min": ("cell_undervoltage", "cell_low_voltage"),
    "voltage": ("pack_overvoltage", "pack_undervoltage", "pack_high_voltage", "pack_low_voltage"),
    "current": ("charge_overcurrent", "discharge_overcurrent", "short_circuit", "charge_current", "discharge_current"),
    "temp_max": ("charge_overtemp", "discharge_overtemp", "charge_high_temp", "discharge_high_temp"),
    "temp_min": ("charge_undertemp", "discharge_undertemp", "charge_low_temp", "discharge_low_temp"),
}
SEVERITIES = ("fault", "protection", "warning")  # worst first
STALE_ALARMS = "BMS lost: alarms unknown"
NO_GPS = "NO GPS"
# fully_charged sits in a protection byte but is no alarm for a driver.
NOT_ALARMS = {"fully_charged"}


@dataclass(frozen=True)
class Shown:
    """One displayed value: its text, its level (None = normal; see LEVELS), stale or not, what it
    belongs to (``note``: the pack of an extreme, "P2") and how old it is when stale (``age``).
    A viewer with room shows ``full``; the display puts the note and the age on the label's line,
    so that a value keeps to its column."""

    text: str
    level: str | None = None
    stale: bool = False
    note: str = ""
    age: str = ""

    @property
    def extra(self) -> str:
        """The note and the age, as the display puts them on the label's line ("P2 (14s)")."""
        return " ".join([*([self.note] if self.note else []), *([f"({self.age})"] if self.age else [])])

    @property
    def full(self) -> str:
        return f"{self.text} {self.extra}".rstrip()


@dataclass(frozen=True)
class Health:
    name: str
    state: str
    age_text: str
    level: str


@dataclass(frozen=True)
class PackView:
    number: int
    online: bool
    cells_mv: list[int]
    balancing: list[int]
    temps: list[tuple[str, str]]
    lines: list[tuple[str, str]]
    summary: str
    settings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class View:
    speed: Shown
    soc: Shown
    soc_fraction: float | None
    power: Shown
    power_state: str
    voltage: Shown
    current: Shown
    cell_min: Shown
    cell_max: Shown
    cell_delta: Shown
    temp_min: Shown
    temp_max: Shown
    banner: Shown
    banner_flash: bool
    health: list[Health]
    queued: Shown
    packs: list[PackView] = field(default_factory=list)
    trend: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    trend_at: float = 0.0
    range: Shown = field(default_factory=lambda: Shown("--"))  # trip computer: range at the recent rate
    rate: Shown = field(default_factory=lambda: Shown("--"))  # and the recent Wh/km
    alarm: Shown = field(default_factory=lambda: Shown("--"))  # the worst alarm in full, "+N more"
    alarms: list[tuple[str, str]] = field(default_factory=list)  # (severity, what), worst first
    alarm_groups: list[tuple[str, str]] = field(default_factory=list)  # the same, one line per alarm


def _unit(key: str) -> str:
    return BY_KEY[key].unit


def known(value: float | None, low: float = -math.inf, high: float = math.inf) -> float | None:
    """``value`` if it is a finite number within [low, high], else None (shown as unknown)."""
    if value is None or not math.isfinite(value) or not low <= value <= high:
        return None
    return value


def soc_level(soc: float) -> str:
    return "alarm" if soc < 15 else "caution" if soc < 30 else "good"


def age_text(age: float) -> str:
    """Coarse on purpose: a healthy source reads "<2s" steadily instead of ticking every second."""
    if age < 2:
        return "<2s"
    return f"{age:.0f}s" if age < 120 else f"{age / 60:.0f}min" if age < 7200 else f"{age / 3600:.0f}h"


class _Source:
    """The latest message of one topic, its arrival time and its measured period."""

    def __init__(self) -> None:
        self.msg: Message | None = None
        self.at = 0.0
        self.period = MIN_PERIOD_S
        self._measured = False

    def take(self, msg: Message, at: float) -> None:
        if self.msg is not None and at > self.at:
            interval = at - self.at
            self.period = max(MIN_PERIOD_S, 0.5 * self.period + 0.5 * interval if self._measured else interval)
            self._measured = True
        self.msg, self.at = msg, at

    def age(self, now: float) -> float | None:
        return None if self.msg is None else max(0.0, now - self.at)

    def stale(self, now: float) -> bool:
        return self.msg is None or now - self.at > STALE_PERIODS * self.period


class ViewModel:
    def __init__(self) -> None:
        self.sources: dict[str, _Source] = collections.defaultdict(_Source)
        self._alarms: set[str] = set()
        self._flash_until = 0.0
        self._trend: dict[str, collections.deque] = {k: collections.deque() for k in ("speed", "power", "soc")}
        self._trend_at = -1e9
        self.bad_messages = 0
        self._waiting_since: float | None = None  # the uplink connected with records queued, since

    def update(self, msg: Message, at: float) -> None:
        self.sources[msg.topic].take(msg, at)
        if msg.topic == "uplink.status":
            waiting = msg.data.connected and msg.data.queued > 0
            self._waiting_since = (self._waiting_since or at) if waiting else None
        if msg.topic == "bms.snapshot":
            alarms = {f"{kind}:{name}" for p in msg.data.packs for kind, names in _alarm_lists(p) for name in names}
            if alarms - self._alarms:
                self._flash_until = at + FLASH_S
            self._alarms = alarms

    # -- the view ----------------------------------------------------------------------------------

    def view(self, now: float) -> View:
        bms, fix = self.sources["bms.snapshot"], self.sources["gps.fix"]
        packs = [p for p in bms.msg.data.packs] if bms.msg else []
        online = [p for p in packs if p.online and p.cells_mv]
        self._sample_trend(now, online, fix)
        return View(
            speed=self._speed(now),
            **_battery(packs, online, bms.stale(now), bms.age(now)),
            **self._alarms_view(packs, bms.stale(now), now),
            health=self._health(now),
            queued=self._queued(now),
            packs=[_with_settings(_pack_view(p), self.sources["bms.config"].msg) for p in packs],
            trend={k: ([t - self._trend_at for t, _ in series], [v for _, v in series])
                   for k, series in self._trend.items()},
            trend_at=self._trend_at,
            **self._trip(now),
        )

    def _alarms_view(self, packs: list[Pack], stale: bool, now: float) -> dict:
        alarms, groups = alarm_list(packs), grouped_alarms(packs)  # once a frame, for every use below
        instead = _no_alarm(packs, alarms, stale)
        return {"banner": instead or _banner(alarms), "alarm": instead or _worst(groups),
                "alarms": alarms, "alarm_groups": groups,
                "banner_flash": now < self._flash_until and int((now - self._flash_until) * 4) % 2 == 0}

    def _trip(self, now: float) -> dict[str, Shown]:
        """Range and the recent rate from trip.state, precision and unit from the field table."""
        src = self.sources["trip.state"]
        state = src.msg.data if src.msg else None
        out = {}
        for name, key in (("range", "range_km"), ("rate", "wh_per_km_recent")):
            f = BY_KEY[key]
            value = None if state is None else known(getattr(state, key))
            if value is None:
                out[name] = Shown("--", "stale" if src.stale(now) else None, src.stale(now))
            elif src.stale(now):
                out[name] = Shown(f"{value:.{f.decimals}f} {f.unit}", "stale", True, age=age_text(src.age(now)))
            else:
                out[name] = Shown(f"{value:.{f.decimals}f} {f.unit}")
        return out

    def _speed(self, now: float) -> Shown:
        fix = self.sources["gps.fix"]
        data: GpsFix | None = fix.msg.data if fix.msg else None
        speed = None if data is None or not data.valid else known(data.speed_km_h, 0.0)
        if speed is None:  # in words: two dashes in the biggest digits read as a number
            return Shown(NO_GPS, "stale" if fix.stale(now) else "inactive", fix.stale(now))
        text = f"{speed:.0f}"
        if fix.stale(now):
            return Shown(text, "stale", True, age=age_text(fix.age(now)))
        return Shown(text)

    def _health(self, now: float) -> list[Health]:
        """Each source's state and the time since it last had good data (a link message's
        ``last_ok_ts``, the uplink's last acknowledgement), not the age of the message saying so."""
        out = []
        for name, topic in (("BMS", "bms.link"), ("GPS", "gps.link"), ("Uplink", "uplink.status")):
            src = self.sources[topic]
            if src.msg is None:
                out.append(Health(name, "no data", "", "inactive"))
                continue
            data = src.msg.data
            good_ts = data.last_ack_ts if topic == "uplink.status" else data.last_ok_ts
            since = None if good_ts is None else max(0.0, src.msg.ts - good_ts) + max(0.0, now - src.at)
            if topic == "uplink.status":
                # Never acknowledged: judged by how long this viewer has seen records waiting.
                waited = since if since is not None or self._waiting_since is None else now - self._waiting_since
                state, level = _uplink_state(data, waited)
            else:
                state, level = data.state, STATE_LEVELS.get(data.state, "inactive")
            if src.stale(now):
                state, level = f"{state}?", "stale"
            out.append(Health(name, state, "never" if since is None else age_text(since), level))
        return out

    def _queued(self, now: float) -> Shown:
        src = self.sources["uplink.status"]
        if src.msg is None:
            return Shown("--", "inactive", True)
        text = f"{src.msg.data.queued} queued"
        return Shown(text, "stale", True) if src.stale(now) else Shown(text)

    def _sample_trend(self, now: float, online: list[Pack], fix: _Source) -> None:
        if now - self._trend_at < TREND_STEP_S:
            return
        self._trend_at = now
        bms_live = not self.sources["bms.snapshot"].stale(now)
        speed = known(fix.msg.data.speed_km_h, 0.0) if fix.msg and fix.msg.data.valid and not fix.stale(now) else None
        power = known(sum(p.power_w for p in online) / 1000) if bms_live and online and all(
            p.power_w is not None for p in online) else None
        soc = _total_soc(online) if bms_live else None
        for key, value in (("speed", speed), ("power", power), ("soc", soc)):
            series = self._trend[key]
            if value is not None:
                series.append((now, value))
            while series and now - series[0][0] > TREND_S:
                series.popleft()


def _alarm_lists(p: Pack) -> list[tuple[str, list[str]]]:
    return [("fault", p.faults or []), ("protection", [n for n in p.protections or [] if n not in NOT_ALARMS]),
            ("warning", p.warnings or [])]


def _no_alarm(packs: list[Pack], alarms: list[tuple[str, str]], stale: bool) -> Shown | None:
    """What the alarm area says when it cannot name an alarm, or None when it can."""
    if not packs:
        return Shown("no battery data", "inactive", True)
    if stale:  # the last alarms seen may have cleared or worsened since
        return Shown(STALE_ALARMS, "stale", True)
    if not alarms:
        return Shown("no alarms" if any(p.warnings is not None for p in packs) else "alarm state unknown")
    return None


def _banner(alarms: list[tuple[str, str]]) -> Shown:
    """Every alarm, by severity."""
    found: dict[str, list[str]] = {"fault": [], "protection": [], "warning": []}
    for kind, what in alarms:
        found[kind].append(what)
    severity = next(k for k in SEVERITIES if found[k])
    text = "  |  ".join(f"{k.upper()}: {', '.join(v)}" for k, v in found.items() if v)
    return Shown(text, SEVERITY_LEVELS[severity])


def _worst(groups: list[tuple[str, str]]) -> Shown:
    """The worst alarm in full and how many more there are; the packs that share it are one line."""
    kind, what = groups[0]
    more = f"  +{len(groups) - 1} more" if len(groups) > 1 else ""
    return Shown(f"{kind.upper()}: {what}{more}", SEVERITY_LEVELS[kind])


def _uplink_state(data, waited_s: float | None) -> tuple[str, str]:
    """Connected is not enough: a broker that has stopped acknowledging while records queue up
    is a fault of its own ("stalled"), not "connected" in green."""
    if not data.connected:
        return "offline", "alarm" if data.error else "caution"
    if data.queued > 0 and waited_s is not None and waited_s > UPLINK_STALLED_S:
        return "stalled", "warning"
    return "connected", "good"


@dataclass(frozen=True)
class Totals:
    """The online packs as one vehicle, computed once per view: current and power add up, voltage
    is the mean (packs in parallel), SOC is remaining / full, extremes are (value, pack)."""

    soc: float | None
    current_a: float | None
    power_w: float | None
    voltage_v: float | None
    cell_min: tuple[float | None, int | None]
    cell_max: tuple[float | None, int | None]
    temp_min: tuple[float | None, int | None]
    temp_max: tuple[float | None, int | None]

    @property
    def cell_delta(self) -> float | None:
        low, high = self.cell_min[0], self.cell_max[0]
        return None if low is None or high is None else high - low


def totals(online: list[Pack]) -> Totals:
    volts = [v for p in online if (v := known(p.voltage_v, 0.0)) is not None]
    every = online and all(p.current_a is not None for p in online)
    return Totals(
        soc=_total_soc(online),
        current_a=sum(p.current_a for p in online) if every else None,
        power_w=known(sum(p.power_w for p in online)) if online and all(p.power_w is not None for p in online) else None,
        voltage_v=sum(volts) / len(volts) if volts else None,
        cell_min=_extreme(online, lambda p: known(p.cell_min_mv, 0), min),
        cell_max=_extreme(online, lambda p: known(p.cell_max_mv, 0), max),
        # The cell sensors, as the field table's rows these are labelled from (the MOSFET and
        # environment sensors are on the detail page).
        temp_min=_extreme(online, BY_KEY["cell_min_temp"].get, min),
        temp_max=_extreme(online, BY_KEY["cell_max_temp"].get, max),
    )


def _battery(packs: list[Pack], online: list[Pack], stale: bool, age: float | None) -> dict:
    """The driver page's battery values, each with its level, its pack and its age."""
    t = totals(online)

    def shown(value: float | None, fmt: str, level=None, pack: int | None = None) -> Shown:
        value = known(value)
        if value is None:
            return Shown("--", "stale" if stale else None, stale)
        note = f"P{pack}" if len(packs) > 1 and pack else ""
        if stale:
            return Shown(fmt.format(value), "stale", True, note, age_text(age) if age is not None else "")
        return Shown(fmt.format(value), level, False, note)

    power_state = "unknown" if t.power_w is None or stale else \
        "charging" if t.power_w > 1 else "discharging" if t.power_w < -1 else "idle"
    limits = _limit_levels(online)
    return {
        "soc": shown(t.soc, "{:.0f} %", level=None if t.soc is None else soc_level(t.soc)),
        "soc_fraction": None if t.soc is None else round(max(0.0, min(1.0, t.soc / 100)), 3),
        "power": shown(None if t.power_w is None else t.power_w / 1000, "{:+.1f} kW",
                       level=limits.get("current", "charging" if power_state == "charging" else None)),
        "power_state": power_state,
        "voltage": shown(t.voltage_v, "{:.1f} " + _unit("v_pack"), level=limits.get("voltage")),
        "current": shown(t.current_a, "{:+.1f} " + _unit("i_pack"), level=limits.get("current")),
        "cell_min": shown(t.cell_min[0], "{:.0f} mV", level=limits.get("cell_min"), pack=t.cell_min[1]),
        "cell_max": shown(t.cell_max[0], "{:.0f} mV", level=limits.get("cell_max"), pack=t.cell_max[1]),
        "cell_delta": shown(t.cell_delta, "{:.0f} mV"),
        "temp_min": shown(t.temp_min[0], "{:.1f} °C", level=limits.get("temp_min"), pack=t.temp_min[1]),
        "temp_max": shown(t.temp_max[0], "{:.1f} °C", level=limits.get("temp_max"), pack=t.temp_max[1]),
    }


def _limit_levels(packs: list[Pack]) -> dict[str, str]:
    """The level of each driver-page value the BMS flags as outside its limits (the worst flag)."""
    levels = {}
    for value, flags in LIMIT_FLAGS.items():
        found = [kind for p in packs for kind, names in _alarm_lists(p) for n in names if n in flags]
        if found:
            levels[value] = SEVERITY_LEVELS[min(found, key=SEVERITIES.index)]
    return levels


def _total_soc(packs: list[Pack]) -> float | None:
    if not packs or any(p.remaining_ah is None or not p.full_ah for p in packs):
        return None
    full = sum(p.full_ah for p in packs)
    return known(100 * sum(p.remaining_ah for p in packs) / full, 0.0, 100.0) if known(full, 0.0) else None


def _extreme(packs: list[Pack], get, pick) -> tuple[float | None, int | None]:
    values = [(v, p.pack) for p in packs if (v := get(p)) is not None]
    if not values:
        return None, None
    best = pick(values, key=lambda item: item[0])
    return best


def alarm_list(packs: list[Pack]) -> list[tuple[str, str]]:
    """Every alarm of the packs as (severity, what), faults first, then protections, warnings."""
    found = []
    for p in packs:
        prefix = f"P{p.pack} " if len(packs) > 1 else ""
        for kind, names in _alarm_lists(p):
            found += [(kind, prefix + n.replace("_", " ")) for n in names]
    return sorted(found, key=lambda a: SEVERITIES.index(a[0]))


def pack_ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> "P1-3, P7"."""
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"P{r[0]}" if len(r) == 1 else f"P{r[0]}-{r[-1]}" for r in runs)


def grouped_alarms(packs: list[Pack]) -> list[tuple[str, str]]:
    """One line per alarm, worst first, with the packs that have it: ("fault", "ntc fault P1-16")."""
    where: dict[tuple[str, str], list[int]] = {}
    for p in packs:
        for kind, names in _alarm_lists(p):
            for name in names:
                where.setdefault((kind, name), []).append(p.pack)
    ordered = sorted(where.items(), key=lambda item: SEVERITIES.index(item[0][0]))
    return [(kind, name.replace("_", " ") + (f" {pack_ranges(numbers)}" if len(packs) > 1 else ""))
            for (kind, name), numbers in ordered]


def temp_labels(count: int) -> list[str]:
    """T1..Tn, with the SPEC's MOSFET and environment sensors named when there are six or more."""
    labels = [f"T{i}" for i in range(1, count + 1)]
    if count >= 6:
        labels[count - 2], labels[count - 1] = "MOS", "ENV"
    return labels


def _pack_view(p: Pack) -> PackView:
    def fmt(value, spec: str) -> str:
        return "--" if known(value) is None else spec.format(value)
    temps = list(zip(temp_labels(len(p.temps_c)), [fmt(t, "{:.1f} °C") for t in p.temps_c]))
    fets = "--" if p.charge_fet is None else \
        f"CHG {'on' if p.charge_fet else 'OFF'} / DSG {'on' if p.discharge_fet else 'OFF'}"
    lines = [("SOC", fmt(p.soc_pct, "{:.1f} %")), ("SOH", fmt(p.soh_pct, "{:.1f} %")),
             ("Voltage", fmt(p.voltage_v, "{:.2f} V")), ("Current", fmt(p.current_a, "{:+.2f} A")),
             ("Remaining", fmt(p.remaining_ah, "{:.2f} Ah")), ("Full", fmt(p.full_ah, "{:.2f} Ah")),
             ("Design", fmt(p.design_ah, "{:.2f} Ah")), ("Cycles", fmt(p.cycles, "{}")),
             ("Cell delta", fmt(p.cell_delta_mv, "{} mV")), ("FETs", fets),
             ("Balancing", "--" if p.balancing is None else (", ".join(map(str, p.balancing)) or "none"))]
    if not p.online:
        summary = f"P{p.pack} offline"
    else:
        summary = (f"P{p.pack} {fmt(p.soc_pct, '{:.0f}%')} {fmt(p.voltage_v, '{:.1f}V')} "
                   f"{fmt(p.current_a, '{:+.1f}A')} {fmt(max(p.temps_c) if p.temps_c else None, '{:.0f}°C')}")
    return PackView(p.pack, p.online, list(p.cells_mv), list(p.balancing or []), temps, lines, summary)


def setting_line(command: str, values: dict) -> str:
    """One settings command in a line: "Cell overvoltage: alarm 3600 mV, protect 3700 mV, ...",
    labels and units from the unit-carrying field names (common/fields.py)."""
    parts = []
    for name, value in values.items():
        label, unit, decimals = fields.setting_unit(name)
        label = label.lower().removeprefix(command.replace("_", " ")).strip() or label.lower()
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        number = f"{value:.{decimals}f}" if numeric and known(value) is not None else "--"
        parts.append(f"{label} {number} {unit}".rstrip())
    return f"{command.replace('_', ' ').capitalize()}: " + ", ".join(parts)


def settings_lines(config, number: int) -> list[str]:
    """The settings lines of pack ``number``: those its own address reported (per_address), else
    the master's, which speaks for the stack."""
    if config is None or not config.data.packs:
        return []
    own = {p.address: p for p in config.data.packs}
    pack = own.get(number) or config.data.packs[0]
    lines = [] if pack.address == number else [f"(from the BMS at address {pack.address})"]
    shown = fields.setting_values(pack.settings)
    for command in sorted(pack.settings):
        values = {k: v for k, v in pack.settings[command].items() if k in shown}
        if values:
            lines.append(setting_line(command, values))
    if "datetime" in pack.settings:
        lines.append(f"BMS clock: {pack.settings['datetime'].get('bms_clock', '--')}")
    if config.data.unsupported:
        lines.append("Not supported: " + ", ".join(config.data.unsupported))
    return lines


def _with_settings(view: PackView, config) -> PackView:
    return dataclasses.replace(view, settings=settings_lines(config, view.number))
