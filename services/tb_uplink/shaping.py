"""From the budget plan to what goes on the wire: records split to fit a message, rows thinned.

The main thread makes the records, so it knows their keys: :class:`Shaper` plans the cadence
(budget.py) from the first record and again when the key count per group, the interval or a
remote cadence setting changes. The sender thread calls :meth:`Shaper.shape` on the rows it is
about to publish; the planner's thinner is swapped whole, so no lock is needed.

ThingsBoard counts a message's data points against every ``telemetryDataPoints`` window, and a
message with more points than the smallest window holds is refused every time (Cloud: 100 points a
second). A record with more keys than that (four 16-cell packs: about 217) is stored as several
rows with the same timestamp, each within the window; ThingsBoard merges them by timestamp, and
the thinner decides once per timestamp, so the parts of a record carry the same groups.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from services.tb_uplink import budget, limits

log = logging.getLogger("tb_uplink.budget")
LIVE_SHARE = 0.7  # of the plan's hourly limit for live records; the rest of the buckets' 0.8 drains a backlog


def split(values: dict, max_points: int | None) -> list[dict]:
    """``values`` in parts of at most ``max_points`` keys, the most important groups first."""
    if max_points is None or len(values) <= max_points:
        return [values]
    rank = {g: i for i, g in enumerate(budget.GROUP_NAMES)}
    keys = sorted(values, key=lambda k: rank.get(budget.group_of(k) or budget.CORE, 0))
    return [{k: values[k] for k in keys[i:i + max_points]} for i in range(0, len(keys), max_points)]


class Shaper:
    def __init__(self, plan: budget.Plan, drive_hours_per_month: float):
        self.plan, self.drive_hours_per_month = plan, drive_hours_per_month
        self.cadence: budget.Cadence | None = None
        self.backlog: budget.Cadence | None = None
        self._thinner: budget.Thinner | None = None
        self._planned_for: tuple | None = None
        self._pending: list[tuple] = []
        # Ids of rows the server is getting only part of (or nothing of): their full records are
        # kept in the outbox when acknowledged. Only the sender thread touches it.
        self.reduced: set[int] = set()

    def plan_for(self, values: Mapping, interval_s: float, periods_s: Mapping[str, float | None]) -> bool:
        """Plan again if what the plan depends on changed; True when it did."""
        counts = budget.count_points(values)
        key = (tuple(sorted(counts.items())), interval_s, tuple(sorted(periods_s.items())))
        if key == self._planned_for:
            return False
        self._planned_for = key
        cadence = budget.plan_cadence(self.plan, counts, interval_s, share=LIVE_SHARE,
                                      drive_hours_per_month=self.drive_hours_per_month)
        cadence = budget.with_periods(cadence, periods_s)
        self.cadence = cadence
        # The live stream is planned within LIVE_SHARE; the backlog gets the rest of what the rate
        # limiter lets through (limits.MARGIN), not only the rounding the live plan leaves.
        self.backlog = budget.backlog_cadence(cadence, budget.spare_points_per_hour(cadence, limits.MARGIN))
        self._thinner = None if cadence.unlimited else budget.Thinner(cadence, self.backlog)
        log.info("data-point budget: %s", cadence.describe())
        if self._thinner is not None:
            log.info("a backlog after an outage: %s", self.backlog.describe())
        return True

    def shape(self, rows: list, live: bool) -> tuple[list[str], int]:
        """Payload parts and their data points for ``rows`` (delivery.Shape)."""
        thinner = self._thinner
        if thinner is None:
            return [r.payload for r in rows], sum(r.points for r in rows)
        parts, points = [], 0
        stream = "live" if live else "backlog"
        self._pending = []
        for row in rows:
            record = json.loads(row.payload)
            # A look only: the groups are marked sent by commit(), once the message may go.
            values = thinner.thin(record["ts"], record["values"], stream, commit=False)
            self._pending.append((thinner, record["ts"], record["values"], stream, row.id,
                                  len(values) < len(record["values"])))
            if values:
                parts.append(json.dumps({"ts": record["ts"], "values": values}, separators=(",", ":")))
                points += len(values)
        return parts, points

    def commit(self) -> None:
        """The rows last shaped are being published (or deleted as nothing of them is due)."""
        for thinner, ts, values, stream, row_id, reduced in self._pending:
            thinner.thin(ts, values, stream, commit=True)
            if reduced:
                self.reduced.add(row_id)
            else:  # sent again whole after a lost session: nothing to keep
                self.reduced.discard(row_id)
        self._pending = []
