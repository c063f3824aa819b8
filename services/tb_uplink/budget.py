"""Data-point budget planner (pure: no I/O, no clock): which keys of a record go, and how often.

ThingsBoard Cloud counts one data point per key per record. Since 2026-01-20 the Free plan allows
15,000 data points an hour per device and 1,000,000 data points and 500,000 messages a month; one
16-cell pack with the full key set every 5 s is ~44,000 points/h, four packs ~156,000. Instead of
sending fewer, slower records, the planner keeps the fast-changing keys at the record interval and
sends the others less often:

* **Key groups** (:data:`GROUPS`, highest priority first): ``core`` (the driving trace: speed,
  position, pack current/voltage/power, SoC, cell min/max), ``status`` (alarms and FET states),
  ``temps``, ``cells`` and ``slow`` (counts, capacities, flags, GPS quality). Every key a record
  can hold has its group in :data:`GROUP_BY_KEY` (one row per key of common/fields.py, plus the
  record's own keys) and :data:`NUMBERED_GROUP` (``v_cell_<n>``, ``temp_<n>``); ``pack_<n>_``
  keys take the group of the pack-1 key. A key with no group is sent with core, so a forgotten
  key costs points but is never lost (and tests/tb_uplink/test_budget.py fails on it).
* **Cadence** (:func:`plan_cadence`): each group's period is the record interval times a step of
  :data:`LADDER` (1x to 720x: 5 s to 1 h at the default 5 s). Groups are placed in priority order,
  each at the finest step that keeps a worst-case hour within ``share`` of the plan's hourly limit
  while every later group still fits at its ``coarsest_period_s`` (so a big core cannot starve the
  alarms); if that cannot be done, the later groups are reserved at the coarsest step instead.
  Core goes every record whenever that fits; otherwise its period is stretched too, and
  :meth:`Cadence.describe` says so. No group is sent faster than its ``finest_period_s`` (a
  temperature every 5 s tells no more than one every 30 s), which leaves room for a backlog. Every
  step is a multiple of core's: the other groups ride on core's records, so a message is one
  record with core in it and ``messages_per_hour`` is core's rate. Steps divide 720, so at 5 s
  every period divides the hour and the forecast is exact. On-change sending was rejected: a
  flapping value (the heartbeat, balancing bits) would break the hourly guarantee.
* **Thinning** (:class:`Thinner`): a group goes with a record once its period has passed since it
  last went (within half an interval, so a record observed a little early does not push the group
  a whole interval late). Live records and a backlog keep separate state: the backlog is sent
  oldest first after newer live records, so its timestamps run behind the live ones.
* **Backlog** (:func:`backlog_cadence`): records queued during an outage only get what the live
  cadence leaves of the budget (:func:`spare_points_per_hour`), so they go coarser, core every
  30 to 60 s. Once sent, the full records stay in the outbox's ``kept`` table for
  ``thinned_keep_days`` (and, later, in the on-car recording): thinning decides what is sent,
  not what is kept.

Assumptions:

* ``share`` (default limits.MARGIN, 0.8) of every limit is planned; the rest is margin for
  timestamp jitter, records sent again after a lost PUBACK and attribute messages.
* The monthly budget is not forced into the hourly one: 1 M points a month is only ~1,369 points
  an hour around the clock, but a car does not drive 24/7. The plan never exceeds the hourly
  limit and reports how many hours of driving the monthly budget lasts and, at
  ``drive_hours_per_month`` (default 60 h, two hours a day), on which day of the month it runs
  out. ``fit_month=True`` plans within the month at that many hours instead.
* A month is 30.44 days (730.56 h). Monthly limits are the tenant's: cars sharing an account share
  them.
* Records come every ``interval_s``; a record with fewer keys (a pack offline, no GPS fix) costs
  less than forecast, never more.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from common import fields
from services.tb_uplink import limits

DAYS_PER_MONTH = 30.44
HOURS_PER_MONTH = DAYS_PER_MONTH * 24
DEFAULT_DRIVE_HOURS_PER_MONTH = 60.0
# Multiples of the record interval a group may be sent at. Each divides 720 (an hour of 5 s
# records), so every step is a multiple of any finer one that core may take.
LADDER: tuple[int, ...] = (1, 2, 3, 4, 6, 12, 24, 36, 60, 120, 180, 360, 720)
BACKLOG_FINEST_CORE_S = 30.0  # a backlog never takes core finer than this: the live trace comes first
BACKLOG_COARSEST_CORE_S = 60.0  # ...nor coarser: a point a minute of the outage's trace is the minimum
_EPS = 1e-9

CORE, STATUS, TEMPS, CELLS, SLOW = "core", "status", "temps", "cells", "slow"
Stream = Literal["live", "backlog"]
STREAMS: tuple[str, ...] = ("live", "backlog")


@dataclasses.dataclass(frozen=True)
class Group:
    name: str
    finest_period_s: float  # never sent faster: it would tell no more
    coarsest_period_s: float | None  # reserved at this before finer groups take the rest; None: core


GROUPS: tuple[Group, ...] = (
    Group(CORE, 0.0, None),
    Group(STATUS, 0.0, 60.0),
    Group(TEMPS, 30.0, 300.0),
    Group(CELLS, 30.0, 600.0),
    Group(SLOW, 300.0, 3600.0),
)
GROUP_NAMES: tuple[str, ...] = tuple(g.name for g in GROUPS)

# The group of every key a record can contain (common/fields.py, plus the keys records.py adds).
GROUP_BY_KEY: dict[str, str] = {
    # core: what a live dashboard follows while driving
    "speed_km_h": CORE, "latitude": CORE, "longitude": CORE, "alive": CORE,
    "i_pack": CORE, "v_pack": CORE, "p_pack": CORE, "soc": CORE,
    "cell_max_volt": CORE, "cell_min_volt": CORE,  # sag under load; the cells in between can wait
    # status: alarms and switch states; they change rarely but matter within seconds
    "warning_string": STATUS, "protections": STATUS, "faults": STATUS, "warnings": STATUS,
    "charge_fet": STATUS, "discharge_fet": STATUS,
    "cell_max_diff_volt": STATUS,  # max - min, both in core
    # temps: temperatures move over minutes
    "cell_max_temp": TEMPS, "cell_min_temp": TEMPS,
    # slow: counts, capacities, health, flags, GPS quality
    "total_cells": SLOW, "total_temps": SLOW, "cycles": SLOW, "soh": SLOW,
    "i_remaining_capacity": SLOW,  # soc (core) says the same
    "i_full_capacity": SLOW, "i_design_capacity": SLOW,
    "current_limit": SLOW, "pack_indicate": SLOW, "reverse": SLOW, "ac_in": SLOW, "heart": SLOW,
    "balancing_1": SLOW, "balancing_2": SLOW, "pack_online": SLOW,
    "gps_alt_m": SLOW, "gps_sats": SLOW,
    "gps_course_deg": SLOW,  # follows from successive positions
    "analog_data_packs": SLOW, "warning_info_packs": SLOW,
    # the trip computer: what the pit follows over a stint, at the alarms' pace
    "trip_distance_km": STATUS, "trip_energy_wh": STATUS, "wh_per_km_recent": STATUS, "range_km": STATUS,
    "trip_energy_in_wh": SLOW, "wh_per_km": SLOW, "laps": STATUS, "last_lap_s": STATUS, "best_lap_s": SLOW,
}
NUMBERED_GROUP: dict[str, str] = {fields.CELL_VOLT.key: CELLS, fields.TEMP.key: TEMPS}

_NUMBERED = re.compile(r"(?P<base>.+)_\d+")
_PACK_PREFIXED = re.compile(r"pack_\d+_(?P<key>.+)")
_PACK_KEYS = frozenset(f.key for f in fields.PACK_FIELDS)


def group_of(key: str) -> str | None:
    """The group of a record key (``pack_<n>_`` and zero-padded numbers included), None if it has none."""
    if key in GROUP_BY_KEY:  # first: pack_online and pack_indicate look prefixed
        return GROUP_BY_KEY[key]
    numbered = _NUMBERED.fullmatch(key)
    if numbered and numbered["base"] in NUMBERED_GROUP:
        return NUMBERED_GROUP[numbered["base"]]
    prefixed = _PACK_PREFIXED.fullmatch(key)
    if prefixed:
        inner = prefixed["key"]
        pack_key = inner in _PACK_KEYS or (_NUMBERED.fullmatch(inner) is not None)
        return group_of(inner) if pack_key else None
    return None


def count_points(values: Mapping[str, Any]) -> dict[str, int]:
    """Data points of a record per group (every group, 0 when absent); keys with no group count as core."""
    counts = dict.fromkeys(GROUP_NAMES, 0)
    for key in values:
        counts[group_of(key) or CORE] += 1
    return counts


@dataclasses.dataclass(frozen=True)
class Plan:
    """A plan's limits; None: no such limit. Hourly limits are per device, monthly per tenant."""

    points_per_hour: int | None
    points_per_month: int | None
    messages_per_month: int | None
    name: str = "custom"
    messages_per_hour: int | None = None

    def __post_init__(self):
        for name in ("points_per_hour", "points_per_month", "messages_per_month", "messages_per_hour"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"plan {self.name}: {name} must be positive or None, not {value!r}")


