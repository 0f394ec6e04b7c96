"""Budgets of buyer organizations (数据采买纳入预算编制): lines and their amendments, and what
every purchase does to a line.

A line's money moves in two columns, each changed only by a conditional ``UPDATE`` in the
transaction of the purchase, so that however many checkouts race, the row lock re-checks the
condition and a "block" line is never committed beyond its approved amount:

=====================  ============================  =====================================
event                  committed_minor               spent_minor
=====================  ============================  =====================================
checkout               + order total (block: only    —
                       if it fits; warn: always,
                       with a warning)
order paid             − what it committed           + order total
order cancelled        − what it committed           —
refund                 —                             − refund
renewal / usage order  —                             + order total when paid (renewal: the
paid                                                 subscription's first order's line;
                                                     usage: the default API line, its tax)
postpaid API call      + call amount (the guard)     —
daily usage posting    − the day's postpaid amounts  + the day's postpaid amounts
=====================  ============================  =====================================

Every movement leaves a ``BudgetRecord`` whose ``reference`` is unique (``order:<id>:<item>:
commitment`` ...), so it is recorded once however often the hook runs. Records are kept per
order item (an order line), with the dataset, its supplier, its sector and the month, so a
report figure drills down to the records behind it.

Metered calls: a postpaid call's amount is *committed* on the budget's ``default_for_api`` line by
``billing.budgets.guards.commit_usage``, which the metering calls before it charges credit, by the
same conditional UPDATE, so concurrent calls cannot overspend a block line (refused 402
``budget_line_exhausted``); no record is written per call (there may be millions). What a block
line has left also bounds the tokens a key is told it can still spend
(``billing.budgets.guards.USAGE_HEADROOM``). The daily job ``post-usage-to-budgets`` then takes
each organization's previous day of postpaid usage per dataset, releases that commitment and posts
it as expenditure, with one release and one expenditure record per (organization, dataset, day).
Usage amounts are net of tax: the monthly usage order, when paid, posts its tax as expenditure on
the same line, so the line's spent equals what was paid. (A call made while the budget had no
default API line was never committed: its release is clamped at what the line holds.)

After every change of a line's committed + spent, each threshold of its budget crossed for the
first time inserts a ``BudgetAlert`` (unique per line and threshold, inserted in a savepoint so
a racing duplicate is simply ignored): each fires once, ever. Delivering them is another job's.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any, Sequence

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from market.core import audit
from market.accounts.authz import Principal, authorize
from market.accounts.models import Organization
from market.catalog.models import Dataset
from market.core.db import business_calendar, utcnow
from market.core.errors import Conflict, InvalidInput, NotFound
from market.core.keyset import Keyset, asc, desc
from billing.models import (
    Budget, BudgetAlert, BudgetAmendment, BudgetLine, BudgetRecord, Order,
    Refund, UsageEvent,
)
from billing.models.budgets import BUDGET_CATEGORIES
from billing.runs import JobContext
from pricing.errors import PricingError
from pricing.money import Money, normalize_currency

ENFORCEMENTS = ("block", "warn")
AMENDMENT_KINDS = ("increase", "decrease", "transfer")
DEFAULT_THRESHOLDS = (50, 80, 90, 100)
MAX_REASON = 2_000
MAX_PO_NUMBER = 64


def money_text(minor: int, currency: str) -> str:
    """``CNY 10,388.00``: how messages name an amount."""
    money = Money.from_minor(minor, currency)
    return f"{money.currency} {money.amount:,}"


# Reading ----------------------------------------------------------------------------------------

def list_budgets(session: Session, principal: Principal) -> Keyset[Budget]:
    """The organization's budgets, the latest fiscal year first."""
    return Keyset(session, select(Budget).where(
        Budget.organization_id == principal.organization_id),
        [desc(Budget.fiscal_year), asc(Budget.currency), asc(Budget.id)])


def get_budget(session: Session, principal: Principal, budget_id: int) -> Budget:
    """The principal's own budget (another organization's answers 404)."""
    budget = session.get(Budget, budget_id)
    if budget is None or budget.organization_id != principal.organization_id:
        raise NotFound("No such budget.", field="budget_id")
    return budget


def get_line(session: Session, principal: Principal, line_id: int, *,
             field: str = "budget_line_id") -> BudgetLine:
    """The principal's own budget line (another organization's answers 404)."""
    line = session.get(BudgetLine, line_id)
    if line is None or line.organization_id != principal.organization_id:
        raise NotFound("No such budget line.", field=field)
    return line


