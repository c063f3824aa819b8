"""The earliest date this software can run at: no clock, GPS or system, is believed before it.

GPS receivers count weeks in ten bits, so every 1024 weeks (19.6 years: 1999-08-22, 2019-04-07,
2038-11-21) one whose firmware does not know better sends dates 1024 weeks in the past. gpsd's
rule, used here: a receiver's date before the software's build date is moved forward in
1024-week steps until it is not. The same floor keeps a Pi's clock that has not been set (no
real-time clock, no network yet) from stamping records in the past.

Raise DATE_FLOOR with each release (a release is never older than the code it ships).
"""

from __future__ import annotations

import datetime as dt

DATE_FLOOR = dt.date(2026, 12, 1)
GPS_ROLLOVER = dt.timedelta(weeks=1024)


def unroll(date: dt.date, floor: dt.date = DATE_FLOOR) -> tuple[dt.date, int]:
    """``date`` moved forward by whole 1024-week periods until it is not before ``floor``, and
    how many periods that took (0 for a date that was right)."""
    periods = 0
    while date < floor:
        date += GPS_ROLLOVER
        periods += 1
    return date, periods


def floor_timestamp(floor: dt.date = DATE_FLOOR) -> float:
    return dt.datetime.combine(floor, dt.time(tzinfo=dt.UTC)).timestamp()