def _hourly(spec: Mapping[str, str], kinds: Sequence[str]) -> int | None:
    """The tightest of the given limits, as a count per hour (a "100:1" window allows 360,000/h)."""
    rates = [count * 3600 / seconds for kind in kinds if spec.get(kind) for count, seconds in limits.parse(spec[kind])]
    return math.floor(min(rates)) if rates else None


def plan_from_limits(spec: Mapping[str, str] | None, points_per_month: int | None = None,
                     messages_per_month: int | None = None, name: str = "custom") -> Plan:
    """A plan from rate limits as limits.py takes them (a preset or a getSessionLimits reply)."""
    spec = spec or {}
    return Plan(_hourly(spec, ("telemetryDataPoints",)), points_per_month, messages_per_month, name,
                _hourly(spec, ("messages", "telemetryMessages")))


# Monthly figures: thingsboard.io/docs/paas/subscriptions, the tiers introduced 2026-01-20 (read
# through its mirror ithingsboard.com/docs/paas/subscriptions: transport data points 1M / 10M /
# 100M / 500M / 1B and transport messages 0.5M / 5M / 50M / 250M / 500M a month for Free / Prototype
# / Pilot / Startup / Business; the plans at $0 / $49 / $149 / $399 / $749 on
# thingsboard.io/docs/paas/eu/user-guide/billing-info/subscription/). Hourly, per device: Free's
# are limits.PRESETS["cloud"]. ASSUMED for the paid plans: no ThingsBoard page found gives their
# per-device rate limits; a third-party page (kwb-r.github.io/wasserportal, tb_plan_defaults, citing
# thingsboard.io/docs/paas/eu/subscriptions/) reports the same 2,000/min and 15,000/h data points
# for every paid tier. Taken as Free's until getSessionLimits reports the real ones (None would
# mean unlimited).
_CLOUD_RATES = limits.PRESETS["cloud"]
PLANS: dict[str, Plan] = {
    "ce": Plan(None, None, None, "ce"),
    "cloud": plan_from_limits(_CLOUD_RATES, 1_000_000, 500_000, "cloud"),
    "prototype": plan_from_limits(_CLOUD_RATES, 10_000_000, 5_000_000, "prototype"),
    "pilot": plan_from_limits(_CLOUD_RATES, 100_000_000, 50_000_000, "pilot"),
    "startup": plan_from_limits(_CLOUD_RATES, 500_000_000, 250_000_000, "startup"),
    "business": plan_from_limits(_CLOUD_RATES, 1_000_000_000, 500_000_000, "business"),
}


