"""The business calendar: which day, month and fiscal year an instant belongs to.

The marketplace keeps every timestamp in UTC, but its days, months and fiscal years are those
of one business time zone (``BUSINESS_TIMEZONE``, Asia/Shanghai by default): a call made at
00:30 on 1 December in Beijing is December's, though it is still 30 November in UTC. Every
period the marketplace closes (a usage day, a postpaid month, a statement period, a budget
month or year) is named by its local date and bounded by the UTC instants where it starts and
ends in that zone, so queries compare stored UTC timestamps with UTC bounds.

Periods are named ``YYYY-MM-DD`` (a day) or ``YYYY-MM`` (a month); a fiscal year is the calendar
year in the zone.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.timezone.utc
DEFAULT_TIMEZONE = "Asia/Shanghai"
# How a period is written: the one pattern every form, command, query and job checks against.
MONTH_PATTERN = r"(\d{4})-(0[1-9]|1[0-2])"
DAY_PATTERN = MONTH_PATTERN + r"-(0[1-9]|[12]\d|3[01])"
MONTH = re.compile(MONTH_PATTERN)


def month_name(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


def is_month(text: object) -> bool:
    """Whether ``text`` is a month written ``YYYY-MM``."""
    return isinstance(text, str) and MONTH.fullmatch(text) is not None


def parse_month(period: str) -> tuple[int, int]:
    """``"2026-11"`` as (2026, 11); anything else is a ``ValueError``."""
    found = MONTH.fullmatch(period) if isinstance(period, str) else None
    if found is None:
        raise ValueError(f"not a month written YYYY-MM: {period!r}")
    return int(found.group(1)), int(found.group(2))


def month_days(period: str) -> tuple[dt.date, dt.date]:
    """The first day of the month ``period`` and the first day after it."""
    return dt.date(*parse_month(period), 1), dt.date(*parse_month(next_month(period)), 1)


def next_month(period: str) -> str:
    year, month = parse_month(period)
    return month_name(year + month // 12, month % 12 + 1)


def previous_month(period: str) -> str:
    year, month = parse_month(period)
    return month_name(year - (month == 1), (month - 2) % 12 + 1)


def add_months(anchor: dt.date, months: int) -> dt.date:
    """Return ``anchor`` moved by ``months``, clamped to the month's last day.

    Jan 31 + 1 month is Feb 28 (Feb 29 in a leap year). Periods are always
    computed from the subscription's anchor date, never chained from the
    previous period's end, so a plan started on Jan 31 renews on Feb 28,
    Mar 31, Apr 30... instead of drifting to the 28th.
    """
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month0 = divmod(index, 12)
    last_day = calendar.monthrange(year, month0 + 1)[1]
    return dt.date(year, month0 + 1, min(anchor.day, last_day))


def day_before(moment: dt.datetime) -> str:
    """The day before ``moment``'s own date, ``YYYY-MM-DD``: the day a nightly run closes
    (``moment`` is already wall time in the zone whose days are meant)."""
    return (moment.date() - dt.timedelta(days=1)).isoformat()


def month_before(moment: dt.datetime) -> str:
    """The month before ``moment``'s own month, ``YYYY-MM``: the month a monthly run closes."""
    return previous_month(month_name(moment.year, moment.month))


def midnight(day: dt.date, zone: dt.tzinfo = UTC) -> dt.datetime:
    """The first instant of ``day`` in ``zone``, in UTC: where a period ending on ``day``
    (exclusive) stops."""
    return dt.datetime.combine(day, dt.time(), tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class BusinessCalendar:
    """Days, months and fiscal years of one IANA time zone, bounded by UTC instants."""

    timezone: str = DEFAULT_TIMEZONE
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"not an IANA time zone: {self.timezone!r}") from None
        object.__setattr__(self, "zone", zone)

    # An instant's place on the calendar -------------------------------------------------------

    def local(self, instant: dt.datetime) -> dt.datetime:
        """``instant`` as wall time in the business zone (a naive one is refused)."""
        if instant.tzinfo is None:
            raise ValueError("naive datetime given where an aware instant is required")
        return instant.astimezone(self.zone)

    def day_of(self, instant: dt.datetime) -> dt.date:
        return self.local(instant).date()

    def month_of(self, instant: dt.datetime) -> str:
        local = self.local(instant)
        return month_name(local.year, local.month)

    def year_of(self, instant: dt.datetime) -> int:
        """The fiscal year of ``instant``: its calendar year in the business zone."""
        return self.local(instant).year

    # A period's bounds, as UTC instants (the end is exclusive) ------------------------------

    def start_of_day(self, day: dt.date) -> dt.datetime:
        return midnight(day, self.zone)

    def day_bounds(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        return self.start_of_day(day), self.start_of_day(day + dt.timedelta(days=1))

    def month_bounds(self, period: str) -> tuple[dt.datetime, dt.datetime]:
        first, after = month_days(period)
        return self.start_of_day(first), self.start_of_day(after)

    def year_bounds(self, year: int) -> tuple[dt.datetime, dt.datetime]:
        return self.start_of_day(dt.date(year, 1, 1)), self.start_of_day(dt.date(year + 1, 1, 1))

    # The periods a moment has closed ---------------------------------------------------------

    def previous_day(self, instant: dt.datetime) -> dt.date:
        """The last day that has ended at ``instant``."""
        return self.day_of(instant) - dt.timedelta(days=1)

    def previous_month(self, instant: dt.datetime) -> str:
        """The last month that has ended at ``instant``."""
        return previous_month(self.month_of(instant))
