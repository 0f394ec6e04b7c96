"""Refunds: full or partial, never more than was paid and not already refunded.

The gateway (localstripe, and Stripe itself when a key is reused carelessly) cannot be trusted
to refuse an over-refund, so we hold that line: the payment row is locked, the amount is checked
against what remains, and the refund is *reserved* on the payment (``refunded_minor``) in the
same transaction, so two refunds racing for the same money cannot both pass. Then, as for
payments, the gateway is called outside any transaction, and the outcome recorded after.

A succeeded refund reverses the payment's split as its exact mirror (``pricing.allocate_refund``
through ``billing.split.post_refund``): a full refund returns every part to zero, partial ones
are proportional, and no participant is ever reversed beyond what it received. A full refund of
an order also takes back what it granted.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from market import audit
from market.accounts.authz import Principal
from market.db import Database, utcnow
from market.errors import Conflict, InvalidInput
from billing import budgets
from billing.models import Order, Payment, Refund
from billing.payments import (
    GatewayUnavailable, _gateway_errors, finance_may_confirm, get_payment_for_finance, unfulfil,
)
from billing.split import post_refund
from pricing.money import Money

MAX_REASON = 500


def _money_map(parts: dict[str, str], currency: str) -> dict[str, Money]:
    return {key: Money(amount, currency) for key, amount in parts.items()}


def reserve_refund(session: Session, principal: Principal, payment_id: int,
                   amount: Money | None, reason: str) -> Refund:
    """Lock the payment, check the amount against what remains, and reserve it."""
    payment = get_payment_for_finance(session, principal, payment_id, for_update=True)
    finance_may_confirm(session, principal, payment.order)  # never a refund to one's own side
    if payment.status != "succeeded":
        raise Conflict(f"The payment is {payment.status}; only a succeeded payment can be "
                       "refunded.", field="payment")
    remaining = payment.amount_minor - payment.refunded_minor
    if amount is None:
        amount = Money.from_minor(remaining, payment.currency)
    if amount.currency != payment.currency:
        raise InvalidInput(f"The payment was in {payment.currency}.", field="amount.currency")
    if not amount.is_positive():
        raise InvalidInput("A refund must be more than zero.", field="amount")
    if amount.minor > remaining:
        raise InvalidInput(
            f"Only {Money.from_minor(remaining, payment.currency)} of this payment remains to "
            f"refund; {amount} is more.", field="amount")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"At most {MAX_REASON} characters.", field="reason")
    payment.refunded_minor += amount.minor
    attempt = len(payment.refunds) + 1
    refund = Refund(payment_id=payment.id, order_id=payment.order_id,
                    organization_id=payment.organization_id, amount_minor=amount.minor,
                    currency=amount.currency, status="pending", reason=reason,
                    idempotency_key=f"payment:{payment.id}:refund:{attempt}",
                    created_by_id=principal.user_id)
    session.add(refund)
    session.flush()  # the gateway's metadata and the audit entry carry the refund's id
    audit.record(session, "refund.requested", actor=principal.actor,
                 organization_id=payment.organization_id, object_type="refund",
                 object_id=refund.id, data={"payment_id": payment.id, "amount": str(amount),
                                            "reason": reason})
    return refund


def complete_refund(session: Session, refund_id: int, *, gateway_ref: str | None = None
                    ) -> Refund:
    """The money went back: reverse the split, update the order, take back its grants."""
    refund = session.scalar(select(Refund).where(Refund.id == refund_id).with_for_update())
    if refund.status != "pending":
        return refund
    payment = session.scalar(select(Payment).where(Payment.id == refund.payment_id)
                             .with_for_update())
    done = [r for r in payment.refunds if r.status == "succeeded" and r.id != refund.id]
    already: dict[str, Money] = defaultdict(lambda: Money.zero(payment.currency))
    for earlier in done:
        for key, part in _money_map(earlier.parts, payment.currency).items():
            already[key] = already[key] + part
    amount = Money.from_minor(refund.amount_minor, refund.currency)
    _, parts = post_refund(session, _money_map(payment.split, payment.currency), dict(already),
                           amount, idempotency_key=f"refund:{refund.id}",
                           reference=("refund", refund.id))
    refund.parts = {key: str(part.amount) for key, part in parts.items()}
    refund.status = "succeeded"
    refund.completed_at = utcnow()
    refund.gateway_ref = gateway_ref or refund.gateway_ref
    order = session.scalar(select(Order).where(Order.id == payment.order_id).with_for_update())
    if payment.applied:
        order.refunded_minor += refund.amount_minor
        fully = order.refunded_minor >= order.paid_minor
        order.status = "refunded" if fully else "partially_refunded"
        budgets.on_refund(session, refund, order)
        if fully:
            unfulfil(session, order, f"refunded: {refund.reason or 'refund'}")
    audit.record(session, "refund.succeeded", organization_id=refund.organization_id,
                 object_type="refund", object_id=refund.id,
                 data={"payment_id": payment.id, "amount": str(amount), "parts": refund.parts})
    return refund


def fail_refund(session: Session, refund_id: int, message: str) -> Refund:
    """The gateway refused: release the reservation, so the money can be refunded again."""
    refund = session.scalar(select(Refund).where(Refund.id == refund_id).with_for_update())
    if refund.status != "pending":
        return refund
    payment = session.scalar(select(Payment).where(Payment.id == refund.payment_id)
                             .with_for_update())
    payment.refunded_minor -= refund.amount_minor
    refund.status = "failed"
    refund.failure_message = message[:500]
    refund.completed_at = utcnow()
    audit.record(session, "refund.failed", organization_id=refund.organization_id,
                 object_type="refund", object_id=refund.id, data={"message": message[:200]})
    return refund


def refund_payment(db: Database, gateway, principal: Principal, payment_id: int, *,
                   amount: Money | None = None, reason: str = "",
                   bank_reference: str | None = None) -> Refund:
    """Refund a payment, or part of it: reserve, pay back, record (see the module notes).

    A card payment is refunded through the gateway; a bank transfer is paid back by finance,
    who give the outgoing transfer's bank reference.
    """
    with db.session() as session, session.begin():
        refund = reserve_refund(session, principal, payment_id, amount, reason)
        refund_id, method = refund.id, refund.payment.method
        payment_ref, key = refund.payment.gateway_ref, refund.idempotency_key
        refund_minor = refund.amount_minor
        if method == "card" and gateway is None:
            # Raised inside the unit, so the reservation is rolled back with it.
            raise Conflict("Card refunds need the payment processor, which is not configured.",
                           field="payment")
        if method == "bank_transfer":
            if not (bank_reference or "").strip():
                raise InvalidInput("Give the bank reference of the transfer back to the buyer.",
                                   field="bank_reference")
            complete_refund(session, refund_id, gateway_ref=f"bank:{bank_reference.strip()}")
    if method == "card":
        try:
            result = gateway.refund(payment_ref=payment_ref, amount_minor=refund_minor,
                                    idempotency_key=key,
                                    metadata={"refund_id": str(refund_id)})
        except _gateway_errors() as exc:
            with db.session() as session, session.begin():
                fail_refund(session, refund_id, str(exc))
            raise GatewayUnavailable(f"The payment processor refused the refund: {exc}") \
                from None
        with db.session() as session, session.begin():
            if result.status == "failed":
                fail_refund(session, refund_id, "refused by the payment processor")
            else:
                complete_refund(session, refund_id, gateway_ref=result.ref)
    with db.session() as session:
        return session.get(Refund, refund_id)