def per_hour(count: int, period_s: float) -> int:
    """Points sent in the worst hour when ``count`` points go every ``period_s`` (a half-open hour
    holds at most ceil(3600 / period_s) sends)."""
    return count * math.ceil(3600 / period_s - _EPS)


@dataclasses.dataclass(frozen=True)
class Cadence:
    """How often each group goes, and what that costs. Build with :func:`plan_cadence`."""

    plan: Plan
    stream: str
    interval_s: float
    share: float
    period_s: dict[str, float]  # per group, a multiple of interval_s
    points_per_record: dict[str, int]  # per group, of one full record
    forecast_points_per_hour: int  # the worst hour of records every interval_s
    messages_per_hour: int
    budget_points_per_hour: float | None  # share of the plan's limit (the spare, for a backlog); None: unlimited
    budget_messages_per_hour: float | None
    within_budget: bool  # False: even the coarsest cadence is over the budget
    unlimited: bool  # no limit at all: nothing is thinned
    drive_hours_per_month: float
    monthly_budget_lasts_h: float | None  # hours of driving the monthly budget covers; None: no monthly limit
    days_until_exhausted: float | None  # at drive_hours_per_month; None: no monthly limit
    drain_h_per_outage_h: float | None = None  # backlog only: driving hours one outage hour takes to send
    fit_month: bool = False

    @property
    def core_stretched(self) -> bool:
        return self.period_s[CORE] > self.interval_s + _EPS

    def describe(self) -> str:
        """One line for the log and the status."""
        name = self.plan.name if self.stream == "live" else f"{self.plan.name} {self.stream}"
        if self.unlimited:
            return (f"{name}: every group every {_period(self.interval_s)} (unlimited): "
                    f"{self.forecast_points_per_hour:,} points/h, {self.messages_per_hour:,} messages/h")
        periods = [f"{g} {_period(self.period_s[g])}" for g in GROUP_NAMES[1:]]
        line = f"{name}: {CORE} every {_period(self.period_s[CORE])}{self._stretch_note()}, {', '.join(periods)}"
        line += ": " + self._cost()
        return line + "; " + (self._backlog_note() if self.stream == "backlog" else self._month_note())

    def _stretch_note(self) -> str:
        if not self.core_stretched or self.stream == "backlog":  # a backlog is coarser by design
            return ""
        every_record = per_hour(self.points_per_record[CORE], self.interval_s)
        return f" (stretched: core every record would be {every_record:,} points/h alone)"

    def _cost(self) -> str:
        unit = "points per hour of outage" if self.stream == "backlog" else "points/h"
        text = f"{self.forecast_points_per_hour:,} {unit}"
        if self.stream == "live" and self.plan.points_per_hour is not None:
            text += f" of {self.plan.points_per_hour:,} (budget {_count(self.budget_points_per_hour)})"
        elif self.stream == "live":
            text += f" (budget {_count(self.budget_points_per_hour)})"
        if not self.within_budget and self.stream == "live":
            text += " OVER BUDGET even at the coarsest cadence"
        return text + f", {self.messages_per_hour:,} messages/h"

    def _month_note(self) -> str:
        if self.monthly_budget_lasts_h is None:
            return "no monthly limit"
        months = [f"{_millions(n)} {what}" for n, what in ((self.plan.points_per_month, "points"),
                                                            (self.plan.messages_per_month, "messages")) if n]
        return (f"{' and '.join(months)}/month last {self.monthly_budget_lasts_h:,.0f} h of driving "
                f"({self.days_until_exhausted:,.0f} days at {self.drive_hours_per_month:g} h/month)")

    def _backlog_note(self) -> str:
        if self.budget_points_per_hour is None:
            drain = "spare points/h unknown: it drains only when the live stream leaves room"
        elif self.drain_h_per_outage_h is None:
            drain = "no spare points/h: it drains only when the live stream leaves room"
        else:
            drain = (f"{_count(self.budget_points_per_hour)} spare points/h: an hour of outage takes "
                     f"{self.drain_h_per_outage_h:,.1f} h to send")
        if not self.within_budget:
            drain += " at the minimum cadence"
        left = ", ".join(f"{g} {m - 1}/{m}" for g in GROUP_NAMES
                         if (m := round(self.period_s[g] / self.interval_s)) > 1)
        return (f"{drain}; left out of the records: {left or 'nothing'} "
                f"(the full records stay in the outbox for thinned_keep_days)")


