"""Proration by day for subscription upgrades, downgrades and cancellations.

Convention
----------
* A billing period runs from its start date (inclusive) to its end date
  (exclusive); its length is counted in days, so a month is 28 to 31 days
  and a year 365 or 366. Periods are counted from the subscription's anchor
  date (see ``BillingPeriod.containing``): a plan started on Jan 31 renews on
  Feb 29 (leap year), Mar 31, Apr 30...
* A change takes effect at the start of its effective date, which therefore
  counts as a remaining day: remaining = end - effective date, in days. A
  change on the first day leaves the whole period; on the last day, one day.
  The effective date must fall inside the period (end date excluded: that is
  the next period's first day).
* Each prorated amount is ``price * days remaining / days in period``,
  rounded once, half-up, to the minor unit (it is a ``LineItem`` with
  quantity = days, per = days in period). A credit is the negation of the
  matching charge, so crediting and re-charging the same days nets to zero.

Worked example: plan A is CNY 99.00 a month, plan B CNY 199.00 a month;
period 2024-01-01 to 2024-02-01 (31 days); upgrade on 2024-01-20 leaves 12
days::

    credit  unused plan A: -99.00 x 12 / 31 = -38.3225... -> -38.32
    charge  plan B:        199.00 x 12 / 31 =  77.0322... ->  77.03
                                               total due  ->  38.71

A downgrade is the same computation and nets to a credit for the buyer;
cancelling on 2024-01-20 credits -38.32 and charges nothing.

If the new plan has a *different* period (monthly to yearly), the remainder
of the current plan is credited as above and the new plan starts a full new
period on the effective date, charged in full.

The new plan's included tokens for the rest of the period are prorated the
same way but rounded *down* (tokens are not money and a fraction of a token
cannot be used): 1,000,000 x 12 / 31 -> 387,096.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from .periods import add_months
from ._fields import parse_enum
from .errors import CurrencyMismatch, InvalidOffer, InvalidPeriod
from .money import Money, UnitPrice
from .offers import Period, SubscriptionPlan
from .rating import LineItem

__all__ = ["BillingPeriod", "Proration", "days_remaining", "prorate", "change_plan", "cancel"]


def _date(value: Any, field: str) -> date:
    # datetime is a subclass of date; a time of day would silently be dropped.
    if not isinstance(value, date) or type(value).__name__ == "datetime":
        raise InvalidPeriod(f"{field} must be a date (no time of day)", field=field)
    return value


@dataclass(frozen=True)
class BillingPeriod:
    """The days a subscription fee pays for: ``start`` <= day < ``end``."""

    start: date
    end: date

    def __post_init__(self) -> None:
        _date(self.start, "period_start")
        _date(self.end, "period_end")
        if self.end <= self.start:
            raise InvalidPeriod("the period must end after it starts", field="period_end")

    @classmethod
    def starting(cls, start: date, period: Period | str) -> "BillingPeriod":
        """The period of kind ``period`` that begins on ``start``."""
        period = parse_enum(Period, period, "period", InvalidPeriod)
        return cls(start, period.end(_date(start, "period_start")))

    @classmethod
    def containing(cls, anchor: date, period: Period | str, day: date) -> "BillingPeriod":
        """The period, counted from the subscription's ``anchor``, that contains ``day``.

        Rule: the n-th period is [anchor + n periods, anchor + n+1 periods),
        each computed from the anchor so month ends do not drift.
        """
        period = parse_enum(Period, period, "period", InvalidPeriod)
        _date(anchor, "anchor")
        _date(day, "effective_date")
        if day < anchor:
            raise InvalidPeriod("the date is before the subscription started", field="effective_date")
        months = (day.year - anchor.year) * 12 + (day.month - anchor.month)
        n = max(0, months // period.months - 1)
        while add_months(anchor, (n + 1) * period.months) <= day:
            n += 1
        return cls(add_months(anchor, n * period.months), add_months(anchor, (n + 1) * period.months))

    @property
    def days(self) -> int:
        """Days in the period (end excluded)."""
        return (self.end - self.start).days

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form: money as decimal strings, never floats."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def days_remaining(period: BillingPeriod, effective: date) -> int:
    """Days from ``effective`` (included) to the end of ``period``.

    Rule: ``effective`` must be inside the period (field ``effective_date``).
    """
    _date(effective, "effective_date")
    if not (period.start <= effective < period.end):
        raise InvalidPeriod(
            f"{effective.isoformat()} is outside the period {period.start.isoformat()} "
            f"to {period.end.isoformat()} (end excluded)",
            field="effective_date",
        )
    return (period.end - effective).days


def prorate(price: Money, period: BillingPeriod, effective: date) -> Money:
    """The share of ``price`` for the days left from ``effective``.

    Rule: price * days remaining / days in period, rounded once, half-up.
    """
    return UnitPrice.of(price).total(days_remaining(period, effective), period.days)


@dataclass(frozen=True)
class Proration:
    """Lines for a mid-period change; a negative total is owed to the buyer.

    ``period`` is the period the new plan runs in (for a cancellation, the
    cancelled period); ``included_tokens`` is the new plan's allowance for it.
    """

    lines: tuple[LineItem, ...]
    currency: str
    days_remaining: int
    days_in_period: int
    period: BillingPeriod
    included_tokens: int = 0

    @property
    def total(self) -> Money:
        """The sum of the amounts, in the currency."""
        return Money.sum((line.amount for line in self.lines), self.currency)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: money as decimal strings, never floats."""
        return {
            "lines": [line.to_dict() for line in self.lines],
            "currency": self.currency,
            "days_remaining": self.days_remaining,
            "days_in_period": self.days_in_period,
            "period": self.period.to_dict(),
            "included_tokens": self.included_tokens,
            "total": self.total.to_dict(),
        }


