"""Benchmarks. Each module has ``run() -> list[Result]`` and can be run alone (python -m bench.NAME)."""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    """One measured figure and the limit it is held against.

    ``kind`` is "max" when the figure must stay at or under the limit (time, CPU, memory) and
    "min" when it must reach it (throughput). ``target`` is the ratio measured/limit that is held:
    1.0 for a plain limit, 1.10 for "within 10 % of the wire time".
    """

    name: str
    measured: float
    limit: float
    unit: str
    kind: str = "max"
    target: float | None = 1.0  # None: shown for information, held against nothing

    @property
    def ratio(self) -> float:
        return self.measured / self.limit

    @property
    def ok(self) -> bool:
        if self.target is None:
            return True
        return self.ratio <= self.target if self.kind == "max" else self.ratio >= self.target


def percentile(values: list[float], pct: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


def table(results: list[Result]) -> str:
    rows = [("benchmark", "measured", "limit", "ratio", "target", "")]
    for r in results:
        bound = "<=" if r.kind == "max" else ">="
        target = "(info)" if r.target is None else f"{bound} {r.target:g}"
        rows.append((r.name, f"{r.measured:.4g} {r.unit}", f"{r.limit:.4g} {r.unit}", f"{r.ratio:.3f}",
                     target, "ok" if r.ok else "MISSED"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def report(results: list[Result]) -> None:
    """Print the table; exit 1 if any figure missed its limit."""
    print(table(results), flush=True)
    if not all(r.ok for r in results):
        sys.exit(1)