def _period(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 < _EPS:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 < _EPS:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _count(n: float | None) -> str:
    return "unlimited" if n is None else f"{n:,.0f}"


def _millions(n: int) -> str:
    return f"{n / 1e6:,g} M"


def spare_points_per_hour(cadence: Cadence, share: float | None = None) -> float | None:
    """What the cadence leaves for a backlog of ``share`` of the plan's hourly limit (the rate
    limiter's share, when the live cadence was planned within a smaller one), or of the cadence's
    own budget; None when unlimited."""
    if cadence.budget_points_per_hour is None:
        return None
    hourly = cadence.plan.points_per_hour
    budget = cadence.budget_points_per_hour if share is None or hourly is None else hourly * share
    return max(0.0, budget - cadence.forecast_points_per_hour)


def _candidates(interval_s: float, floor_s: float, core_m: int) -> list[int]:
    """Steps at least floor_s long that ride on core's records; the coarsest step if none is that long."""
    steps = [m for m in LADDER if m % core_m == 0 and m * interval_s >= floor_s - _EPS]
    return steps or [LADDER[-1]]


def _reserved(group: Group, coarsest: bool, interval_s: float, floor_s: float, core_m: int) -> int:
    """The step a later group is held at while finer groups are placed."""
    steps = _candidates(interval_s, floor_s, core_m)
    if coarsest or group.coarsest_period_s is None:
        return steps[-1]
    return next((m for m in steps if m * interval_s >= group.coarsest_period_s - _EPS), steps[-1])


def _fill(counts: Mapping[str, int], interval_s: float, budget: float, floors_s: Mapping[str, float],
          core_m: int, coarsest: bool) -> dict[str, int] | None:
    """Steps per group with core at core_m, each group the finest that leaves the later ones their
    reservation; None when core at core_m does not fit with them."""
    def rate(name: str, m: int) -> int:
        return per_hour(counts[name], m * interval_s)

    reserved = {g.name: _reserved(g, coarsest, interval_s, floors_s[g.name], core_m) for g in GROUPS[1:]}
    used = rate(CORE, core_m)
    if used + sum(rate(name, m) for name, m in reserved.items()) > budget + _EPS:
        return None
    steps = {CORE: core_m}
    previous = core_m
    for i, group in enumerate(GROUPS[1:], start=1):
        later = sum(rate(g.name, reserved[g.name]) for g in GROUPS[i + 1:])
        options = [m for m in _candidates(interval_s, floors_s[group.name], core_m) if m >= previous]
        # The reservation (or a coarser step) always fits, so the default is never below it.
        step = next((m for m in options if used + rate(group.name, m) + later <= budget + _EPS), options[-1])
        steps[group.name] = previous = step
        used += rate(group.name, step)
    return steps


def _fit(counts: Mapping[str, int], interval_s: float, budget: float, floors_s: Mapping[str, float],
         core_steps: Sequence[int]) -> dict[str, int] | None:
    """The finest fitting steps: later groups reserved at their coarsest wanted period, else at the
    coarsest step; None when nothing fits."""
    for coarsest in (False, True):
        for core_m in core_steps:
            steps = _fill(counts, interval_s, budget, floors_s, core_m, coarsest)
            if steps is not None:
                return steps
    return None


def _check(keys_per_group: Mapping[str, int], interval_s: float, share: float, drive_hours_per_month: float) -> None:
    unknown = set(keys_per_group) - set(GROUP_NAMES)
    if unknown:
        raise ValueError(f"unknown key groups {sorted(unknown)}; groups are {', '.join(GROUP_NAMES)}")
    if any(n < 0 for n in keys_per_group.values()):
        raise ValueError(f"negative point counts in {dict(keys_per_group)}")
    if not interval_s > 0:
        raise ValueError(f"interval_s must be positive, not {interval_s!r}")
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], not {share!r}")
    if not 0 < drive_hours_per_month <= HOURS_PER_MONTH:
        raise ValueError(f"drive_hours_per_month must be in (0, {HOURS_PER_MONTH:g}], not {drive_hours_per_month!r}")