def line_records(session: Session, principal: Principal, line_id: int, *,
                 kind: str | None = None, month: str | None = None,
                 dataset_id: int | None = None, supplier_id: int | None = None,
                 sector: str | None = None) -> Keyset[BudgetRecord]:
    """The records behind a line's figures, newest first, filtered by any dimension."""
    line = get_line(session, principal, line_id)
    query = select(BudgetRecord).where(BudgetRecord.line_id == line.id)
    for column, value in ((BudgetRecord.kind, kind), (BudgetRecord.month, month),
                          (BudgetRecord.dataset_id, dataset_id),
                          (BudgetRecord.supplier_id, supplier_id),
                          (BudgetRecord.sector, sector)):
        if value is not None:
            query = query.where(column == value)
    return Keyset(session, query, [desc(BudgetRecord.occurred_at), desc(BudgetRecord.id)])


def budget_for(session: Session, organization_id: int, fiscal_year: int,
               currency: str) -> Budget | None:
    return session.scalar(select(Budget).where(
        Budget.organization_id == organization_id, Budget.fiscal_year == fiscal_year,
        Budget.currency == currency))


def default_api_line(session: Session, organization_id: int, fiscal_year: int,
                     currency: str) -> BudgetLine | None:
    """The line metered usage posts to, in the budget of that year and currency."""
    return session.scalar(select(BudgetLine).join(Budget).where(
        Budget.organization_id == organization_id, Budget.fiscal_year == fiscal_year,
        Budget.currency == currency, BudgetLine.default_for_api.is_(True)))


def checkout_lines(session: Session, organization_id: int,
                   fiscal_year: int | None = None) -> list[BudgetLine]:
    """The lines a buyer may charge a purchase to this year (for the checkout form)."""
    year = fiscal_year or business_calendar(session).year_of(utcnow())
    return list(session.scalars(select(BudgetLine).join(Budget).where(
        Budget.organization_id == organization_id, Budget.fiscal_year == year)
        .order_by(Budget.currency, BudgetLine.code)))


# Budgets, lines, amendments ---------------------------------------------------------------------

def _currencies_used(session: Session, organization: Organization) -> set[str]:
    used = set(session.scalars(select(Order.currency).where(
        Order.organization_id == organization.id).distinct()))
    return used | {organization.default_currency}


def create_budget(session: Session, principal: Principal, *, fiscal_year: int, currency: str,
                  name: str, enforcement: str = "block", require_purchase_order: bool = False,
                  thresholds: Sequence[int] = DEFAULT_THRESHOLDS,
                  alert_email: str | None = None) -> Budget:
    """A budget for one fiscal year in one currency the organization uses (its default
    currency, or one it has ordered in); one per organization, year and currency."""
    authorize(principal, "budgets:manage")
    try:
        currency = normalize_currency(currency)
    except PricingError as exc:
        raise InvalidInput(str(exc), field="currency") from None
    organization = session.get(Organization, principal.organization_id)
    used = _currencies_used(session, organization)
    if currency not in used:
        raise InvalidInput(f"Your organization does not buy in {currency}; a budget can be in "
                           f"{', '.join(sorted(used))}.", field="currency")
    if isinstance(fiscal_year, bool) or not isinstance(fiscal_year, int) or not (
            2000 <= fiscal_year <= 2100):
        raise InvalidInput("A fiscal year is a year such as 2026.", field="fiscal_year")
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise InvalidInput("Give the budget a name of at most 200 characters.", field="name")
    if enforcement not in ENFORCEMENTS:
        raise InvalidInput("Enforcement is block (refuse a purchase beyond a line) or warn "
                           "(allow it, with a warning).", field="enforcement")
    marks = sorted(set(thresholds))
    if not marks or any(isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 100
                        for t in marks):
        raise InvalidInput("Thresholds are whole percentages from 1 to 100.",
                           field="thresholds")
    if budget_for(session, principal.organization_id, fiscal_year, currency) is not None:
        raise Conflict(f"Your organization already has a {fiscal_year} budget in {currency}.",
                       field="fiscal_year")
    budget = Budget(organization_id=principal.organization_id, fiscal_year=fiscal_year,
                    currency=currency, name=name, enforcement=enforcement,
                    require_purchase_order=bool(require_purchase_order), thresholds=marks,
                    alert_email=alert_email or None,
                    created_by_id=principal.user_id)
    session.add(budget)
    session.flush()  # the audit entry names the budget's id
    audit.record(session, "budget.created", actor=principal.actor,
                 organization_id=budget.organization_id, object_type="budget",
                 object_id=budget.id,
                 data={"fiscal_year": fiscal_year, "currency": currency, "name": name,
                       "enforcement": enforcement, "thresholds": marks,
                       "require_purchase_order": budget.require_purchase_order})
    return budget


