"""Remote settings: the shared attributes a ThingsBoard user may set on the device, checked.

ThingsBoard pushes a changed shared attribute on ``v1/devices/me/attributes`` (``{"key": value}``,
or ``{"deleted": ["key"]}`` when one is removed) and answers a request after every connect with
all of them (``{"shared": {...}}``). :class:`RemoteSettings` (pure) takes either, checks every
value against the table below, and says which values are now in use; a bad value is refused, the
one in use is kept, and the reason is reported (``refused``). A key missing from a full reply, or
deleted, goes back to the config file's value. Keys it does not know are ignored: a shared
attribute may be meant for a dashboard, not for us.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


class SettingError(ValueError):
    """A value a setting cannot take; the message says what it may be."""


def _seconds(low: float, high: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise SettingError(f"{value!r} is not a number of seconds") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise SettingError(f"{value!r} is not a number of seconds from {low:g} to {high:g}")
        return float(value)
    return parse


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in allowed:
            raise SettingError(f"{value!r} is not one of {', '.join(allowed)}")
        return value
    return parse


@dataclass(frozen=True)
class Setting:
    key: str
    parse: Callable[[Any], Any]
    doc: str


def table(groups: Iterable[str]) -> dict[str, Setting]:
    """Every remote setting; ``groups`` are the budget planner's key groups, each with a cadence."""
    rows = [Setting("upload_interval", _seconds(0.2, 3600), "seconds between records"),
            Setting("key_set", _choice("full", "original"), "full, or the original bms.py keys only")]
    rows += [Setting(f"cadence_{g}_s", _seconds(0, 86400),
                     f"seconds between sends of the {g} keys (0: with every record)") for g in groups]
    return {s.key: s for s in rows}


class RemoteSettings:
    def __init__(self, settings: dict[str, Setting], from_config: dict[str, Any]):
        self.settings = settings
        self.from_config = dict(from_config)
        self.in_use = dict(from_config)
        self.refused: dict[str, str] = {}

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.settings)

    def take(self, update: Any, full: bool) -> dict[str, Any]:
        """Apply an update (``full``: the reply to a request, which holds every shared key that
        is set). Returns the settings whose value in use changed."""
        if not isinstance(update, dict):
            return {}
        before = dict(self.in_use)
        deleted = update.get("deleted")
        gone = [k for k in deleted if isinstance(k, str)] if isinstance(deleted, list) else []
        if full:
            gone += [k for k in self.settings if k not in update]
        for key in gone:
            if key in self.settings:
                self.in_use[key] = self.from_config.get(key)
                self.refused.pop(key, None)
        for key, value in update.items():
            if key in self.settings:
                self._set(key, value)
        return {k: v for k, v in self.in_use.items() if before.get(k) != v}

    def _set(self, key: str, value: Any) -> None:
        try:
            self.in_use[key] = self.settings[key].parse(value)
            self.refused.pop(key, None)
        except SettingError as e:
            self.refused[key] = f"{key}: {e}; keeping {self.in_use.get(key)!r}"

    def attributes(self) -> dict[str, Any]:
        """Client attributes reporting the values in use and why any was refused ("" if none)."""
        out = {f"{k}_in_use": v for k, v in self.in_use.items() if v is not None}
        out["settings_refused"] = "; ".join(self.refused[k] for k in sorted(self.refused))
        return out
