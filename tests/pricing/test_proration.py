"""Proration by day: upgrade, downgrade, cancellation, first and last day, period changes."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing import (
    BillingPeriod,
    CurrencyMismatch,
    InvalidOffer,
    InvalidPeriod,
    Money,
    SubscriptionPlan,
    UnitPrice,
    cancel,
    change_plan,
    days_remaining,
    prorate,
)


def cny(amount: str) -> Money:
    return Money(amount, "CNY")


def plan(code: str, price: str, period: str = "month", included: int = 1_000_000) -> SubscriptionPlan:
    return SubscriptionPlan(code, period, Money(price, "CNY"), included, UnitPrice("3", "CNY"))


A = plan("A", "99.00")
B = plan("B", "199.00")
YEARLY = plan("Y", "999.00", "year", 12_000_000)
JANUARY = BillingPeriod(date(2024, 1, 1), date(2024, 2, 1))  # 31 days
FEBRUARY = BillingPeriod(date(2024, 2, 1), date(2024, 3, 1))  # 29 days, leap year


@pytest.mark.parametrize(
    "case, current, new, period, effective, lines, total, remaining, included",
    [
        # The docstring example: 12 of 31 days left.
        ("upgrade mid-period", A, B, JANUARY, date(2024, 1, 20), ["-38.32", "77.03"], "38.71", 12, 387_096),
        ("downgrade mid-period", B, A, JANUARY, date(2024, 1, 20), ["-77.03", "38.32"], "-38.71", 12, 387_096),
        ("upgrade on the first day", A, B, JANUARY, date(2024, 1, 1), ["-99.00", "199.00"], "100.00", 31, 1_000_000),
        # 99 / 31 = 3.1935 -> 3.19; 199 / 31 = 6.4193 -> 6.42
        ("upgrade on the last day", A, B, JANUARY, date(2024, 1, 31), ["-3.19", "6.42"], "3.23", 1, 32_258),
        # 15 of 29 days: 99 x 15 / 29 = 51.2069 -> 51.21; 199 x 15 / 29 = 102.931 -> 102.93
        ("upgrade in a leap February", A, B, FEBRUARY, date(2024, 2, 15), ["-51.21", "102.93"], "51.72", 15, 517_241),
    ],
)
def test_plan_changes(case, current, new, period, effective, lines, total, remaining, included):
    result = change_plan(current, new, period, effective)
    assert [format(l.amount.amount, "f") for l in result.lines] == lines, case
    assert result.total == cny(total)
    assert result.days_remaining == remaining and result.days_in_period == period.days
    assert result.period == period
    assert result.included_tokens == included
    assert [l.code for l in result.lines] == ["proration_credit", "proration_charge"]


def test_changing_to_a_plan_with_another_period_starts_a_new_period():
    result = change_plan(A, YEARLY, JANUARY, date(2024, 1, 20))
    assert [format(l.amount.amount, "f") for l in result.lines] == ["-38.32", "999.00"]
    assert result.total == cny("960.68")
    assert result.period == BillingPeriod(date(2024, 1, 20), date(2025, 1, 20))
    assert result.included_tokens == 12_000_000


@pytest.mark.parametrize(
    "case, period, effective, credit",
    [
        ("cancel mid-period", JANUARY, date(2024, 1, 20), "-38.32"),
        ("cancel on the first day", JANUARY, date(2024, 1, 1), "-99.00"),
        ("cancel on the last day", JANUARY, date(2024, 1, 31), "-3.19"),
        ("cancel in a leap February", FEBRUARY, date(2024, 2, 29), "-3.41"),  # 99 / 29 = 3.4138
    ],
)
def test_cancellation_credits_the_unused_days(case, period, effective, credit):
    result = cancel(A, period, effective)
    assert [format(l.amount.amount, "f") for l in result.lines] == [credit], case
    assert result.total == cny(credit)
    assert result.lines[0].quantity == -result.days_remaining


def test_prorate_rounds_a_half_up_once():
    two_days = BillingPeriod(date(2024, 1, 1), date(2024, 1, 3))
    assert prorate(cny("0.01"), two_days, date(2024, 1, 2)) == cny("0.01")  # 0.005 -> 0.01
    assert prorate(cny("0.01"), two_days, date(2024, 1, 1)) == cny("0.01")


@pytest.mark.parametrize(
    "effective",
    [date(2024, 2, 1), date(2023, 12, 31), datetime(2024, 1, 20, 12, 0)],
)
def test_effective_date_must_be_a_day_inside_the_period(effective):
    with pytest.raises(InvalidPeriod) as caught:
        days_remaining(JANUARY, effective)
    assert caught.value.field == "effective_date"


def test_plan_change_errors():
    with pytest.raises(CurrencyMismatch) as caught:
        change_plan(A, SubscriptionPlan("U", "month", Money("9", "USD"), 1, UnitPrice("1", "USD")),
                    JANUARY, date(2024, 1, 5))
    assert caught.value.field == "plan"
    with pytest.raises(InvalidOffer) as caught:
        change_plan(A, A, JANUARY, date(2024, 1, 5))
    assert caught.value.field == "plan"
    with pytest.raises(InvalidPeriod) as caught:
        BillingPeriod(date(2024, 1, 2), date(2024, 1, 2))
    assert caught.value.field == "period_end"


@pytest.mark.parametrize(
    "anchor, period, day, start, end",
    [
        (date(2024, 1, 31), "month", date(2024, 1, 31), date(2024, 1, 31), date(2024, 2, 29)),
        (date(2024, 1, 31), "month", date(2024, 2, 29), date(2024, 2, 29), date(2024, 3, 31)),
        (date(2024, 1, 31), "month", date(2024, 3, 30), date(2024, 2, 29), date(2024, 3, 31)),
        (date(2024, 1, 31), "month", date(2024, 3, 31), date(2024, 3, 31), date(2024, 4, 30)),
        (date(2024, 11, 30), "quarter", date(2025, 3, 1), date(2025, 2, 28), date(2025, 5, 30)),
        (date(2024, 2, 29), "year", date(2026, 3, 1), date(2026, 2, 28), date(2027, 2, 28)),
    ],
)
def test_periods_are_counted_from_the_anchor(anchor, period, day, start, end):
    assert BillingPeriod.containing(anchor, period, day) == BillingPeriod(start, end)


@settings(max_examples=150, deadline=None)
@given(
    price_minor=st.integers(1, 10**9),
    start=st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 1, 1)),
    period=st.sampled_from(["month", "quarter", "year"]),
    offset=st.integers(0, 400),
)
def test_credit_mirrors_charge_and_never_exceeds_the_price(price_minor, start, period, offset):
    current = SubscriptionPlan("x", period, Money.from_minor(price_minor, "CNY"), 0, UnitPrice("1", "CNY"))
    bounds = BillingPeriod.starting(start, period)
    effective = date.fromordinal(start.toordinal() + offset % bounds.days)
    credit = cancel(current, bounds, effective).total
    assert credit == -prorate(current.price, bounds, effective)
    assert -current.price <= credit < Money.zero("CNY") or credit.is_zero()
    later = date.fromordinal(min(effective.toordinal() + 1, bounds.end.toordinal() - 1))
    assert cancel(current, bounds, later).total >= credit  # fewer days left, smaller credit