def add_line(session: Session, principal: Principal, budget: Budget, *, code: str, name: str,
             category: str, approved: Money, project: str | None = None,
             sector: str | None = None, default_for_api: bool = False) -> BudgetLine:
    """A line of a budget with its approved amount (never negative); at most one line of a
    budget is the one metered API usage posts to."""
    authorize(principal, "budgets:manage")
    if budget.organization_id != principal.organization_id:
        raise NotFound("No such budget.", field="budget_id")
    code, name = (code or "").strip(), (name or "").strip()
    if not code or len(code) > 40:
        raise InvalidInput("Give the line a code of at most 40 characters.", field="code")
    if not name or len(name) > 200:
        raise InvalidInput("Give the line a name of at most 200 characters.", field="name")
    if category not in BUDGET_CATEGORIES:
        raise InvalidInput(f"The category is one of {', '.join(BUDGET_CATEGORIES)}.",
                           field="category")
    if approved.currency != budget.currency:
        raise InvalidInput(f"The budget is in {budget.currency}.", field="approved.currency")
    if approved.is_negative():
        raise InvalidInput("The approved amount cannot be negative.", field="approved")
    if session.scalar(select(BudgetLine.id).where(BudgetLine.budget_id == budget.id,
                                                  BudgetLine.code == code)) is not None:
        raise Conflict(f"The budget already has a line {code}.", field="code")
    if default_for_api and session.scalar(select(BudgetLine.code).where(
            BudgetLine.budget_id == budget.id, BudgetLine.default_for_api.is_(True))):
        raise Conflict("The budget already has a line for API usage; only one may be.",
                       field="default_for_api")
    line = BudgetLine(budget=budget, organization_id=budget.organization_id, code=code,
                      name=name, category=category, project=project or None,
                      sector=sector or None, original_minor=approved.minor,
                      approved_minor=approved.minor, committed_minor=0, spent_minor=0,
                      default_for_api=bool(default_for_api))
    session.add(line)
    session.flush()  # the audit entry names the line's id
    audit.record(session, "budget.line_added", actor=principal.actor,
                 organization_id=budget.organization_id, object_type="budget_line",
                 object_id=line.id,
                 data={"budget_id": budget.id, "code": code, "category": category,
                       "approved": str(approved), "default_for_api": line.default_for_api})
    return line


def _refresh(session: Session, line: BudgetLine) -> BudgetLine:
    session.refresh(line, ["approved_minor", "committed_minor", "spent_minor"])
    return line


def _lower_approved(session: Session, line: BudgetLine, minor: int) -> None:
    """Take ``minor`` off a line's approved amount, never below what it has committed and
    spent (one conditional UPDATE: a racing purchase cannot slip under it)."""
    lowered = session.execute(
        update(BudgetLine)
        .where(BudgetLine.id == line.id,
               BudgetLine.approved_minor - minor >= BudgetLine.committed_minor
               + BudgetLine.spent_minor)
        .values(approved_minor=BudgetLine.approved_minor - minor)
        .execution_options(synchronize_session=False)).rowcount
    _refresh(session, line)
    if not lowered:
        used = line.committed_minor + line.spent_minor
        currency = line.budget.currency
        raise InvalidInput(
            f"Line {line.code} has {money_text(used, currency)} committed and spent; taking "
            f"{money_text(minor, currency)} off its {money_text(line.approved_minor, currency)} "
            f"would leave it short by "
            f"{money_text(used - (line.approved_minor - minor), currency)}.", field="amount")


def _raise_approved(session: Session, line: BudgetLine, minor: int) -> None:
    session.execute(update(BudgetLine).where(BudgetLine.id == line.id)
                    .values(approved_minor=BudgetLine.approved_minor + minor)
                    .execution_options(synchronize_session=False))
    _refresh(session, line)


