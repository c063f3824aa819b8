"""The display's colours: one table per theme, a colour for each level of the view model
(common/viewmodel.py LEVELS), so what a colour means is the same everywhere on the screen.

Every text colour is readable on its theme's background: at least 7:1 in the light theme, the
one for sunlight (WCAG AAA), and at least 4.5:1 in the dark one (WCAG AA); tests/gui/test_themes.py
computes the ratios from these tables.
"""

from __future__ import annotations

RGB = tuple[int, int, int]

THEMES: dict[str, dict] = {
    "dark": {
        "bg": (0, 0, 0), "frame": (40, 40, 40), "plot_bg": (15, 15, 15),
        "levels": {"normal": (255, 255, 255), "good": (60, 210, 90), "charging": (0, 190, 255),
                   "caution": (255, 215, 0), "warning": (255, 140, 0), "alarm": (255, 80, 80),
                   "stale": (150, 150, 150), "inactive": (130, 130, 130)},
    },
    "light": {
        "bg": (255, 255, 255), "frame": (215, 215, 215), "plot_bg": (245, 245, 245),
        "levels": {"normal": (0, 0, 0), "good": (0, 100, 0), "charging": (0, 75, 140),
                   "caution": (100, 70, 0), "warning": (150, 55, 0), "alarm": (175, 0, 0),
                   "stale": (85, 85, 85), "inactive": (85, 85, 85)},
    },
}
MIN_CONTRAST = {"light": 7.0, "dark": 4.5}


def colour(theme: dict, level: str | None) -> RGB:
    return theme["levels"][level or "normal"]


def _linear(channel: int) -> float:
    c = channel / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(rgb: RGB) -> float:
    """Relative luminance (WCAG 2)."""
    r, g, b = (_linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: RGB, b: RGB) -> float:
    """The WCAG contrast ratio of two colours, 1 to 21."""
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)
