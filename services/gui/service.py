"""gui: the driver's display. Drains the bus without blocking, redraws at a paced ``fps``.

Dear PyGui's own loop redraws as fast as it can (both cores under Mesa's software renderer), so
this loop renders one frame, then sleeps to the next frame time. A bad message is counted by the
subscriber and skipped; an error while drawing is logged, counted and shown, and the next frame
draws again: the display never freezes on old values. Without a display, or with an OpenGL older than
Dear PyGui needs (services/gui/glprobe.py), the service says so in one line and exits with status 2
(Dear PyGui would abort the process).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from common import command
from common.health import Every
from common.service import Service, Unavailable
from common.viewmodel import TOPICS, ViewModel

PAGES = ("driver", "detail", "trend")  # the tabs, in order (services/gui/view.py builds them)

# --screenshot waits until every topic has been seen (or the longer bound has passed), and at least
# the shorter one, so that the pictures show live values and a settled layout.
SCREENSHOT_AFTER_S = 3.0
SCREENSHOT_WAIT_S = 30.0
# With render: on_change a frame is drawn when something shown changed, at least this often (so a
# touch or key is handled), and at the full rate for a while after the pointer moved.
IDLE_FRAME_S = 0.5
INTERACTIVE_S = 2.0


def display_available() -> str | None:
    """None when an X display can be reached, else why not."""
    display = os.environ.get("DISPLAY")
    if not display:
        return "DISPLAY is not set"
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        return f"DISPLAY={display} is not a display name"
    if host in ("", "unix"):
        if not Path(f"/tmp/.X11-unix/X{number}").exists():
            return f"no X server on DISPLAY={display}"
        return None
    try:
        socket.create_connection((host, 6000 + int(number)), timeout=1).close()
    except OSError as e:
        return f"no X server on DISPLAY={display} ({e})"
    return None


def add_arguments(parser) -> None:
    parser.add_argument("--page", choices=PAGES, default="driver", help="page to start on")
    parser.add_argument("--screenshot", metavar="DIR", help="save driver.png, detail.png and trend.png in DIR, then exit")
    parser.add_argument("--dump", metavar="FILE", help="write the displayed values to FILE twice a second (tests)")


def require_display(_config) -> None:
    why = display_available()
    if why:
        raise Unavailable(f"no display: {why}; run it on the car's screen, under Xvfb, "
                          "or use another viewer (python -m services.tui)")
    from services.gui.glprobe import gl_problem

    problem = gl_problem()
    if problem:
        raise Unavailable(problem)


def main(svc: Service) -> None:
    os.environ.setdefault("LP_NUM_THREADS", "1")  # Mesa's software renderer: one thread is plenty
    import dearpygui.dearpygui as dpg

    from services.gui.view import DisplayView

    cfg, args = svc.section, svc.args
    view = DisplayView(cfg.width, cfg.height, cfg.theme, cfg.fullscreen,
                       new_trip=TripReset(svc.config.bus.command_endpoint("trip")))
    view.page(args.page)
    view.show(cfg.fullscreen)
    loop = Loop(svc, view, always=cfg.render == "always" or bool(args.screenshot or args.dump))
    period = 1.0 / cfg.fps
    try:
        while dpg.is_dearpygui_running() and not svc.stopping:
            frame_at = time.monotonic()
            loop.take(frame_at)
            loop.draw(frame_at)
            loop.render(frame_at)
            if loop.record(frame_at):
                break
            svc.wait(period - (time.monotonic() - frame_at))
    finally:
        dpg.destroy_context()


class Loop:
    """One frame's steps: take the bus's news, draw it into the widgets, render when something
    changed (or the driver is touching the screen), and the test outputs (dump, screenshots)."""

    def __init__(self, svc: Service, view, always: bool):
        args = svc.args
        self.svc, self.view, self.always = svc, view, always
        self.sub = svc.subscriber(TOPICS)
        self.model = ViewModel()
        self.errors, self.logged = 0, set()
        self.seen: set[str] = set()
        self.dump_every = Every(0.5)
        self.started = time.monotonic()
        self.shots = _screenshots(view, Path(args.screenshot)) if args.screenshot else None
        self.last_frame, self.last_input, self.pointer = 0.0, 0.0, None

    def take(self, at: float) -> None:
        for msg in self.sub.drain().values():
            self.model.update(msg, at)
            self.seen.add(msg.topic)

    def draw(self, at: float) -> None:
        try:
            self.view.draw(self.model.view(at), self.errors + sum(self.sub.stats.bad.values()))
        except Exception as e:  # a drawing bug must not freeze the display on old values
            self.errors += 1
            self.view.dirty = True
            if type(e).__name__ not in self.logged:
                self.logged.add(type(e).__name__)
                self.svc.log.exception("drawing failed; counting and going on")

    def render(self, at: float) -> None:
        import dearpygui.dearpygui as dpg

        state = (dpg.get_mouse_pos(local=False), dpg.is_mouse_button_down(dpg.mvMouseButton_Left))
        if state != self.pointer:
            self.pointer, self.last_input = state, at
        idle = at - self.last_frame >= IDLE_FRAME_S
        if self.always or self.view.dirty or idle or at - self.last_input < INTERACTIVE_S:
            dpg.render_dearpygui_frame()
            self.view.dirty, self.last_frame = False, at

    def record(self, at: float) -> bool:
        """The dump and the screenshots; True when the screenshots are done (time to exit)."""
        dump = self.svc.args.dump
        if dump:
            self.view.note_rects()
            if self.dump_every.due():
                self.view.dump(dump)
        if self.shots is None or not _shoot_now(at - self.started, self.seen) or next(self.shots, "done") != "done":
            return False
        if dump:  # what every page showed, for a test that reads it after the exit
            self.view.dump(dump)
        return True


class TripReset:
    """The "New trip" button: asks the trip computer on its command endpoint, from a thread of
    its own (the display never waits on another service); ``result`` says how it went."""

    def __init__(self, endpoint: str):
        self.endpoint, self.result = endpoint, ""

    def __call__(self) -> None:
        self.result = "asking the trip computer..."
        threading.Thread(target=self._ask, name="trip-reset", daemon=True).start()

    def _ask(self) -> None:
        try:
            command.call(self.endpoint, "reset", timeout_s=2.0, service="trip")
            self.result = f"new trip started {time.strftime('%H:%M:%S')}"
        except command.CommandError as e:
            self.result = str(e)


def _shoot_now(running_s: float, seen: set[str]) -> bool:
    return running_s >= SCREENSHOT_WAIT_S or (running_s >= SCREENSHOT_AFTER_S and seen >= set(TOPICS))


def _screenshots(view, folder: Path):
    """A generator stepped once per frame: capture the driver page, then the detail page.
    Dear PyGui writes the capture during the next rendered frame, so each capture is followed by
    frames before the page changes (docs/testing.md, "The GUI under Xvfb")."""
    import dearpygui.dearpygui as dpg

    folder.mkdir(parents=True, exist_ok=True)
    for page in PAGES:
        view.page(page)
        for _ in range(3):
            yield page
        dpg.output_frame_buffer(file=str(folder / f"{page}.png"))
        for _ in range(3):
            yield page