def amend(session: Session, principal: Principal, line: BudgetLine, *, kind: str,
          amount: Money, reason: str, to_line: BudgetLine | None = None
          ) -> list[BudgetAmendment]:
    """Increase, decrease or transfer (to another line of the same budget) a line's approved
    amount, with a reason; ``approved`` stays the original plus every amendment, and never
    falls below what the line has committed and spent."""
    authorize(principal, "budgets:manage")
    if line.organization_id != principal.organization_id:
        raise NotFound("No such budget line.", field="budget_line_id")
    if kind not in AMENDMENT_KINDS:
        raise InvalidInput(f"An amendment is an {', a '.join(AMENDMENT_KINDS)}.", field="kind")
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("Say why the line is amended.", field="reason")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"At most {MAX_REASON:,} characters.", field="reason")
    currency = line.budget.currency
    if amount.currency != currency:
        raise InvalidInput(f"The budget is in {currency}.", field="amount.currency")
    if not amount.is_positive():
        raise InvalidInput("An amendment is of more than zero.", field="amount")
    if kind == "transfer":
        if to_line is None:
            raise InvalidInput("Name the line the amount goes to.", field="to_line_id")
        if to_line.organization_id != principal.organization_id:
            raise NotFound("No such budget line.", field="to_line_id")
        if to_line.budget_id != line.budget_id:
            raise InvalidInput("A transfer stays within one budget.", field="to_line_id")
        if to_line.id == line.id:
            raise InvalidInput("A line cannot transfer to itself.", field="to_line_id")
    elif to_line is not None:
        raise InvalidInput("Only a transfer goes to another line.", field="to_line_id")
    made: list[BudgetAmendment] = []

    def record(target: BudgetLine, row_kind: str, counterpart: BudgetLine | None) -> None:
        made.append(BudgetAmendment(line_id=target.id, kind=row_kind, amount_minor=amount.minor,
                                    counterpart_line_id=counterpart.id if counterpart else None,
                                    reason=reason, created_by_id=principal.user_id))

    match kind:
        case "increase":
            _raise_approved(session, line, amount.minor)
            record(line, "increase", None)
        case "decrease":
            _lower_approved(session, line, amount.minor)
            record(line, "decrease", None)
        case "transfer":
            _lower_approved(session, line, amount.minor)
            _raise_approved(session, to_line, amount.minor)
            record(line, "transfer_out", to_line)
            record(to_line, "transfer_in", line)
    session.add_all(made)
    session.flush()  # the audit entry names the amendments' ids
    for changed in {line.id: line, **({to_line.id: to_line} if to_line else {})}.values():
        audit.record(session, "budget.amended", actor=principal.actor,
                     organization_id=changed.organization_id, object_type="budget_line",
                     object_id=changed.id,
                     data={"kind": next(a.kind for a in made if a.line_id == changed.id),
                           "amount": str(amount), "reason": reason,
                           "approved": str(Money.from_minor(changed.approved_minor, currency)),
                           "amendments": [a.id for a in made]})
        check_thresholds(session, changed)
    return made


# Alerts -----------------------------------------------------------------------------------------

def check_thresholds(session: Session, line: BudgetLine) -> list[BudgetAlert]:
    """Fire each threshold of the line's budget that its committed + spent has crossed and
    that never fired before (once, ever: the unique (line, threshold) decides a race)."""
    _refresh(session, line)
    used, approved = line.committed_minor + line.spent_minor, line.approved_minor
    if used <= 0:
        return []
    fired = set(session.scalars(select(BudgetAlert.threshold).where(
        BudgetAlert.line_id == line.id)))
    budget = line.budget
    alerts = []
    for threshold in sorted(budget.thresholds or ()):
        crossed = approved == 0 or used * 100 >= threshold * approved
        if not crossed or threshold in fired:
            continue
        alert = BudgetAlert(
            line_id=line.id, organization_id=line.organization_id, threshold=threshold,
            used_minor=used, approved_minor=approved,
            detail={"budget_id": budget.id, "fiscal_year": budget.fiscal_year,
                    "line_code": line.code, "line_name": line.name,
                    "currency": budget.currency, "threshold": threshold,
                    "used": str(Money.from_minor(used, budget.currency).amount),
                    "committed": str(Money.from_minor(line.committed_minor,
                                                      budget.currency).amount),
                    "spent": str(Money.from_minor(line.spent_minor, budget.currency).amount),
                    "approved": str(Money.from_minor(approved, budget.currency).amount),
                    "percent": round(used * 100 / approved, 2) if approved else None,
                    "alert_email": budget.alert_email, "webhook_url": budget.webhook_url})
        try:
            with session.begin_nested():
                session.add(alert)
        except IntegrityError:
            continue  # a racing purchase fired it first: once, ever
        alerts.append(alert)
    return alerts


