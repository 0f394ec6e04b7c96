"""Postpaid usage: credit lines, and the monthly invoice of what was used on credit.

An organization with a ``CreditLine`` may call metered APIs on credit up to its limit; each such
call is a ``UsageEvent`` paid by ``postpaid`` and adds its amount to the line's ``used_minor``. The
monthly ``postpaid-invoices`` job (``billing.collection``) bills the previous month: one ``usage``
order per organization (``billing_key`` ``usage:<org>:<YYYY-MM>``, so a rerun bills nothing twice)
with one line per dataset (and supply-chain revision the events were charged under), and marks the
events as billed by it. The order is invoiced for bank transfer or charged to the saved card, as
the credit line says; when it is paid, the credit it used is released
(``billing.metering.credit_lines.release_paid_usage``).
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from market.core import audit
from market.accounts.authz import Principal
from market.accounts.models import Organization
from market.core.audit import Actor
from market.catalog.models import Dataset, SupplyChainRevision
from market.catalog.offers import metered_offer
from market.core.errors import Forbidden, InvalidInput, NotFound
from billing import invoices, orders
from billing.context import BillingSettings
from billing.models import CreditLine, Order, UsageEvent
from pricing.money import Money, UnitPrice
from pricing.periods import is_month
from pricing.rating import LineItem
from pricing.tax import offer_tax_rate


def open_credit_line(session: Session, principal: Principal | Actor, organization_id: int,
                     limit: Money, currency: str | None = None, *,
                     payment_method: str = "bank_transfer") -> CreditLine:
    """Open (or change the limit of) an organization's postpaid credit line, at once.

    The demo seed's path. People go through ``billing.metering.credit_lines`` (the API, the CLI and the
    console), where a raise above the approval threshold waits for a second approver. Lowering
    the limit below what is already used is allowed: further postpaid calls are refused until
    it is paid.
    """
    if isinstance(principal, Principal):
        # A person of platform finance, or the platform acting as no person (the seed).
        if not principal.is_platform or (principal.member_role is not None
                                         and not principal.is_platform_finance):
            raise Forbidden("Only the platform's finance staff open credit lines.")
        actor = principal.actor
    else:
        actor = principal
    currency = (currency or limit.currency).upper()
    if limit.currency != currency:
        raise InvalidInput(f"The limit must be in {currency}.", field="limit.currency")
    if limit.is_negative():
        raise InvalidInput("The limit cannot be negative.", field="limit")
    if payment_method not in orders.PAYMENT_METHODS:
        raise InvalidInput(f"Pay by {' or '.join(orders.PAYMENT_METHODS)}.",
                           field="payment_method")
    if session.get(Organization, organization_id) is None:
        raise NotFound("No such organization.", field="organization_id")
    line = session.scalar(select(CreditLine).where(
        CreditLine.organization_id == organization_id, CreditLine.currency == currency)
        .with_for_update())
    action = "credit_line.changed"
    if line is None:
        line = CreditLine(organization_id=organization_id, currency=currency, used_minor=0,
                          limit_minor=limit.minor, payment_method=payment_method)
        session.add(line)
        action = "credit_line.opened"
    before = line.limit_minor
    line.limit_minor, line.payment_method = limit.minor, payment_method
    session.flush()  # the audit entry names the line's id
    audit.record(session, action, actor=actor, organization_id=organization_id,
                 object_type="credit_line", object_id=line.id,
                 data={"limit": str(limit), "limit_before": str(Money.from_minor(before,
                                                                                  currency)),
                       "payment_method": payment_method})
    return line


def _shares(session: Session, revision_id: int) -> list[list]:
    revision = session.get(SupplyChainRevision, revision_id)
    return [list(pair) for pair in revision.shares_bps()]


def bill_usage(session: Session, credit_line_id: int, period: str,
               settings: BillingSettings) -> Order | None:
    """The usage order of one credit line's organization for one month, or None when there is
    nothing to bill or it is billed already. A bank-transfer order is invoiced here."""
    if not is_month(period):
        raise InvalidInput("A period is a month, YYYY-MM.", field="period")
    credit = session.scalar(select(CreditLine).where(CreditLine.id == credit_line_id)
                            .with_for_update())
    key = f"usage:{credit.organization_id}:{period}"
    if session.scalar(select(Order.id).where(Order.billing_key == key)) is not None:
        return None
    events = list(session.scalars(select(UsageEvent).where(
        UsageEvent.organization_id == credit.organization_id,
        UsageEvent.currency == credit.currency, UsageEvent.period == period,
        UsageEvent.paid_by == "postpaid", UsageEvent.order_id.is_(None))
        .order_by(UsageEvent.id).with_for_update()))
    groups: dict[tuple[int, int | None], list[UsageEvent]] = defaultdict(list)
    for event in events:
        groups[(event.dataset_id, event.supply_chain_revision_id)].append(event)
    if sum(e.amount_minor for e in events) <= 0:
        return None
    order = orders.new_order(session, organization_id=credit.organization_id, kind="usage",
                             currency=credit.currency, payment_method=credit.payment_method,
                             billing_key=key, note=f"API usage on credit, {period}")
    for (dataset_id, revision_id), group in sorted(groups.items(),
                                                   key=lambda g: (g[0][0], g[0][1] or 0)):
        amount = Money.from_minor(sum(e.amount_minor for e in group), credit.currency)
        if amount.is_zero():
            continue
        tokens = sum(e.tokens for e in group)
        dataset = session.get(Dataset, dataset_id)
        metered = metered_offer(dataset) if dataset else None
        tax_rate = offer_tax_rate(metered.terms if metered else None)
        # One item whose unit price is the summed charges, so the line is exactly what the
        # events were charged (each already rounded when it was rated).
        item = LineItem(code="usage", description=f"{tokens:,} tokens, {period}", quantity=1,
                        unit_price=UnitPrice.of(amount))
        line = orders.priced_line(
            session, order, kind="usage", items=[item], tax_rate=tax_rate,
            dataset_id=dataset_id, tokens=tokens, chain=revision_id is None,
            description=f"{dataset.title_en if dataset else dataset_id} — API usage {period}",
            terms={"period": period, "events": len(group)})
        if revision_id is not None:
            # The revision the events were charged under, not whatever is in force now.
            line.supply_chain_revision_id = revision_id
            line.shares = _shares(session, revision_id)
    session.flush()  # the events and the audit entry name the order's id
    session.execute(update(UsageEvent).where(UsageEvent.id.in_([e.id for e in events]))
                    .values(order_id=order.id).execution_options(synchronize_session=False))
    audit.record(session, "order.placed", organization_id=order.organization_id,
                 object_type="order", object_id=order.id,
                 data={"number": order.number, "total": str(order.total), "period": period,
                       "events": len(events)})
    if order.payment_method == "bank_transfer":
        invoices.issue_invoice(session, order, settings)
    return order
