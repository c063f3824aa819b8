"""The command channel: ask a running service for something, and answer such requests.

A service binds a ROUTER socket at its ``bus.<service>_cmd`` endpoint; a request is a msgpack map
``{"cmd": str, "args": map}``, the reply ``{"ok": true, "result": ...}`` or ``{"ok": false,
"error": str}`` (docs/contract.md, "Commands"). Every service answers ``ping`` and ``help``, and one
command per topic it publishes with the latest message of that topic (``bms_reader snapshot``,
``gps_reader fix``; a reader's ``*.link`` is also its ``status``). Commands are read-only: nothing
that changes the battery is reachable here, and so nothing from ThingsBoard RPC either.

    python -m common.command [--config FILE] [--timeout S] SERVICE CMD [key=value ...]

prints the result as JSON; exit 1 when the service does not answer or refuses (one line naming
it), 2 on a bad command line or config.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import msgspec

from common import bus as busmod
from common import config as configmod
from common import messages

Handler = Callable[[dict], Any]


class CommandError(Exception):
    """A command that did not succeed."""


class ServiceDown(CommandError):
    """The service did not answer: it is not running, or too busy."""


class CommandFailed(CommandError):
    """The service answered with an error."""


class Commands:
    """A service's table of commands, served from a thread of its own (the device loop may block on
    a serial read for a second; a command must not wait for it). Handlers run in that thread, so
    they read only what is safe there: the latest published messages, kept by ``keep``."""

    def __init__(self, service: str):
        self.service = service
        self.started = time.monotonic()
        self.latest: dict[str, messages.Data] = {}
        self.handlers: dict[str, tuple[Handler, str]] = {
            "ping": (self._ping, "the service's name, pid and uptime"),
            "help": (lambda args: {k: doc for k, (_, doc) in sorted(self.handlers.items())}, "these commands")}
        self.errors = 0

    def add(self, name: str, handler: Handler, doc: str) -> None:
        self.handlers[name] = (handler, doc)

    def add_topics(self) -> None:
        """One command per topic the service publishes, answering with its latest message."""
        for topic in messages.TOPICS.values():
            if topic.publisher == self.service:
                name = topic.name.split(".", 1)[1]
                self.add(name, self._latest(topic.name), f"the latest {topic.name} message")
                if name == "link" and "status" not in self.handlers:
                    self.add("status", self._latest(topic.name), f"the latest {topic.name} message")

    def keep(self, topic: str, seq: int, data: messages.Data) -> None:
        """The publisher's hook: remember the latest message of each topic (a dict store is atomic)."""
        self.latest[topic] = data

    def _latest(self, topic: str) -> Handler:
        def handler(args: dict) -> Any:
            data = self.latest.get(topic)
            if data is None:
                raise CommandError(f"no {topic} published yet")
            return msgspec.to_builtins(data)
        return handler

    def _ping(self, args: dict) -> dict:
        return {"service": self.service, "pid": os.getpid(), "uptime_s": round(time.monotonic() - self.started, 1)}

    def answer(self, body: bytes) -> bytes:
        """One reply for one request body; never raises (a bad request is answered and counted)."""
        try:
            request = msgpack.unpackb(body, raw=False)
        except (ValueError, msgpack.UnpackException):
            return self._error("the request is not msgpack")
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str) or \
                not isinstance(request.get("args", {}), dict):
            return self._error('a request is a map {"cmd": str, "args": map}')
        entry = self.handlers.get(request["cmd"])
        if entry is None:
            return self._error(f"unknown command {request['cmd']!r}; known: {', '.join(sorted(self.handlers))}")
        try:
            result = entry[0](request.get("args", {}))
        except CommandError as e:
            return self._error(str(e))
        except Exception as e:  # a handler's bug must not stop the service
            return self._error(f"{type(e).__name__}: {e}")
        return msgpack.packb({"ok": True, "result": result})

    def _error(self, text: str) -> bytes:
        self.errors += 1
        return msgpack.packb({"ok": False, "error": text})

    def serve(self, responder: busmod.Responder, stop: threading.Event) -> threading.Thread:
        def loop() -> None:
            try:
                while not stop.is_set():
                    responder.poll(self.answer, 0.2)
            finally:
                responder.close()
        thread = threading.Thread(target=loop, name="commands", daemon=True)
        thread.start()
        return thread


def call(endpoint: str, cmd: str, args: dict | None = None, timeout_s: float = 1.0, service: str = "the service") -> Any:
    """The result of ``cmd`` on the service at ``endpoint``; ServiceDown or CommandFailed."""
    try:
        raw = busmod.request(endpoint, msgpack.packb({"cmd": cmd, "args": args or {}}), timeout_s)
    except busmod.NoAnswer:
        raise ServiceDown(f"{service} is not answering on {endpoint} within {timeout_s:g} s (is it running?)") from None
    try:
        reply = msgpack.unpackb(raw, raw=False)
    except (ValueError, msgpack.UnpackException):
        raise CommandFailed(f"{service} sent a reply that is not msgpack") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise CommandFailed(f"{service}: {reply.get('error') if isinstance(reply, dict) else reply}")
    return reply.get("result")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.command", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("service", choices=configmod.COMMANDERS)
    parser.add_argument("cmd")
    parser.add_argument("args", nargs="*", metavar="key=value")
    opts = parser.parse_args(argv)
    if any("=" not in a for a in opts.args):
        parser.error("arguments are key=value")
    try:
        endpoint = configmod.load(opts.config).bus.command_endpoint(opts.service)
    except configmod.ConfigError as e:
        print(f"command: config error: {e}", file=sys.stderr)
        return 2
    args = {k: _value(v) for k, v in (a.split("=", 1) for a in opts.args)}
    try:
        result = call(endpoint, opts.cmd, args, opts.timeout, opts.service)
    except CommandError as e:
        print(f"command: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