# Moving money on a line -------------------------------------------------------------------------

def commit_amount(session: Session, line: BudgetLine, minor: int, *, block: bool) -> bool:
    """Add ``minor`` to the line's committed amount; in block mode only if it fits (one
    conditional UPDATE, so racing purchases never commit a block line beyond its amount)."""
    query = update(BudgetLine).where(BudgetLine.id == line.id)
    if block:
        query = query.where(BudgetLine.approved_minor - BudgetLine.committed_minor
                            - BudgetLine.spent_minor >= minor)
    moved = session.execute(query.values(committed_minor=BudgetLine.committed_minor + minor)
                            .execution_options(synchronize_session=False)).rowcount
    _refresh(session, line)
    return bool(moved)


def _move(session: Session, line_id: int, *, committed: int = 0, spent: int = 0) -> None:
    """Change committed and spent by these (signed) amounts; committed never below zero."""
    values: dict[str, Any] = {}
    if committed:
        after = BudgetLine.committed_minor + committed
        values["committed_minor"] = case((after < 0, 0), else_=after)
    if spent:
        values["spent_minor"] = BudgetLine.spent_minor + spent
    if values:
        session.execute(update(BudgetLine).where(BudgetLine.id == line_id).values(**values)
                        .execution_options(synchronize_session=False))


def _dimensions(session: Session, dataset_id: int | None, line: BudgetLine) -> dict[str, Any]:
    dataset = session.get(Dataset, dataset_id) if dataset_id else None
    return {"dataset_id": dataset_id,
            "supplier_id": dataset.organization_id if dataset is not None else None,
            "sector": dataset.sector if dataset is not None else line.sector}


def _exists(session: Session, reference: str) -> bool:
    return session.scalar(select(BudgetRecord.id).where(
        BudgetRecord.reference == reference)) is not None


def _record(session: Session, line: BudgetLine, *, kind: str, amount_minor: int,
            reference: str, source: str, dataset_id: int | None = None,
            order_id: int | None = None, when: dt.datetime | None = None,
            note: str = "") -> BudgetRecord | None:
    """One record (None when its reference is recorded already)."""
    if _exists(session, reference):
        return None
    when = when or utcnow()
    record = BudgetRecord(line_id=line.id, organization_id=line.organization_id, kind=kind,
                          amount_minor=amount_minor, currency=line.budget.currency,
                          order_id=order_id, month=business_calendar(session).month_of(when),
                          source=source, reference=reference, note=note[:300],
                          occurred_at=when, **_dimensions(session, dataset_id, line))
    session.add(record)
    return record


def _items(order: Order) -> list[tuple[int, int | None, int]]:
    """(order line id, dataset id, total) of each order line with an amount."""
    return [(item.id, item.dataset_id, item.total_minor) for item in order.lines
            if item.total_minor > 0]


