"""Calendar arithmetic for billing periods (private to pricing)."""

from __future__ import annotations

import calendar
from datetime import date


def add_months(anchor: date, months: int) -> date:
    """Return ``anchor`` moved by ``months``, clamped to the month's last day.

    Jan 31 + 1 month is Feb 28 (Feb 29 in a leap year). Periods are always
    computed from the subscription's anchor date, never chained from the
    previous period's end, so a plan started on Jan 31 renews on Feb 28,
    Mar 31, Apr 30... instead of drifting to the 28th.
    """
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month0 = divmod(index, 12)
    last_day = calendar.monthrange(year, month0 + 1)[1]
    return date(year, month0 + 1, min(anchor.day, last_day))
