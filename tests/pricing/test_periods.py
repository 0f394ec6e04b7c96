"""Periods: how a day and a month are written, and the periods a moment has closed."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from pricing.periods import (
    DAY_PATTERN,
    MONTH_PATTERN,
    BusinessCalendar,
    day_before,
    is_month,
    midnight,
    month_before,
    month_days,
    parse_month,
)

UTC = dt.timezone.utc


@pytest.mark.parametrize("text", ["2026-01", "2026-12", "0001-09"])
def test_a_month_is_written_yyyy_mm(text):
    assert is_month(text) and re.fullmatch(MONTH_PATTERN, text)


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "2026-1", "26-11", "2026-11-01",
                                  " 2026-11", "2026-11\n", "", None, 202611])
def test_anything_else_is_not_a_month(text):
    assert not is_month(text)
    with pytest.raises(ValueError):
        parse_month(text)


def test_a_day_is_written_yyyy_mm_dd():
    assert re.fullmatch(DAY_PATTERN, "2026-02-28")
    assert not re.fullmatch(DAY_PATTERN, "2026-02-32")
    assert not re.fullmatch(DAY_PATTERN, "2026-02")


def test_a_month_runs_from_its_first_day_to_the_next_months():
    assert month_days("2026-11") == (dt.date(2026, 11, 1), dt.date(2026, 12, 1))
    assert month_days("2026-12") == (dt.date(2026, 12, 1), dt.date(2027, 1, 1))


def test_a_nightly_run_closes_yesterday_and_a_monthly_one_last_month():
    moment = dt.datetime(2027, 1, 1, 0, 20)
    assert day_before(moment) == "2026-12-31"
    assert month_before(moment) == "2026-12"
    assert month_before(dt.datetime(2026, 11, 30, 23, 59)) == "2026-10"


def test_midnight_is_the_first_instant_of_a_day_in_its_zone():
    assert midnight(dt.date(2026, 12, 1)) == dt.datetime(2026, 12, 1, tzinfo=UTC)
    assert midnight(dt.date(2026, 12, 1), BusinessCalendar("Asia/Shanghai").zone) == \
        dt.datetime(2026, 11, 30, 16, tzinfo=UTC)
    assert BusinessCalendar("Asia/Shanghai").start_of_day(dt.date(2026, 12, 1)) == \
        dt.datetime(2026, 11, 30, 16, tzinfo=UTC)