def commit_order(session: Session, principal: Principal, order: Order, *,
                 budget_line_id: int | None, purchase_order_number: str | None) -> list[str]:
    """Charge a new order to a budget line and commit its total there; the warnings to show.

    The line is required when the organization has a budget for this year in the order's
    currency; a purchase-order number when that budget says so. A "block" line refuses an
    order beyond what it has left (409, naming the line and the shortfall); a "warn" line
    takes it and says so.
    """
    number = (purchase_order_number or "").strip() or None
    if number is not None and len(number) > MAX_PO_NUMBER:
        raise InvalidInput(f"At most {MAX_PO_NUMBER} characters.",
                           field="purchase_order_number")
    order.purchase_order_number = number
    year = business_calendar(session).year_of(order.created_at or utcnow())
    if budget_line_id is None:
        budget = budget_for(session, order.organization_id, year, order.currency)
        if budget is None:
            return []
        raise InvalidInput(f"Your organization has a {year} budget in {order.currency} "
                           f"({budget.name}): choose the budget line this order is charged to.",
                           field="budget_line_id")
    line = get_line(session, principal, budget_line_id)
    budget = line.budget
    if budget.currency != order.currency:
        raise InvalidInput(f"Line {line.code} is in {budget.currency}; this order is in "
                           f"{order.currency}.", field="budget_line_id")
    if budget.fiscal_year != year:
        raise InvalidInput(f"Line {line.code} is of the {budget.fiscal_year} budget; this "
                           f"order falls in {year}.", field="budget_line_id")
    if budget.require_purchase_order and number is None:
        raise InvalidInput(f"The {budget.name} budget requires a purchase-order number.",
                           field="purchase_order_number")
    order.budget_line_id = line.id
    total = order.total_minor
    warnings: list[str] = []
    if total > 0:
        block = budget.enforcement == "block"
        if not commit_amount(session, line, total, block=block):
            # Refreshed after the refused UPDATE: what the line had left when it refused.
            raise Conflict(_short_message(line, line.remaining_minor, total),
                           field="budget_line_id")
        if not block and line.remaining_minor < 0:
            before = line.remaining_minor + total
            warnings.append(_short_message(line, before, total))
        session.flush()  # records name the order's lines
        for item_id, dataset_id, amount in _items(order):
            _record(session, line, kind="commitment", amount_minor=amount,
                    reference=f"order:{order.id}:{item_id}:commitment", source="order",
                    dataset_id=dataset_id, order_id=order.id, note=order.number)
        check_thresholds(session, line)
    audit.record(session, "budget.committed", actor=principal.actor,
                 organization_id=order.organization_id, object_type="order",
                 object_id=order.id,
                 data={"line_id": line.id, "line_code": line.code,
                       "amount": str(order.total), "purchase_order_number": number,
                       "warnings": warnings})
    return warnings


def _short_message(line: BudgetLine, remaining: int, needed: int) -> str:
    currency = line.budget.currency
    return (f"Line {line.code} has {money_text(remaining, currency)} left; this order needs "
            f"{money_text(needed, currency)}: short by "
            f"{money_text(needed - remaining, currency)}.")


def _outstanding(session: Session, order: Order) -> list[BudgetRecord]:
    """The order's commitment records not yet released."""
    commitments = session.scalars(select(BudgetRecord).where(
        BudgetRecord.order_id == order.id, BudgetRecord.kind == "commitment")).all()
    released = set(session.scalars(select(BudgetRecord.reference).where(
        BudgetRecord.order_id == order.id, BudgetRecord.kind == "release")))
    return [c for c in commitments
            if c.reference.removesuffix(":commitment") + ":release" not in released]


def _release(session: Session, line: BudgetLine, order: Order, source: str) -> int:
    released = 0
    for commitment in _outstanding(session, order):
        session.add(BudgetRecord(
            line_id=commitment.line_id, organization_id=commitment.organization_id,
            kind="release", amount_minor=commitment.amount_minor, currency=commitment.currency,
            order_id=order.id, dataset_id=commitment.dataset_id,
            supplier_id=commitment.supplier_id, sector=commitment.sector,
            month=business_calendar(session).month_of(utcnow()), source=source,
            reference=commitment.reference.removesuffix(":commitment") + ":release",
            note=order.number))
        released += commitment.amount_minor
    if released:
        _move(session, line.id, committed=-released)
    return released


def _line_for_paid_order(session: Session, order: Order) -> BudgetLine | None:
    """The line an order is charged to: its own; a renewal's or plan change's, its
    subscription's first order's; a usage order's, the default API line."""
    if order.budget_line_id is not None:
        return session.get(BudgetLine, order.budget_line_id)
    line = None
    if order.kind in ("renewal", "plan_change") and order.subscription_id is not None:
        line_id = session.scalar(select(Order.budget_line_id).where(
            Order.subscription_id == order.subscription_id, Order.kind == "subscription"))
        line = session.get(BudgetLine, line_id) if line_id else None
    elif order.kind == "usage":
        # The year of the usage billed (``usage:<org>:<YYYY-MM>``), not of the invoice: a
        # December is invoiced in January, and belongs with December's usage on last year's line.
        billed = (order.billing_key or "").rsplit(":", 1)[-1]
        year = int(billed[:4]) if billed[:4].isdigit() else \
            business_calendar(session).year_of(order.created_at or utcnow())
        line = default_api_line(session, order.organization_id, year, order.currency)
    if line is not None and line.budget.currency == order.currency:
        order.budget_line_id = line.id
        return line
    return None