def _budgets(plan: Plan, share: float, drive_hours_per_month: float, fit_month: bool) -> tuple[float | None, float | None]:
    """(points, messages) per hour to plan within; None: unlimited."""
    def tightest(hourly: int | None, monthly: int | None) -> float | None:
        limits_h = [share * hourly] if hourly is not None else []
        if fit_month and monthly is not None:
            limits_h.append(share * monthly / drive_hours_per_month)
        return min(limits_h) if limits_h else None

    return (tightest(plan.points_per_hour, plan.points_per_month),
            tightest(plan.messages_per_hour, plan.messages_per_month))


def _lasts_h(plan: Plan, points_per_hour: int, messages_per_hour: int) -> float | None:
    """Hours of driving until the first monthly limit runs out; None when there is none."""
    hours = [monthly / hourly for monthly, hourly in ((plan.points_per_month, points_per_hour),
                                                       (plan.messages_per_month, messages_per_hour))
             if monthly is not None and hourly > 0]
    return min(hours, default=None)


def _make(plan: Plan, counts: Mapping[str, int], interval_s: float, share: float, steps: Mapping[str, int],
          budgets: tuple[float | None, float | None], drive_hours_per_month: float, within: bool,
          unlimited: bool, stream: str = "live", fit_month: bool = False) -> Cadence:
    period_s = {g: steps[g] * interval_s for g in GROUP_NAMES}
    points = sum(per_hour(counts[g], period_s[g]) for g in GROUP_NAMES)
    messages = per_hour(1, period_s[CORE])
    lasts_h = _lasts_h(plan, points, messages)
    days = None if lasts_h is None else lasts_h / (drive_hours_per_month / DAYS_PER_MONTH)
    return Cadence(plan, stream, interval_s, share, period_s, dict(counts), points, messages, budgets[0], budgets[1],
                   within, unlimited, drive_hours_per_month, lasts_h, days, fit_month=fit_month)


