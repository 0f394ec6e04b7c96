"""Settling a payment: how an order's total divides, and what a succeeded payment posts.

Settling posts the split — tax, the platform's fee, each supply-chain participant's share from
the revision snapshotted on each line — as one balanced ledger transaction, marks the order
paid and grants what it bought (``billing.fulfilment``), all in the outcome's transaction. A
card payment (``billing.payments.card``) and a covered bank-transfer invoice
(``billing.payments.bank_transfer``) settle alike.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.budgets import lines as budgets
from billing.context import BillingSettings
from billing.fulfilment import FULFILMENT
from billing.models import Order, OrderStatus, Payment, PaymentStatus
from billing.settlement.ledger import Line, Purpose, get_account, post
from billing.settlement.split import (
    PLATFORM, TAX, post_payment, prepaid_key, receivable_key, split_payment,
)
from market.core import audit
from market.core.db import utcnow
from pricing.money import Money


def order_split(order: Order, platform_fee_bps: int) -> dict[str, Money]:
    """How the order's total divides: tax, platform fee, participants (summed over lines).

    A line with no supply chain (a platform-wide token pack) is the buyer's prepaid credit,
    shared out later as its tokens are used.
    """
    parts: dict[str, Money] = defaultdict(lambda: Money.zero(order.currency))
    for line in order.lines:
        gross = Money.from_minor(line.total_minor, order.currency)
        tax = Money.from_minor(line.tax_minor, order.currency)
        if gross.is_zero():
            continue
        if order.kind == "usage":
            # Usage was shared out day by day as it was recognized
            # (``billing.metering.recognition``): paying its invoice settles the buyer's
            # receivable and the tax, nothing more.
            line_parts = {TAX: tax, receivable_key(order.organization_id): gross - tax}
        elif line.shares:
            line_parts = split_payment(gross, tax, [tuple(s) for s in line.shares],
                                       platform_fee_bps)
        elif line.kind == "token_pack":
            line_parts = {TAX: tax, prepaid_key(order.organization_id): gross - tax}
        else:
            line_parts = {TAX: tax, PLATFORM: gross - tax}
        for key, part in line_parts.items():
            parts[key] = parts[key] + part
    split = {key: part for key, part in parts.items() if not part.is_zero()}
    assert Money.sum(split.values(), order.currency) == order.total  # exact, always
    return split


def settle_payment(session: Session, payment: Payment, settings: BillingSettings, *,
            paid_from_prepaid: bool = False) -> None:
    """Mark a payment succeeded and, in the same transaction, pay and fulfil its order."""
    order = session.scalar(select(Order).where(Order.id == payment.order_id).with_for_update())
    payment.status = PaymentStatus.SUCCEEDED
    payment.succeeded_at = utcnow()
    payment.failure_code = payment.failure_message = None
    if order.status != OrderStatus.AWAITING_PAYMENT:
        # The order was paid another way meanwhile (a late success of an abandoned attempt):
        # the money is the buyer's credit, refundable, never a second sale.
        currency = payment.currency
        if not paid_from_prepaid:
            # A bank transfer is already the buyer's credit (its receipts posted it): posting
            # it again would credit the buyer with money that never arrived.
            post(session, "payment_unapplied", [
                Line.debit(get_account(session, Purpose.PLATFORM_CLEARING, currency),
                           payment.amount),
                Line.credit(get_account(session, Purpose.BUYER_PREPAID, currency,
                                        order.organization_id), payment.amount)],
                idempotency_key=f"payment:{payment.id}", reference=("payment", payment.id))
        payment.split = {prepaid_key(order.organization_id): str(payment.amount.amount)}
        audit.record(session, "payment.unapplied", organization_id=order.organization_id,
                     object_type="payment", object_id=payment.id,
                     data={"order": order.number, "order_status": order.status})
        return
    split = order_split(order, settings.platform_fee_bps)
    post_payment(session, split, idempotency_key=f"payment:{payment.id}",
                 reference=("payment", payment.id),
                 paid_from_prepaid=order.organization_id if paid_from_prepaid else None)
    payment.split = {key: str(part.amount) for key, part in split.items()}
    payment.applied = True
    order.status = OrderStatus.PAID
    order.paid_minor = payment.amount_minor
    order.paid_at = payment.succeeded_at
    FULFILMENT[order.kind].paid(session, order, settings)
    budgets.on_order_paid(session, order)  # its commitment becomes expenditure
    audit.record(session, "order.paid", organization_id=order.organization_id,
                 object_type="order", object_id=order.id,
                 data={"number": order.number, "payment_id": payment.id,
                       "method": payment.method, "amount": str(payment.amount),
                       "split": payment.split})
