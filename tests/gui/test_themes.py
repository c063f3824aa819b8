"""The themes' colours, measured: every text colour readable on its background (WCAG ratios
computed from the tables), one colour per level and every level of the view model covered."""

import pytest

from common.viewmodel import LEVELS
from services.gui.themes import MIN_CONTRAST, THEMES, contrast


def test_the_contrast_ratio_is_wcags():
    assert contrast((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert contrast((255, 255, 255), (255, 255, 255)) == pytest.approx(1.0)
    assert contrast((118, 118, 118), (255, 255, 255)) == pytest.approx(4.54, abs=0.01)  # WCAG's own AA example grey


@pytest.mark.parametrize("name", sorted(THEMES))
def test_every_level_has_a_colour_readable_on_the_background(name):
    theme = THEMES[name]
    assert set(theme["levels"]) == set(LEVELS)
    ratios = {level: contrast(rgb, theme["bg"]) for level, rgb in theme["levels"].items()}
    assert min(ratios.values()) >= MIN_CONTRAST[name], ratios
    # Plain text also sits on frames (tabs, buttons), and a flashing banner's text on the warning colour.
    assert contrast(theme["levels"]["normal"], theme["frame"]) >= MIN_CONTRAST[name]
    assert contrast(theme["bg"], theme["levels"]["warning"]) >= MIN_CONTRAST[name]


def test_the_light_theme_is_for_sunlight_and_meanings_do_not_share_a_colour():
    assert MIN_CONTRAST["light"] >= 7.0 and MIN_CONTRAST["dark"] >= 4.5
    for theme in THEMES.values():
        signals = [theme["levels"][k] for k in ("good", "charging", "caution", "warning", "alarm")]
        assert len(set(signals)) == len(signals)