def _full_counts(keys_per_group: Mapping[str, int]) -> dict[str, int]:
    return {g: int(keys_per_group.get(g, 0)) for g in GROUP_NAMES}


def _core_steps(interval_s: float, messages_budget: float | None, finest_s: float = 0.0,
                coarsest_s: float | None = None) -> list[int]:
    """Core's steps, finest first, within the message budget and the given period range."""
    steps = [m for m in LADDER if m * interval_s >= finest_s - _EPS
             and (coarsest_s is None or m * interval_s <= coarsest_s + _EPS)]
    steps = steps or [_candidates(interval_s, finest_s, 1)[0]]
    if messages_budget is None:
        return steps
    return [m for m in steps if per_hour(1, m * interval_s) <= messages_budget + _EPS]


def plan_cadence(plan: Plan, keys_per_group: Mapping[str, int], interval_s: float, share: float = limits.MARGIN,
                 drive_hours_per_month: float = DEFAULT_DRIVE_HOURS_PER_MONTH, fit_month: bool = False) -> Cadence:
    """The cadence of live records every ``interval_s`` whose groups hold ``keys_per_group`` points
    (:func:`count_points` of a full record) within ``share`` of ``plan`` (see the module doc)."""
    _check(keys_per_group, interval_s, share, drive_hours_per_month)
    counts = _full_counts(keys_per_group)
    budgets = _budgets(plan, share, drive_hours_per_month, fit_month)
    if budgets == (None, None):
        return _make(plan, counts, interval_s, share, dict.fromkeys(GROUP_NAMES, 1), budgets, drive_hours_per_month,
                     True, True, fit_month=fit_month)
    points_budget = math.inf if budgets[0] is None else budgets[0]
    floors_s = {g.name: g.finest_period_s for g in GROUPS}
    steps = _fit(counts, interval_s, points_budget, floors_s, _core_steps(interval_s, budgets[1]))
    within = steps is not None
    steps = steps or dict.fromkeys(GROUP_NAMES, LADDER[-1])
    return _make(plan, counts, interval_s, share, steps, budgets, drive_hours_per_month, within, False,
                 fit_month=fit_month)


def backlog_cadence(cadence: Cadence, spare_points_per_hour: float | None) -> Cadence:
    """A coarser cadence for backlog records, within what the live ``cadence`` leaves
    (:func:`spare_points_per_hour`): core every 30 to 60 s, each group no finer than live. When
    even core every 60 s with the rest hourly needs more than the spare, that minimum is used
    and the backlog takes longer than the outage to send (``drain_h_per_outage_h``)."""
    if cadence.unlimited:
        return _with_stream(cadence, "backlog", None)
    interval_s, counts = cadence.interval_s, cadence.points_per_record
    finest_s = max(cadence.period_s[CORE], BACKLOG_FINEST_CORE_S)
    core_steps = _core_steps(interval_s, None, finest_s, max(finest_s, BACKLOG_COARSEST_CORE_S))
    floors_s = {g.name: max(g.finest_period_s, cadence.period_s[g.name]) for g in GROUPS}
    # An unknown spare is planned as none: the backlog then goes at the minimum.
    spare = spare_points_per_hour
    steps = _fit(counts, interval_s, spare, floors_s, core_steps) if spare is not None and spare > 0 else None
    within = steps is not None
    if steps is None:
        steps = {CORE: core_steps[-1]} | {g.name: LADDER[-1] for g in GROUPS[1:]}
    made = _make(cadence.plan, counts, interval_s, cadence.share, steps, (spare, None),
                 cadence.drive_hours_per_month, within, False, "backlog", cadence.fit_month)
    drain = made.forecast_points_per_hour / spare if spare is not None and spare > 0 else None
    return _with_stream(made, "backlog", drain)


