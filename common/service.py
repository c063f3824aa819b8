"""The runner every service main uses: config, logging, signals, bus sockets.

A service is a function ``main(svc: Service) -> None`` that loops until ``svc.stopping``;
``run(name, main)`` does the rest:

* parses ``--config PATH`` (default ``config.yaml``), loads and validates the whole file;
  a bad file prints one line and exits with status 2 (honcho's restart loop then waits longer);
* logs to stderr with the service name, at the level ``debug_output`` asks for
  (0 info, 1 verbose: every recoverable error, 2 debug, 3 trace: raw frames and sentences);
* turns SIGTERM/SIGINT into ``svc.stopping``; if main has not returned 1.5 s later the process
  exits anyway, so a stop always completes within 2 s;
* owns the bus; every socket made through ``svc`` is closed on the way out.

Exit status: 0 after a stop, 2 for a configuration error, 1 for a bug (logged with traceback).
Recoverable trouble (a lost port, a refused server) must be handled inside main: a service that
exits makes honcho's restart loop start it again, losing its state.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import NoReturn

import msgspec

from common import bus as busmod
from common import clock, messages
from common import config as configmod
from common.command import Commands

TRACE = 5
VERBOSE = 15
LOG_LEVELS = {0: logging.INFO, 1: VERBOSE, 2: logging.DEBUG, 3: TRACE}
STOP_GRACE_S = 1.5
EXIT_CONFIG = 2

logging.addLevelName(TRACE, "TRACE")
logging.addLevelName(VERBOSE, "VERBOSE")


class Unavailable(Exception):
    """Something the service cannot run without is missing (no display for the GUI). It exits
    with status 2 and this one line, like a configuration error."""


class Service:
    """What a service main gets: its config, a logger, the stop flag and bus sockets."""

    def __init__(self, name: str, config: configmod.Config, args: argparse.Namespace, bus: busmod.Bus):
        self.name = name
        self.config = config
        self.args = args
        self.bus = bus
        self.log = logging.getLogger(name)
        self._stop = threading.Event()
        self._publisher: busmod.Publisher | None = None
        self.commands = Commands(name)
        self._commands_thread: threading.Thread | None = None

    @property
    def section(self):
        """This service's own config section."""
        return getattr(self.config, self.name)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if a stop was asked for meanwhile."""
        return self._stop.wait(max(0.0, seconds))

    def sleep(self, seconds: float, tick: Callable[[], None]) -> None:
        """Sleep up to ``seconds``, calling ``tick`` at least every 0.2 s (periodic publishing)."""
        deadline = time.monotonic() + max(0.0, seconds)
        while not self.stopping:
            tick()
            left = deadline - time.monotonic()
            if left <= 0 or self.wait(min(left, 0.2)):
                return

    def publisher(self) -> busmod.Publisher:
        """The PUB socket bound at this service's endpoint from the ``bus:`` section (bound once;
        the runner binds it before the service starts, so a bind problem is a config error)."""
        if self._publisher is None:
            echo = self._echo if self.config.debug_output2 >= 1 else None
            try:
                self._publisher = self.bus.publisher(self.config.bus.endpoint(self.name), self.name,
                                                     on_publish=self._published if echo else self.commands.keep)
            except busmod.BindError as e:
                raise configmod.ConfigError(f"{self.args.config}: bus.{self.name}: {e}") from None
        return self._publisher

    def subscriber(self, topics: Iterable[str]) -> busmod.Subscriber:
        """A SUB socket for these topics (or prefixes), connected to every publisher of them."""
        topics = list(topics)
        sources = sorted({t.publisher for t in messages.TOPICS.values()
                          if any(t.name.startswith(p) for p in topics)})
        return self.bus.subscriber([self.config.bus.endpoint(s) for s in sources], topics)

    def serve_commands(self) -> None:
        """Bind the command endpoint and answer from a thread of its own (common/command.py)."""
        endpoint = self.config.bus.command_endpoint(self.name)
        try:
            responder = self.bus.responder(endpoint)
        except busmod.BindError as e:
            raise configmod.ConfigError(f"{self.args.config}: bus.{self.name}_cmd: {e}") from None
        self.commands.add_topics()
        self._commands_thread = self.commands.serve(responder, self._stop)

    def stop_commands(self) -> None:
        if self._commands_thread is not None:
            self._stop.set()
            self._commands_thread.join(2.0)

    def _published(self, topic: str, seq: int, data: messages.Data) -> None:
        self.commands.keep(topic, seq, data)
        self._echo(topic, seq, data)

    def _echo(self, topic: str, seq: int, data: messages.Data) -> None:
        self.log.info("published %s #%d %s", topic, seq, msgspec.json.encode(data).decode())


def run(name: str, main: Callable[[Service], None] | None = None, *,
        add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
        argv: list[str] | None = None, quiet: bool = False,
        validate: Callable[[configmod.Config], None] | None = None,
        prepare: Callable[[Service], Callable[[], None]] | None = None) -> NoReturn:
    """Run ``main`` as service ``name`` and exit with its status (see module docstring).

    ``validate`` checks what the file format cannot (it raises ConfigError); ``quiet`` (for
    command-line tools) logs only warnings unless debug_output asks for more. ``prepare``, in
    place of ``main``, opens what the service needs and returns its loop: a ConfigError raised
    while opening (an outbox that cannot be created) is then the one line before "running".
    """
    entry = prepare or main
    parser = argparse.ArgumentParser(prog=f"python -m {entry.__module__.rsplit('.', 1)[0]}")
    parser.add_argument("--config", default="config.yaml", help="config file (default: config.yaml)")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = configmod.load(args.config)
        if validate:
            validate(config)
    except configmod.ConfigError as e:
        _config_exit(name, e)
    except Unavailable as e:
        print(f"{name}: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_CONFIG)
    clock.use_timebase(clock.Timebase(config.simulation.speedup, config.simulation.start_ts))
    _setup_logging(name, logging.WARNING if quiet and config.debug_output == 0 else LOG_LEVELS[config.debug_output])
    bus = busmod.Bus(config.bus.max_message_bytes)
    svc = Service(name, config, args, bus)
    if name in configmod.PUBLISHERS:
        try:
            svc.publisher()
            if name in configmod.COMMANDERS:
                svc.serve_commands()
        except configmod.ConfigError as e:
            bus.close()
            _config_exit(name, e)
    work = _prepared(name, svc, bus, prepare) if prepare else partial(main, svc)
    _handle_signals(svc)
    status = 0
    svc.log.info("%s running (config %s)", name, args.config)
    try:
        work()
    except configmod.ConfigError as e:
        _config_exit(name, e)
    except Exception:
        svc.log.exception("%s stopped by an unexpected error", name)
        status = 1
    finally:
        svc.stop_commands()
        bus.close()
    svc.log.info("%s stopped", name)
    sys.exit(status)


def _prepared(name: str, svc: Service, bus: busmod.Bus,
              prepare: Callable[[Service], Callable[[], None]]) -> Callable[[], None]:
    try:
        return prepare(svc)
    except configmod.ConfigError as e:
        svc.stop_commands()
        bus.close()
        _config_exit(name, e)


def _config_exit(name: str, error: configmod.ConfigError) -> NoReturn:
    print(f"{name}: config error: {error}", file=sys.stderr, flush=True)
    sys.exit(EXIT_CONFIG)


def _setup_logging(name: str, level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s {name}[%(process)d] %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _handle_signals(svc: Service) -> None:
    def on_signal(signum, _frame):
        if svc.stopping:
            os._exit(1)
        svc.log.info("stopping on %s", signal.Signals(signum).name)
        svc.stop()
        timer = threading.Timer(STOP_GRACE_S, _force_exit, args=(svc,))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _force_exit(svc: Service) -> None:
    svc.log.warning("did not stop within %.1f s; exiting now", STOP_GRACE_S)
    logging.shutdown()
    os._exit(0)
