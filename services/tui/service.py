"""tui: the driver's values in a terminal, for an ssh session, a text console or a car without a screen.

It subscribes to what the display does and keeps the same view model (common/viewmodel.py), so
it shows the same values, units, alarms and staleness: speed, SOC, power, range and rate, the
lowest and highest cell and temperature with their pack, the worst alarm and how many more, and
the health of each source. A stale value is dimmed and carries its age ("48 % (12s)"), as on the
display. On a terminal it holds one screen, redrawn once a second; when its output is not a
terminal (a log, a pipe) it prints that screen as plain text every ``--every`` seconds.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console, Group
from rich.style import Style
from rich.table import Table
from rich.text import Text

from common.fields import BY_KEY
from common.service import Service
from common.viewmodel import TOPICS, Health, Shown, View, ViewModel

EVERY_S = 1.0


def add_arguments(parser) -> None:
    parser.add_argument("--every", type=float, default=EVERY_S, metavar="S", help="redraw every S seconds (default 1)")
    parser.add_argument("--once", action="store_true", help="draw one screen after --every seconds, then exit")


# The terminal's own palette for each level of the view model (its user chose it for their screen).
LEVEL_COLOURS = {"normal": None, "good": "green", "charging": "cyan", "caution": "yellow", "warning": "dark_orange",
                 "alarm": "red", "stale": "grey50", "inactive": "grey50"}


def _style(shown: Shown | Health) -> Style:
    dim = shown.level in ("stale", "inactive")
    return Style(color=LEVEL_COLOURS[shown.level or "normal"], dim=dim, bold=not dim)


def _value(shown: Shown) -> Text:
    return Text(shown.full, style=_style(shown))


def _label(key: str) -> Text:
    return Text(BY_KEY[key].label.upper(), style="bold")


def screen(view: View, clock: str) -> Group:
    """One screen of the driver's values (what is drawn each second)."""
    speed = view.speed.full if not view.speed.text.isdigit() else \
        f"{view.speed.text} {BY_KEY['speed_km_h'].unit} {view.speed.extra}".rstrip()
    grid = Table.grid(padding=(0, 2))
    for _ in range(4):
        grid.add_column()
    grid.add_row(_label("speed_km_h"), Text(speed, style=_style(view.speed)),
                 _label("soc"), _value(view.soc))
    grid.add_row(_label("p_pack"), Text(f"{view.power.full}  {view.power_state}", style=_style(view.power)),
                 _label("v_pack"), _value(view.voltage))
    grid.add_row(_label("range_km"), _value(view.range), _label("wh_per_km_recent"), _value(view.rate))
    grid.add_row(_label("cell_min_volt"), _value(view.cell_min), _label("cell_max_volt"), _value(view.cell_max))
    grid.add_row(_label("cell_min_temp"), _value(view.temp_min), _label("cell_max_temp"), _value(view.temp_max))
    alarm = Text.assemble(Text("ALARM  ", style="bold"), _value(view.alarm))
    health = Text("  ").join(
        Text.assemble(f"{h.name} ", Text(h.state, style=_style(h)), f" {h.age_text}".rstrip()) for h in view.health)
    health.append("  ")
    health.append_text(_value(view.queued))
    return Group(Text(f"PACE telemetry  {clock}", style="bold"), grid, alarm, health)


def main(svc: Service) -> None:
    args = svc.args
    sub = svc.subscriber(TOPICS)
    model = ViewModel()
    console = Console(highlight=False)
    live = console.is_terminal and not args.once
    if live:
        console.set_alt_screen(True)
        console.show_cursor(False)
    try:
        _loop(svc, sub, model, console, live)
    finally:
        if live:
            console.show_cursor(True)
            console.set_alt_screen(False)


def _loop(svc: Service, sub, model: ViewModel, console: Console, live: bool) -> None:
    args = svc.args
    next_draw = time.monotonic() + args.every
    while not svc.stopping:
        msg = sub.recv(max(0.0, next_draw - time.monotonic()))
        if msg is not None:
            model.update(msg, time.monotonic())
            continue
        if time.monotonic() < next_draw:
            continue
        next_draw += args.every
        drawn = screen(model.view(time.monotonic()), time.strftime("%H:%M:%S"))
        if live:
            console.clear(home=True)
        console.print(drawn)
        if not live:
            console.print()
        sys.stdout.flush()
        if args.once:
            return