def on_order_paid(session: Session, order: Order) -> None:
    """An order was paid (``billing.payments.settle``): its commitment becomes expenditure."""
    line = _line_for_paid_order(session, order)
    if line is None:
        return
    source = order.kind if order.kind in ("renewal", "usage") else "order"
    _release(session, line, order, source)
    if order.kind == "usage":
        # The day-by-day posting of the usage already spent its net amount: the tax is what
        # paying the invoice adds (see the module notes).
        spend = [(f"{order.id}:tax", None, order.tax_minor)] if order.tax_minor > 0 else []
    else:
        spend = [(f"{order.id}:{item_id}", dataset_id, amount)
                 for item_id, dataset_id, amount in _items(order)]
    total = 0
    for key, dataset_id, amount in spend:
        if _record(session, line, kind="expenditure", amount_minor=amount,
                   reference=f"order:{key}:expenditure", source=source,
                   dataset_id=dataset_id, order_id=order.id, note=order.number) is not None:
            total += amount
    _move(session, line.id, spent=total)
    check_thresholds(session, line)


def on_order_cancelled(session: Session, order: Order) -> None:
    """An unpaid order was cancelled: what it committed is free again."""
    if order.budget_line_id is None:
        return
    line = session.get(BudgetLine, order.budget_line_id)
    _release(session, line, order, "cancellation")
    _refresh(session, line)


def on_refund(session: Session, refund: Refund, order: Order) -> None:
    """Money went back to the buyer: the line's spent goes down by it, shared over the
    order's items in proportion (the last item takes the rounding)."""
    if order.budget_line_id is None:
        return
    line = session.get(BudgetLine, order.budget_line_id)
    items = _items(order) or [(0, None, refund.amount_minor)]
    whole = sum(amount for _, _, amount in items)
    left = refund.amount_minor
    total = 0
    for i, (item_id, dataset_id, amount) in enumerate(items):
        part = left if i == len(items) - 1 else refund.amount_minor * amount // whole
        left -= part
        if part <= 0:
            continue
        if _record(session, line, kind="refund", amount_minor=part,
                   reference=f"refund:{refund.id}:{item_id}", source="refund",
                   dataset_id=dataset_id, order_id=order.id,
                   note=f"{order.number} {refund.reason}") is not None:
            total += part
    _move(session, line.id, spent=-total)
    _refresh(session, line)


# Metered usage ----------------------------------------------------------------------------------

def post_usage_day(session: Session, day: dt.date) -> dict[str, int]:
    """Post one business day's postpaid API usage, per organization and dataset, as expenditure
    on each organization's default API line of that day's fiscal year (idempotent per
    organization, dataset and day)."""
    start, end = business_calendar(session).day_bounds(day)
    rows = session.execute(
        select(UsageEvent.organization_id, UsageEvent.dataset_id, UsageEvent.currency,
               func.sum(UsageEvent.amount_minor))
        .where(UsageEvent.recorded_at >= start, UsageEvent.recorded_at < end,
               UsageEvent.paid_by == "postpaid", UsageEvent.amount_minor > 0)
        .group_by(UsageEvent.organization_id, UsageEvent.dataset_id, UsageEvent.currency)
        .order_by(UsageEvent.organization_id, UsageEvent.dataset_id)).all()
    counts: dict[str, int] = defaultdict(int)
    touched: dict[int, BudgetLine] = {}
    when = start + dt.timedelta(hours=12)
    for organization_id, dataset_id, currency, amount in rows:
        line = default_api_line(session, organization_id, day.year, currency)
        if line is None:
            counts["no_line"] += 1
            continue
        key = f"usage:{organization_id}:{dataset_id}:{day.isoformat()}"
        if _exists(session, f"{key}:expenditure"):
            counts["already"] += 1
            continue
        amount = int(amount)
        for kind in ("release", "expenditure"):
            _record(session, line, kind=kind, amount_minor=amount, reference=f"{key}:{kind}",
                    source="usage", dataset_id=dataset_id, when=when,
                    note=f"API usage {day.isoformat()}")
        _move(session, line.id, committed=-amount, spent=amount)
        touched[line.id] = line
        counts["posted"] += 1
    for line in touched.values():
        check_thresholds(session, line)
    return dict(counts)


def run_usage_posting(ctx: JobContext) -> dict:
    """Job ``post-usage-to-budgets``: post the run's day of postpaid API usage to budgets."""
    day = dt.date.fromisoformat(ctx.period)
    with ctx.db.session() as session, session.begin():
        result = post_usage_day(session, day)
    ctx.progress(f"budgets, usage of {day}: {result.get('posted', 0)} posted")
    return result


