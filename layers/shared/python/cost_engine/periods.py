"""Calendar periods (UTC) that money limits count over: a day, an ISO week, a month, a quarter, a year.

Each period has a key that names it (`2026-12`, `2026-Q4`, `2026-W49`, `2026-12-03`, `2026`) and
bounds: it starts at its first instant and ends where the next one starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


@dataclass(frozen=True)
class PeriodSpan:
    kind: Period
    key: str
    start: datetime
    end: datetime

    def previous(self) -> PeriodSpan:
        return period_of(self.start - timedelta(microseconds=1), self.kind)


def _start(moment: datetime, kind: Period) -> datetime:
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    match kind:
        case Period.DAY:
            return day
        case Period.WEEK:
            return day - timedelta(days=day.weekday())
        case Period.MONTH:
            return day.replace(day=1)
        case Period.QUARTER:
            return day.replace(month=3 * ((day.month - 1) // 3) + 1, day=1)
        case Period.YEAR:
            return day.replace(month=1, day=1)


def _next_start(start: datetime, kind: Period) -> datetime:
    match kind:
        case Period.DAY:
            return start + timedelta(days=1)
        case Period.WEEK:
            return start + timedelta(weeks=1)
        case Period.MONTH | Period.QUARTER:
            months = 1 if kind == Period.MONTH else 3
            index = start.month - 1 + months
            return start.replace(year=start.year + index // 12, month=index % 12 + 1)
        case Period.YEAR:
            return start.replace(year=start.year + 1)


def _key(start: datetime, kind: Period) -> str:
    match kind:
        case Period.DAY:
            return start.strftime("%Y-%m-%d")
        case Period.WEEK:
            year, week, _ = start.isocalendar()
            return f"{year}-W{week:02d}"
        case Period.MONTH:
            return start.strftime("%Y-%m")
        case Period.QUARTER:
            return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
        case Period.YEAR:
            return str(start.year)


def period_of(moment: datetime, kind: Period) -> PeriodSpan:
    """The period of `kind` that `moment` falls in (times are taken in UTC)."""
    start = _start(moment.astimezone(UTC), kind)
    return PeriodSpan(kind, _key(start, kind), start, _next_start(start, kind))
