"""The Dear PyGui view: builds the window once, then only copies a View (viewmodel.py) into it.

Two pages in a tab bar — Driver (the default) and Detail — and a health strip below both. Sizes
follow the viewport height (designed at 800x480, readable at 1024x600 and 1280x720). Widgets are
only touched when their value changes: under Mesa's software renderer every call counts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dearpygui.dearpygui as dpg

from common.fields import BY_KEY
from common.viewmodel import LEVELS, SEVERITY_LEVELS, View
from services.gui.service import PAGES
from services.gui.themes import THEMES, colour

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/TTF", "/usr/share/fonts/dejavu")
DRIVER_VALUES = (("voltage", "v_pack"), ("current", "i_pack"), ("cell_min", "cell_min_volt"),
                 ("cell_max", "cell_max_volt"), ("cell_delta", "cell_max_diff_volt"),
                 ("temp_min", "cell_min_temp"), ("temp_max", "cell_max_temp"),
                 ("range", "range_km"), ("rate", "wh_per_km_recent"))
MAX_PACKS = 16
OVERVIEW_COLUMNS = 3
LINES_PER_COLUMN = 6  # a pack's values in two columns of this many lines
MAX_ALARM_LINES = 4  # on the detail page; "+N more" after them


def _font_file() -> str | None:
    for folder in FONT_DIRS:
        path = Path(folder) / "DejaVuSans-Bold.ttf"
        if path.exists():
            return str(path)
    return None


class DisplayView:
    def __init__(self, width: int, height: int, theme: str, fullscreen: bool, new_trip=None):
        """``new_trip``: called by the "New trip" button; its ``result`` is shown beside it."""
        self.width, self.height = width, height
        self.new_trip = new_trip
        self.palette = THEMES[theme]
        self._shown: dict[str, object] = {}
        self._pack = 1
        self.dirty = True
        self.page_rects: dict[str, dict] = {}
        dpg.create_context()
        self._fonts()
        self._themes()
        self._build()
        # At the top left: Dear PyGui's default (+100+100) would push the right column and the health
        # strip off an 800x480 screen.
        dpg.create_viewport(title="PACE telemetry", width=width, height=height, x_pos=0, y_pos=0, resizable=True)
        dpg.setup_dearpygui()

    # -- building ------------------------------------------------------------------------------

    def _fonts(self) -> None:
        path = _font_file()
        self.fonts = {}
        if path is None:
            return
        scale = self.height / 480
        with dpg.font_registry():
            for name, size in (("huge", 150), ("large", 44), ("medium", 26), ("normal", 20), ("small", 16)):
                self.fonts[name] = dpg.add_font(path, max(10, int(size * scale)))
        dpg.bind_font(self.fonts["normal"])

    def _themes(self) -> None:
        p = self.palette
        with dpg.theme() as global_theme, dpg.theme_component(dpg.mvAll):
            for item, rgb in ((dpg.mvThemeCol_WindowBg, p["bg"]), (dpg.mvThemeCol_ChildBg, p["bg"]),
                              (dpg.mvThemeCol_Text, colour(p, None)), (dpg.mvThemeCol_FrameBg, p["frame"]),
                              (dpg.mvThemeCol_Tab, p["frame"]), (dpg.mvThemeCol_PopupBg, p["frame"])):
                dpg.add_theme_color(item, rgb)
            dpg.add_theme_color(dpg.mvPlotCol_PlotBg, p["plot_bg"], category=dpg.mvThemeCat_Plots)
            dpg.add_theme_style(dpg.mvStyleVar_WindowPadding, 6, 4)
        dpg.bind_theme(global_theme)
        self.bar_themes = {}
        for level in LEVELS:
            with dpg.theme() as theme, dpg.theme_component(dpg.mvProgressBar):
                dpg.add_theme_color(dpg.mvThemeCol_PlotHistogram, colour(p, level))
            self.bar_themes[level] = theme
        self.banner_themes = {}
        # A new alarm flashes: the background in the warning colour, the text in the background's.
        for name, rgb in (("plain", p["bg"]), ("flash", colour(p, "warning"))):
            with dpg.theme() as theme, dpg.theme_component(dpg.mvChildWindow):
                dpg.add_theme_color(dpg.mvThemeCol_ChildBg, rgb)
            self.banner_themes[name] = theme
        with dpg.theme() as self.balancing_theme, dpg.theme_component(dpg.mvBarSeries):
            dpg.add_theme_color(dpg.mvPlotCol_Fill, colour(p, "charging"), category=dpg.mvThemeCat_Plots)
        with dpg.theme() as self.cells_theme, dpg.theme_component(dpg.mvBarSeries):
            dpg.add_theme_color(dpg.mvPlotCol_Fill, colour(p, "good"), category=dpg.mvThemeCat_Plots)

    def _font(self, item, name: str) -> None:
        if name in self.fonts:
            dpg.bind_item_font(item, self.fonts[name])

    def _build(self) -> None:
        w, h, s = self.width, self.height, self.height / 480
        with dpg.window(tag="main", no_title_bar=True, no_move=True, no_resize=True, no_scrollbar=True):
            page_height = h - int(72 * s)  # what is left between the tabs and the health strip
            with dpg.tab_bar(tag="tabs"):
                with dpg.tab(label="Driver", tag="tab_driver"), \
                        dpg.child_window(height=page_height, border=False, no_scrollbar=True, tag="page_driver"):
                    self._driver(w, h, s)
                with dpg.tab(label="Detail", tag="tab_detail"), \
                        dpg.child_window(height=page_height, border=False, no_scrollbar=True, tag="page_detail"):
                    self._detail(w, h, s)
                with dpg.tab(label="Trend", tag="tab_trend"), \
                        dpg.child_window(height=page_height, border=False, no_scrollbar=True, tag="page_trend"):
                    self._trend()
            with dpg.group(horizontal=True, tag="health"):
                for name in ("BMS", "GPS", "Uplink"):
                    dpg.add_text(f"{name} --", tag=f"health_{name}")
                    dpg.add_spacer(width=int(12 * s))
                dpg.add_text("--", tag="queued")
                dpg.add_spacer(width=int(12 * s))
                dpg.add_text("", tag="errors", color=colour(self.palette, "warning"))
        with dpg.handler_registry():
            dpg.add_key_press_handler(dpg.mvKey_Tab, callback=self.toggle_page)
        dpg.set_primary_window("main", True)

    def _driver(self, w: int, h: int, s: float) -> None:
        with dpg.group(horizontal=True):
            with dpg.group(width=int(w * 0.43)):
                self._font(dpg.add_text("--", tag="speed"), "huge")
                self._font(dpg.add_text(BY_KEY["speed_km_h"].unit, tag="speed_unit"), "medium")
            with dpg.group():
                self._font(dpg.add_text(BY_KEY["soc"].label, tag="soc_label"), "small")
                bar = dpg.add_progress_bar(tag="soc_bar", default_value=0.0, width=int(w * 0.5), height=int(70 * s))
                dpg.bind_item_theme(bar, self.bar_themes["inactive"])
                self._font(dpg.add_text("--", tag="soc_text"), "large")
                self._font(dpg.add_text(BY_KEY["p_pack"].label, tag="power_label"), "small")
                with dpg.group(horizontal=True):
                    self._font(dpg.add_text("--", tag="power"), "large")
                    self._font(dpg.add_text("", tag="power_state"), "medium")
        with dpg.table(header_row=False, borders_innerV=True, tag="values"):
            for _ in range(5):
                dpg.add_table_column()
            for row in (DRIVER_VALUES[:2] + DRIVER_VALUES[5:7] + DRIVER_VALUES[8:], DRIVER_VALUES[2:5] + DRIVER_VALUES[7:8]):
                with dpg.table_row():
                    for tag, key in row:
                        with dpg.group():
                            self._font(dpg.add_text(BY_KEY[key].label, tag=f"{tag}_label"), "small")
                            self._font(dpg.add_text("--", tag=tag), "medium")
        with dpg.child_window(tag="banner_box", height=int(46 * s), border=False):
            self._font(dpg.add_text("--", tag="banner", wrap=w - 20), "medium")

    def _detail(self, w: int, h: int, s: float) -> None:
        with dpg.group(horizontal=True):
            with dpg.group(width=int(w * 0.43)):
                with dpg.group(horizontal=True):
                    dpg.add_combo([f"Pack {i}" for i in range(1, 2)], default_value="Pack 1", tag="pack_select",
                                  width=int(110 * s), callback=self._select_pack)
                    dpg.add_text("", tag="pack_state")
                with dpg.plot(height=int(h * 0.26), width=-1, tag="cells_plot", no_menus=True, no_mouse_pos=True):
                    dpg.add_plot_axis(dpg.mvXAxis, label="cell", tag="cells_x", no_gridlines=True)
                    with dpg.plot_axis(dpg.mvYAxis, label="mV", tag="cells_y"):
                        dpg.add_bar_series([], [], tag="cells_series", weight=0.7)
                        dpg.add_bar_series([], [], tag="balancing_series", weight=0.7, label="balancing")
                dpg.bind_item_theme("cells_series", self.cells_theme)
                dpg.bind_item_theme("balancing_series", self.balancing_theme)
                # Here, not on the driver page: a new trip is asked for at a stop, never by a stray touch.
                with dpg.group(horizontal=True):
                    dpg.add_button(label="New trip", tag="new_trip", width=int(130 * s), height=int(48 * s),
                                   callback=lambda *_: self.new_trip and self.new_trip())
                    self._font(dpg.add_text("", tag="trip_reset", wrap=int(w * 0.25)), "small")
            with dpg.group():
                self._font(dpg.add_text("", tag="alarm_list", wrap=int(w * 0.5)), "small")
                with dpg.group(horizontal=True):
                    self._font(dpg.add_text("", tag="pack_lines"), "small")
                    dpg.add_spacer(width=int(8 * s))
                    self._font(dpg.add_text("", tag="pack_lines_2"), "small")
                # Closed by default: the BMS's own thresholds are for a stop, not for a glance.
                with dpg.collapsing_header(label="BMS settings", tag="settings_header", default_open=False):
                    self._font(dpg.add_text("", tag="pack_settings", wrap=int(w * 0.5)), "small")
        self._font(dpg.add_text("", tag="pack_temps"), "small")
        # Every pack at once, three to a row: 16 packs in six rows, no scrolling.
        with dpg.table(header_row=False, tag="pack_overview_table", policy=dpg.mvTable_SizingStretchSame):
            for _ in range(OVERVIEW_COLUMNS):
                dpg.add_table_column()
            for row in range(-(-MAX_PACKS // OVERVIEW_COLUMNS)):
                with dpg.table_row(tag=f"pack_row_{row}", show=False):
                    for col in range(OVERVIEW_COLUMNS):
                        self._font(dpg.add_text("", tag=f"pack_summary_{row * OVERVIEW_COLUMNS + col}"), "small")

    def _trend(self) -> None:
        with dpg.plot(height=-1, width=-1, tag="trend_plot", no_menus=True, no_mouse_pos=True):
            dpg.add_plot_legend(horizontal=True, location=dpg.mvPlot_Location_North, outside=True)
            dpg.add_plot_axis(dpg.mvXAxis, tag="trend_x")
            dpg.set_axis_limits("trend_x", -600, 0)
            with dpg.plot_axis(dpg.mvYAxis, tag="trend_y"):
                dpg.add_line_series([], [], label="speed km/h", tag="trend_speed")
                dpg.add_line_series([], [], label="SOC %", tag="trend_soc")
            with dpg.plot_axis(dpg.mvYAxis, label="kW", tag="trend_y2"):
                dpg.add_line_series([], [], label="power kW", tag="trend_power")

    # -- pages -----------------------------------------------------------------------------------

    def show(self, fullscreen: bool) -> None:
        dpg.show_viewport()
        if fullscreen:
            dpg.toggle_viewport_fullscreen()

    def page(self, name: str) -> None:
        dpg.set_value("tabs", f"tab_{name}")
        self.dirty = True

    def toggle_page(self, *_) -> None:
        """The next page (the Tab key, a second way beside the tabs)."""
        self.page(PAGES[(PAGES.index(self.current_page()) + 1) % len(PAGES)])

    def _select_pack(self, sender, value) -> None:
        self._pack = int(str(value).split()[-1])
        self.dirty = True

    # -- drawing ---------------------------------------------------------------------------------

    def _set(self, tag: str, value) -> None:
        if self._shown.get(tag) != value:
            self._shown[tag] = value
            self.dirty = True
            dpg.set_value(tag, value)

    def _text(self, tag: str, text: str, level: str | None = None, rgb=None) -> None:
        """Show ``text`` in the theme's colour for ``level`` (or in ``rgb``)."""
        self._set(tag, text)
        rgb = tuple(rgb or colour(self.palette, level))
        if self._shown.get(tag + "#colour") != rgb:
            self._shown[tag + "#colour"] = rgb
            self.dirty = True
            dpg.configure_item(tag, color=(*rgb, 255))

    def _label(self, tag: str, key: str, shown) -> None:
        """A value's label from the field table, with the pack it belongs to and, when stale, its
        age: on the label's line, so the value itself keeps to its column."""
        self._text(tag, f"{BY_KEY[key].label} {shown.extra}".rstrip(), "stale" if shown.stale else None)

    def _font_of(self, tag: str, name: str) -> None:
        if self._shown.get(tag + "#font") != name:
            self._shown[tag + "#font"] = name
            self.dirty = True
            self._font(tag, name)

    def _bind(self, tag: str, theme) -> None:
        if self._shown.get(tag + "#theme") != theme:
            self._shown[tag + "#theme"] = theme
            self.dirty = True
            dpg.bind_item_theme(tag, theme)

    def draw(self, v: View, errors: int) -> None:
        """Copy the view into the widgets of the page on screen and the health strip; the hidden
        page is brought up to date when it is shown (a hidden change would cost a frame)."""
        if self.current_page() == "driver":
            self._driver_page(v)
        for item in v.health:
            self._text(f"health_{item.name}", f"{item.name} {item.state} {item.age_text}".strip(), item.level)
        self._text("queued", v.queued.text, v.queued.level)
        self._text("errors", f"{errors} display errors" if errors else "", "warning")
        if self.current_page() == "detail":
            self._detail_page(v)
        if self.current_page() == "trend":
            self._trend_page(v)

    def _driver_page(self, v: View) -> None:
        self._text("speed", v.speed.text, v.speed.level)
        # Words ("NO GPS") in a smaller size than the digits, so they fit the digits' place.
        self._font_of("speed", "huge" if v.speed.text.isdigit() else "large")
        self._set("speed_unit", BY_KEY["speed_km_h"].unit if v.speed.text.isdigit() else "")
        self._label("soc_label", "soc", v.soc)
        self._text("soc_text", v.soc.text, v.soc.level)
        self._set("soc_bar", v.soc_fraction or 0.0)
        self._bind("soc_bar", self.bar_themes["stale" if v.soc_fraction is None or v.soc.stale else v.soc.level])
        self._label("power_label", "p_pack", v.power)
        self._text("power", v.power.text, v.power.level)
        self._text("power_state", v.power_state if v.power_state != "unknown" else "", v.power.level)
        for tag, key in DRIVER_VALUES:
            shown = getattr(v, tag)
            self._label(f"{tag}_label", key, shown)
            self._text(tag, shown.text, shown.level)
        # The worst alarm in full and how many more: the whole list is on the detail page.
        flash = self.palette["bg"] if v.banner_flash else None
        self._text("banner", v.alarm.text, v.alarm.level, rgb=flash)
        self._bind("banner_box", self.banner_themes["flash" if v.banner_flash else "plain"])

    def _clear_pack(self) -> None:
        """No pack in the snapshot any more: nothing of the last one may stay on the page."""
        self._text("pack_state", "no pack", "inactive")
        if self._shown.get("cells") != ([], [], []):
            self._shown["cells"] = ([], [], [])
            self.dirty = True
            dpg.set_value("cells_series", [[], []])
            dpg.set_value("balancing_series", [[], []])
        self._set("pack_temps", "")
        self._set("pack_settings", "")
        self._set("pack_lines", "")
        self._set("pack_lines_2", "")

    def current_page(self) -> str:
        return (dpg.get_item_alias(dpg.get_value("tabs")) or "tab_driver").removeprefix("tab_")

    def _detail_page(self, v: View) -> None:
        self._text("trip_reset", getattr(self.new_trip, "result", ""))
        self._alarm_list(v)
        choices = [f"Pack {p.number}" for p in v.packs] or ["Pack 1"]
        if self._shown.get("pack_choices") != choices:
            self._shown["pack_choices"] = choices
            dpg.configure_item("pack_select", items=choices)
        pack = next((p for p in v.packs if p.number == self._pack), v.packs[0] if v.packs else None)
        if pack is None:
            self._clear_pack()
        else:
            self._text("pack_state", "online" if pack.online else "OFFLINE", None if pack.online else "alarm")
            xs = list(range(1, len(pack.cells_mv) + 1))
            plain = [0 if i in pack.balancing else mv for i, mv in zip(xs, pack.cells_mv)]
            balancing = [mv if i in pack.balancing else 0 for i, mv in zip(xs, pack.cells_mv)]
            if self._shown.get("cells") != (xs, pack.cells_mv, pack.balancing):
                self._shown["cells"] = (xs, pack.cells_mv, pack.balancing)
                self.dirty = True
                dpg.set_value("cells_series", [xs, plain])
                dpg.set_value("balancing_series", [xs, balancing])
                if pack.cells_mv:
                    low, high = min(pack.cells_mv), max(pack.cells_mv)
                    dpg.set_axis_limits("cells_y", low - 20, high + 10)
                    dpg.set_axis_limits("cells_x", 0.3, len(xs) + 0.7)
            self._set("pack_temps", "°C " + "  ".join(f"{label} {value.split()[0]}" for label, value in pack.temps))
            lines = [f"{k}: {val}" for k, val in pack.lines]
            self._set("pack_lines", "\n".join(lines[:LINES_PER_COLUMN]))
            self._set("pack_lines_2", "\n".join(lines[LINES_PER_COLUMN:]))
            self._set("pack_settings", "\n".join(pack.settings) or "not read yet")
        self._overview(v)

    def _overview(self, v: View) -> None:
        for i in range(MAX_PACKS):
            self._set(f"pack_summary_{i}", v.packs[i].summary if i < len(v.packs) else "")
        for row in range(-(-MAX_PACKS // OVERVIEW_COLUMNS)):
            shown = row * OVERVIEW_COLUMNS < min(len(v.packs), MAX_PACKS)
            if self._shown.get(f"pack_row_{row}#show") != shown:
                self._shown[f"pack_row_{row}#show"] = shown
                self.dirty = True
                dpg.configure_item(f"pack_row_{row}", show=shown)

    def _alarm_list(self, v: View) -> None:
        """All alarms by priority, one line per alarm with its packs, as many as fit and a count."""
        groups = v.alarm_groups
        lines = [f"{kind.upper()}: {what}" for kind, what in groups[:MAX_ALARM_LINES]]
        if len(groups) > MAX_ALARM_LINES:
            lines.append(f"+{len(groups) - MAX_ALARM_LINES} more")
        level = SEVERITY_LEVELS[groups[0][0]] if groups else v.alarm.level
        self._text("alarm_list", "\n".join(lines) or v.alarm.text, level)

    def _trend_page(self, v: View) -> None:
        if self._shown.get("trend") != v.trend_at:
            self._shown["trend"] = v.trend_at
            self.dirty = True
            for key in ("speed", "power", "soc"):
                xs, ys = v.trend.get(key, ([], []))
                dpg.set_value(f"trend_{key}", [xs, ys])
            dpg.fit_axis_data("trend_y")
            dpg.fit_axis_data("trend_y2")

    def rects(self) -> dict[str, list]:
        """Where every tagged item on the page shown and the strip was drawn, as [x, y, w, h]
        (read back from Dear PyGui after a frame), for the layout test."""
        out = {}
        for item in dpg.get_all_items():
            tag = dpg.get_item_alias(item)
            state = dpg.get_item_state(item) if tag else {}
            if not state.get("visible") or "rect_min" not in state or "rect_size" not in state:
                continue  # an item with no rectangle of its own (a theme, a handler, a series)
            kind = dpg.get_item_type(item).rsplit("::", 1)[-1]
            (x, y), (w, h) = state["rect_min"], state["rect_size"]
            out[tag] = [x, y, w, h, kind]
        for window in ("main", f"page_{self.current_page()}"):
            out[f"{window}#scroll"] = [dpg.get_y_scroll_max(window), dpg.get_x_scroll_max(window)]
        return out

    def note_rects(self) -> None:
        """Keep the rectangles of the page on screen (after a frame), for dump()."""
        self.page_rects[self.current_page()] = self.rects()

    def dump(self, path: str) -> None:
        """Write the displayed values (read back from the widgets) as JSON, for tests."""
        tags = ["speed", "soc_text", "soc_bar", "power", "power_state", "banner", "health_BMS", "health_GPS",
                "health_Uplink", "queued", "pack_lines", "pack_lines_2", "pack_settings", "pack_temps", "pack_state",
                "errors", "trip_reset", "alarm_list"]
        tags += [tag for tag, _ in DRIVER_VALUES] + [f"{tag}_label" for tag, _ in DRIVER_VALUES]
        tags += ["soc_label", "power_label"]
        out = {tag: dpg.get_value(tag) for tag in tags}
        out["colours"] = {tag: [round(c * 255) for c in dpg.get_item_configuration(tag)["color"][:3]]
                          for tag in tags if "color" in dpg.get_item_configuration(tag)}
        out["pack_overview"] = "\n".join(t for i in range(MAX_PACKS) if (t := dpg.get_value(f"pack_summary_{i}")))
        out["cells_series"] = dpg.get_value("cells_series")[:2]
        out["balancing_series"] = dpg.get_value("balancing_series")[:2]
        out["page"] = dpg.get_item_alias(dpg.get_value("tabs"))
        # Where the button is on the screen (the window fills the viewport at 0,0), for a test's click.
        out["new_trip_rect"] = [*dpg.get_item_rect_min("new_trip"), *dpg.get_item_rect_size("new_trip")]
        out["viewport_pos"] = dpg.get_viewport_pos()
        out["viewport_size"] = [dpg.get_viewport_client_width(), dpg.get_viewport_client_height()]
        out["rects"] = self.page_rects
        tmp = f"{path}.tmp"
        Path(tmp).write_text(json.dumps(out))
        os.replace(tmp, path)
