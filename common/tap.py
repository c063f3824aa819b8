"""Print bus messages as JSON lines: the smallest viewer that can take the GUI's place.

    python -m common.tap [--config PATH] [--topic PREFIX ...] [--count N] [--timeout S]

Each line is ``{"topic": ..., "src": ..., "seq": ..., "ts": ..., "data": {...}}`` with unknown
values as null, ready for ``jq``. It connects to every publisher in the config's ``bus:``
section that publishes a requested topic. Exit status: 0 when --count messages were printed
or --timeout ran out without a --count, 1 when --count was not reached before --timeout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import msgspec

from common.service import Service, run

_POLL_S = 0.2


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", action="append", default=None, metavar="PREFIX",
                        help="topic or prefix to print (repeatable; default: all)")
    parser.add_argument("--count", type=int, default=None, metavar="N", help="stop after N messages")
    parser.add_argument("--timeout", type=float, default=None, metavar="S", help="stop after S seconds")


def main(svc: Service) -> None:
    args = svc.args
    sub = svc.subscriber(args.topic or [""])
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    printed = 0
    out = sys.stdout.buffer
    while not svc.stopping and (args.count is None or printed < args.count):
        remaining = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
        if remaining <= 0:
            break
        msg = sub.recv(remaining)
        if msg is None:
            continue
        line = {"topic": msg.topic, "src": msg.src, "seq": msg.seq, "ts": msg.ts, "data": msg.data}
        try:
            out.write(msgspec.json.encode(line) + b"\n")
            out.flush()
        except BrokenPipeError:
            # The reader (head, jq) went away: stop quietly, also at interpreter exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        printed += 1
    if args.count is not None and printed < args.count and not svc.stopping:
        svc.log.warning("got %d of %d messages before the timeout", printed, args.count)
        raise SystemExit(1)


if __name__ == "__main__":
    run("tap", main, add_arguments=_arguments, quiet=True)