def _credit(plan: SubscriptionPlan, period: BillingPeriod, remaining: int) -> LineItem:
    return LineItem(
        code="proration_credit",
        description=f"unused {remaining} of {period.days} days of {plan.code}",
        quantity=-remaining,
        unit_price=UnitPrice.of(plan.price),
        per=period.days,
    )


def change_plan(
    current: SubscriptionPlan, new: SubscriptionPlan, period: BillingPeriod, effective: date
) -> Proration:
    """Upgrade or downgrade mid-period: credit the old plan's unused days,
    charge the new plan's.

    Rule: same period kind -> the new plan is prorated to the current period
    end; different kind -> it starts a full new period on ``effective``.
    """
    if not isinstance(current, SubscriptionPlan) or not isinstance(new, SubscriptionPlan):
        raise InvalidOffer("both plans must be subscription plans", field="plan")
    if new.currency != current.currency:
        raise CurrencyMismatch(
            f"cannot switch from a {current.currency} plan to a {new.currency} plan", field="plan"
        )
    if new == current:
        raise InvalidOffer("the buyer is already on this plan", field="plan")
    remaining = days_remaining(period, effective)
    lines = [_credit(current, period, remaining)]
    if new.period is current.period:
        lines.append(
            LineItem(
                code="proration_charge",
                description=f"{remaining} of {period.days} days of {new.code}",
                quantity=remaining,
                unit_price=UnitPrice.of(new.price),
                per=period.days,
            )
        )
        new_period = period
        included = new.included_tokens * remaining // period.days
    else:
        new_period = BillingPeriod.starting(effective, new.period)
        lines.append(
            LineItem(
                code="subscription",
                description=f"{new.code}, one {new.period.value} from {effective.isoformat()}",
                quantity=1,
                unit_price=UnitPrice.of(new.price),
            )
        )
        included = new.included_tokens
    return Proration(
        lines=tuple(lines),
        currency=current.currency,
        days_remaining=remaining,
        days_in_period=period.days,
        period=new_period,
        included_tokens=included,
    )


def cancel(plan: SubscriptionPlan, period: BillingPeriod, effective: date) -> Proration:
    """Cancel mid-period: credit the unused days of ``plan``.

    Rule: the effective day counts as unused; first day -> full credit,
    last day -> one day's credit.
    """
    if not isinstance(plan, SubscriptionPlan):
        raise InvalidOffer("only subscription plans can be cancelled", field="plan")
    remaining = days_remaining(period, effective)
    return Proration(
        lines=(_credit(plan, period, remaining),),
        currency=plan.currency,
        days_remaining=remaining,
        days_in_period=period.days,
        period=period,
        included_tokens=0,
    )
