"""Budget guards on metered calls: a postpaid call is committed on the buyer's API budget line
before it is charged, or refused.

The metering (``billing.metering.charge``, ``billing.metering.usage``) calls ``commit_usage``
with each postpaid amount before it charges the credit line: the amount is committed on the
``default_for_api`` line of the buyer's budget for the business year and currency, by the
conditional UPDATE of ``billing.budgets.lines.commit_amount``, so concurrent calls never
overspend a "block" line; one that would is refused 402 ``budget_line_exhausted``, naming the
line. A "warn" line takes every call. Without such a line the call is not bounded by a budget.

``USAGE_HEADROOM`` is what those guards would still let postpaid calls commit, read with the
rest of what a key can still spend (``tokens_available``) in one round trip.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from billing.budgets.lines import check_thresholds, commit_amount, default_api_line, money_text
from billing.errors import PaymentRequired
from billing.models.budgets import Budget, BudgetLine
from market.core.db import business_calendar, utcnow
from pricing.money import Money


def commit_usage(session: Session, organization_id: int, dataset_id: int, amount: Money) -> None:
    """Commit a postpaid call's amount on the default API line, refusing it (402, naming the
    line) when a block line has not enough left."""
    if not amount.is_positive():
        return
    line = default_api_line(session, organization_id, business_calendar(session).year_of(utcnow()),
                            amount.currency)
    if line is None:
        return
    block = line.budget.enforcement == "block"
    if not commit_amount(session, line, amount.minor, block=block):
        currency = line.budget.currency
        raise PaymentRequired(
            f"The budget line {line.code} ({line.name}) for API usage has "
            f"{money_text(max(line.remaining_minor, 0), currency)} left; this call costs "
            f"{money_text(amount.minor, currency)}. Ask for the line to be increased.",
            field="budget_line", code="budget_line_exhausted")
    check_thresholds(session, line)


# What ``commit_usage`` would still let postpaid calls commit (minor units; NULL when no "block"
# line for API usage bounds them), as a scalar subquery over :org, :year and :currency.
USAGE_HEADROOM = (
    select(BudgetLine.approved_minor - BudgetLine.committed_minor - BudgetLine.spent_minor)
    .join(Budget).where(Budget.organization_id == bindparam("org"),
                        Budget.fiscal_year == bindparam("year"),
                        Budget.currency == bindparam("currency"),
                        Budget.enforcement == "block", BudgetLine.default_for_api.is_(True))
    .scalar_subquery())