def _with_stream(cadence: Cadence, stream: str, drain: float | None) -> Cadence:
    return dataclasses.replace(cadence, stream=stream, drain_h_per_outage_h=drain)


@dataclasses.dataclass
class Thinner:
    """The values of each record to send under a cadence (see the module doc). State is kept per
    stream: ``live`` (the newest record) and ``backlog`` (sent oldest first, behind the live ones);
    the backlog uses ``backlog`` (:func:`backlog_cadence`) when given, else ``cadence``."""

    cadence: Cadence
    backlog: Cadence | None = None
    _last_ms: dict[str, dict[str, float]] = dataclasses.field(default_factory=lambda: {s: {} for s in STREAMS}, repr=False)
    _groups: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    _decided: dict[str, tuple[float, frozenset[str]]] = dataclasses.field(default_factory=dict, repr=False)

    def thin(self, ts_ms: float, values: Mapping[str, Any], stream: Stream = "live",
             commit: bool = True) -> dict[str, Any]:
        """The values to send of a record stamped ``ts_ms``; {} when nothing is due (send nothing)."""
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {STREAMS}, not {stream!r}")
        cadence = self.backlog if stream == "backlog" and self.backlog is not None else self.cadence
        if cadence.unlimited:
            return dict(values)
        # Another part of the same record (split to fit a message) carries the same groups, whichever
        # stream it goes in: its first part decided them.
        decided = [d for d in self._decided.values() if d[0] == ts_ms]
        if decided:
            due = decided[0][1]
        else:
            # ``commit`` False: only a look (the message may not go yet); nothing is marked sent.
            due = self._decide(cadence, ts_ms, self._last_ms[stream] if commit else dict(self._last_ms[stream]))
            if commit:
                self._decided[stream] = (ts_ms, due)
        return {k: v for k, v in values.items() if self._group(k) in due}

    def _decide(self, cadence: Cadence, ts_ms: float, last: dict[str, float]) -> frozenset[str]:
        if not self._due(cadence, CORE, ts_ms, last):
            return frozenset()
        due = frozenset(g for g in GROUP_NAMES if self._due(cadence, g, ts_ms, last))
        for group in due:
            last[group] = ts_ms
        return due

    @staticmethod
    def _due(cadence: Cadence, group: str, ts_ms: float, last: Mapping[str, float]) -> bool:
        period_s = cadence.period_s[group]
        previous = last.get(group)
        if previous is None or ts_ms < previous or period_s <= cadence.interval_s + _EPS:
            return True  # the first record, a clock stepped back (start over, never stall), every record
        return ts_ms - previous >= (period_s - cadence.interval_s / 2) * 1000

    def _group(self, key: str) -> str:
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = group_of(key) or CORE
        return group


def with_periods(cadence: Cadence, periods_s: Mapping[str, float | None]) -> Cadence:
    """The cadence with some groups' periods chosen by the user (remote settings ``cadence_<group>_s``;
    None leaves the planner's choice, 0 means every record). A period is rounded up to whole record
    intervals and is never finer than core's, on which the others ride. The figures are worked out
    again; ``within_budget`` says whether the choice still fits. A choice thins even on an
    unlimited plan: a user may want fewer points on a server of their own."""
    chosen = {g: p for g, p in periods_s.items() if p is not None and g in GROUP_NAMES}
    if not chosen:
        return cadence
    interval_s = cadence.interval_s
    period = dict(cadence.period_s)
    for group, seconds in chosen.items():
        period[group] = max(1, math.ceil(seconds / interval_s - _EPS)) * interval_s
    period = {g: p if g == CORE else max(p, period[CORE]) for g, p in period.items()}
    points = sum(per_hour(cadence.points_per_record[g], period[g]) for g in GROUP_NAMES)
    messages = per_hour(1, period[CORE])
    budget = cadence.budget_points_per_hour
    lasts_h = _lasts_h(cadence.plan, points, messages)
    days = None if lasts_h is None else lasts_h / (cadence.drive_hours_per_month / DAYS_PER_MONTH)
    return dataclasses.replace(cadence, period_s=period, forecast_points_per_hour=points, messages_per_hour=messages,
                               within_budget=budget is None or points <= budget + _EPS, unlimited=False,
                               monthly_budget_lasts_h=lasts_h, days_until_exhausted=days)
