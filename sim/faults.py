"""When a simulator injects a fault: every N events with the kinds in turn, or at random."""

from __future__ import annotations

import argparse
import random


def add_fault_arguments(parser: argparse.ArgumentParser, kinds: tuple[str, ...], unit: str) -> None:
    parser.add_argument("--fault", action="append", choices=kinds, default=[], help="inject this fault (repeatable)")
    parser.add_argument("--fault-every", type=int, default=5, help=f"one fault every N {unit}, kinds in turn")
    parser.add_argument("--fault-prob", type=float, default=None,
                        help=f"instead: each of the {unit} is faulty with this probability")
    parser.add_argument("--fault-limit", type=int, default=None, help="stop injecting after this many faults")
    parser.add_argument("--seed", type=int, default=1, help="random seed (faults, simulated values)")


class FaultPlan:
    def __init__(self, args: argparse.Namespace):
        self.kinds, self.every, self.prob, self.limit = args.fault, args.fault_every, args.fault_prob, args.fault_limit
        self.rng = random.Random(args.seed)
        self.events = 0
        self.injected = 0

    def next(self) -> str | None:
        """The fault for the next event, or None."""
        if not self.kinds or (self.limit is not None and self.injected >= self.limit):
            return None
        self.events += 1
        if self.prob is not None:
            kind = self.rng.choice(self.kinds) if self.rng.random() < self.prob else None
        elif self.events % self.every:
            kind = None
        else:
            kind = self.kinds[(self.events // self.every - 1) % len(self.kinds)]
        self.injected += kind is not None
        return kind
