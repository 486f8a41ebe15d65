"""Statistics periods: days, months and years in a time zone, as epoch-second bounds.

A school reads its calls per day, month and year in its own time: a day is local
midnight to local midnight (23 or 25 hours across a daylight-saving change), a month
the 1st to the 1st, a year the 1st of January to the next. ``periods`` turns a range of
dates into those bounds; ``api.records.stats`` counts the records in each with one range
scan per period on the records' (tenant, time) index.
"""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal
from zoneinfo import ZoneInfo

from api.records import Bucket, StatsRow

__all__ = ["MAX_PERIODS", "Period", "default_range", "figures", "periods"]

Period = Literal["day", "month", "year"]
#: Most periods one answer holds (about 2.7 years of days).
MAX_PERIODS: Final = 1000


def _floor(day: dt.date, period: Period) -> dt.date:
    if period == "month":
        return day.replace(day=1)
    if period == "year":
        return day.replace(month=1, day=1)
    return day


def _next(day: dt.date, period: Period) -> dt.date:
    if period == "day":
        return day + dt.timedelta(days=1)
    if period == "month":
        return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return day.replace(year=day.year + 1, month=1, day=1)


def _label(day: dt.date, period: Period) -> str:
    if period == "month":
        return f"{day.year:04d}-{day.month:02d}"
    if period == "year":
        return f"{day.year:04d}"
    return day.isoformat()


def default_range(period: Period, today: dt.date) -> tuple[dt.date, dt.date]:
    """The range shown when none is asked for: the last 30 days, 12 months or 5 years,
    the current one included."""
    until = _next(_floor(today, period), period)
    if period == "day":
        return until - dt.timedelta(days=30), until
    if period == "month":
        since = _floor(today, "month")
        for _ in range(11):
            since = (since - dt.timedelta(days=1)).replace(day=1)
        return since, until
    return dt.date(today.year - 4, 1, 1), until


def periods(
    period: Period, since: dt.date, until: dt.date, zone: ZoneInfo
) -> tuple[dt.date, dt.date, list[Bucket]]:
    """The periods from the one holding ``since`` to the one before ``until`` (or holding
    it, when it is not a period's first day), in ``zone``: (first day, first day after,
    buckets). ValueError when there would be more than MAX_PERIODS."""
    start = _floor(since, period)
    end = until if _floor(until, period) == until else _next(_floor(until, period), period)
    out: list[Bucket] = []
    day = start
    while day < end:
        following = _next(day, period)
        lo = dt.datetime.combine(day, dt.time(), zone).timestamp()
        hi = dt.datetime.combine(following, dt.time(), zone).timestamp()
        out.append(Bucket(_label(day, period), lo, hi))
        if len(out) > MAX_PERIODS:
            raise ValueError(f"more than {MAX_PERIODS} periods: ask for a shorter range")
        day = following
    return start, end, out


def figures(row: StatsRow) -> dict[str, float | int | str | None]:
    """A counted row with its ratios: ASR, ACD (seconds), minutes."""
    return {
        "period": row.period,
        "group": row.group,
        "calls": row.calls,
        "answered": row.answered,
        "asr": round(row.answered / row.calls, 4) if row.calls else None,
        "acd_seconds": round(row.duration_ms / 1000 / row.answered, 3) if row.answered else None,
        "minutes": round(row.duration_ms / 60000, 2),
        "sms_received": row.sms_received,
        "sms_sent": row.sms_sent,
    }
