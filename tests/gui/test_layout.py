"""The layout, read back from a real window under Xvfb: at each screen size and theme and in each
state, every item on both pages lies inside the viewport, nothing scrolls, and no two items overlap.
The same runs write the screenshots (in the test's directory)."""

import itertools
import json
import signal

import pytest

from harness.proc import python_module, wait_for, write_config
from harness.xvfb import Xvfb

# Items that hold others: they may contain what they hold (not an overlap), but must still fit.
CONTAINERS = {"mvWindowAppItem", "mvChildWindow", "mvGroup", "mvTable", "mvTableRow", "mvTableColumn", "mvTabBar"}
STATES = {"live": [], "one_pack": ["--packs", 1], "sixteen_packs_many_alarms": ["--packs", 16, "--alarms"]}
CASES = [(800, 480, "dark"), (800, 480, "light"), (1024, 600, "dark"), (1280, 720, "dark")]


@pytest.fixture
def xvfb():
    # An X server of its own per test, as tests/gui/test_display.py has: with one shared by the
    # module, a GUI once failed to get its window under load (GLFW: window NULL, an abort).
    x = Xvfb()
    yield x
    x.stop()


def problems(rects: dict, width: int, height: int) -> list[str]:
    found = [f"{name} scrolls by {scroll}" for name, scroll in rects.items()
             if name.endswith("#scroll") and scroll != [0.0, 0.0]]
    items = {tag: r for tag, r in rects.items() if not tag.endswith("#scroll")}
    for tag, (x, y, w, h, _kind) in items.items():
        if x < 0 or y < 0 or x + w > width or y + h > height:
            found.append(f"{tag} {[x, y, w, h]} is not inside {width}x{height}")
    leaves = {tag: r for tag, r in items.items() if r[4] not in CONTAINERS and r[2] > 0 and r[3] > 0}
    for (a, ra), (b, rb) in itertools.combinations(sorted(leaves.items()), 2):
        if ra[0] < rb[0] + rb[2] and rb[0] < ra[0] + ra[2] and ra[1] < rb[1] + rb[3] and rb[1] < ra[1] + ra[3]:
            found.append(f"{a} {ra[:4]} overlaps {b} {rb[:4]}")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("state", sorted(STATES))
@pytest.mark.parametrize(("width", "height", "theme"), CASES, ids=[f"{w}x{h}-{t}" for w, h, t in CASES])
def test_both_pages_fit_the_screen_without_overlaps(spawn, tmp_path, xvfb, width, height, theme, state):
    cfg = write_config(tmp_path / "c.yaml", gui={"width": width, "height": height, "theme": theme})
    spawn(python_module("harness.feed", "--config", cfg, "--links", "--period", 0.2, *STATES[state]))
    spawn(python_module("harness.publish", "trip", "--config", cfg, "--period", 0.2))
    dump, shots = tmp_path / "dump.json", tmp_path / "shots"
    gui = spawn(python_module("services.gui", "--config", cfg, "--dump", dump, "--screenshot", shots), env=xvfb.env())
    if gui.wait(120) == -6 and any("window != NULL" in line for line in gui.text()):
        # A known, unsolved defect (see the stop note): on a busy machine GLFW sometimes gets no
        # window from Xvfb and Dear PyGui aborts; the restart loop brings it back on a car. Once
        # more here, so that the layout is what this test judges.
        gui = spawn(python_module("services.gui", "--config", cfg, "--dump", dump, "--screenshot", shots),
                    env=xvfb.env())
    assert gui.wait(120) == 0, gui.text()
    shown = json.loads(dump.read_text())
    assert shown["viewport_size"] == [width, height]
    assert set(shown["rects"]) == {"driver", "detail", "trend"}
    for page, rects in shown["rects"].items():
        assert len(rects) > (3 if page == "trend" else 10), (page, rects)
        assert problems(rects, width, height) == [], page
    assert all((shots / f"{page}.png").stat().st_size > 0 for page in ("driver", "detail", "trend"))


@pytest.mark.slow
@pytest.mark.parametrize(("width", "height", "theme"), CASES[::2], ids=[f"{w}x{h}-{t}" for w, h, t in CASES[::2]])
def test_stale_values_keep_to_their_place(spawn, tmp_path, xvfb, width, height, theme):
    cfg = write_config(tmp_path / "c.yaml", gui={"width": width, "height": height, "theme": theme})
    feed = spawn(python_module("harness.feed", "--config", cfg, "--links", "--period", 0.2))
    dump = tmp_path / "dump.json"
    gui = spawn(python_module("services.gui", "--config", cfg, "--dump", dump), env=xvfb.env())

    def shown():
        try:
            return json.loads(dump.read_text())
        except (OSError, ValueError):
            return {}
    assert wait_for(lambda: shown().get("soc_text", "").endswith("%"), 60), gui.text()
    feed.signal(signal.SIGKILL)
    # The age goes on the label's line ("State of charge (12s)"), the value keeps to its column.
    stale = wait_for(lambda: (s := shown()) and s.get("cell_max_label", "").endswith("s)") and s, 60)
    assert stale, shown().get("cell_max_label")
    assert stale["soc_label"].endswith("s)") and stale["cell_max_label"].startswith("Cell max P2 (")
    assert problems(stale["rects"]["driver"], width, height) == []
