"""Refunds: full or partial, never more than was paid and not already refunded.

The gateway (localstripe, and Stripe itself when a key is reused carelessly) cannot be trusted
to refuse an over-refund, so we hold that line: the payment row is locked, the amount is checked
against what remains, and the refund is *reserved* on the payment (``refunded_minor``) in the
same transaction, so two refunds racing for the same money cannot both pass. Then, as for
payments, the gateway is called outside any transaction, and the outcome recorded after.

Only the processor's answer decides a refund. A refusal releases the reservation; a ``pending``
answer keeps it until the processor reports the end (``refund.updated``, ``refund.failed``,
``charge.refund.updated`` events, or reconciliation); *no* answer (a timeout, a dropped
connection, a server error) also keeps it, and the processor is asked — for our refund's id in
its metadata, since a processor may ignore the idempotency key — before the refund is sent
again (``retry_refund``, ``reconcile_refunds``). Refunds made outside the marketplace (the
processor's dashboard) are found by reconciliation and booked when they fit in what remains,
or recorded as anomalies for finance (``billing.payments.anomalies``).

A succeeded refund reverses the payment's split as its exact mirror (``pricing.allocate_refund``
through ``billing.settlement.split.post_refund``): a full refund returns every part to zero, partial ones
are proportional, and no participant is ever reversed beyond what it received. A full refund of
an order also takes back what it granted.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from market.core import audit
from market.accounts.authz import Principal
from market.core.db import Database, utcnow
from market.core.errors import Conflict, InvalidInput, NotFound
from billing.budgets import lines as budgets
from billing.payments import anomalies
from billing.payments.gateway import CardGateway
from billing.models import Order, OrderStatus, Payment, PaymentStatus, Refund, RefundStatus
from billing.payments.gateway import GatewayError
from billing.context import BillingSettings
from billing.errors import GatewayUnavailable
from billing.fulfilment import FULFILMENT
from billing.payments import card
from billing.finance import (
    finance_may_act, get_payment_for_finance, refuse_party_to_order,
)
from billing.runs import JobContext
from billing.settlement.split import post_refund
from pricing.money import Money

MAX_REASON = 500


def _money_map(parts: dict[str, str], currency: str) -> dict[str, Money]:
    return {key: Money(amount, currency) for key, amount in parts.items()}


def reserve_refund(session: Session, principal: Principal, payment_id: int,
                   amount: Money | None, reason: str) -> Refund:
    """Lock the payment, check the amount against what remains, and reserve it."""
    payment = get_payment_for_finance(session, principal, payment_id, for_update=True)
    refuse_party_to_order(session, principal, payment.order)  # never a refund to one's own side
    if payment.status != PaymentStatus.SUCCEEDED:
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
                    currency=amount.currency, status=RefundStatus.PENDING, reason=reason,
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
    if refund.status != RefundStatus.PENDING:
        return refund
    payment = session.scalar(select(Payment).where(Payment.id == refund.payment_id)
                             .with_for_update())
    done = [r for r in payment.refunds if r.status == RefundStatus.SUCCEEDED and r.id != refund.id]
    already: dict[str, Money] = defaultdict(lambda: Money.zero(payment.currency))
    for earlier in done:
        for key, part in _money_map(earlier.parts, payment.currency).items():
            already[key] = already[key] + part
    amount = Money.from_minor(refund.amount_minor, refund.currency)
    _, parts = post_refund(session, _money_map(payment.split, payment.currency), dict(already),
                           amount, idempotency_key=f"refund:{refund.id}",
                           reference=("refund", refund.id))
    refund.parts = {key: str(part.amount) for key, part in parts.items()}
    refund.status = RefundStatus.SUCCEEDED
    refund.completed_at = utcnow()
    refund.gateway_ref = gateway_ref or refund.gateway_ref
    order = session.scalar(select(Order).where(Order.id == payment.order_id).with_for_update())
    if payment.applied:
        order.refunded_minor += refund.amount_minor
        fully = order.refunded_minor >= order.paid_minor
        order.status = OrderStatus.REFUNDED if fully else OrderStatus.PARTIALLY_REFUNDED
        budgets.on_refund(session, refund, order)
        if fully:
            FULFILMENT[order.kind].refunded(session, order,
                                            f"refunded: {refund.reason or 'refund'}")
    audit.record(session, "refund.succeeded", organization_id=refund.organization_id,
                 object_type="refund", object_id=refund.id,
                 data={"payment_id": payment.id, "amount": str(amount), "parts": refund.parts})
    return refund


def fail_refund(session: Session, refund_id: int, message: str) -> Refund:
    """The gateway refused: release the reservation, so the money can be refunded again."""
    refund = session.scalar(select(Refund).where(Refund.id == refund_id).with_for_update())
    if refund.status != RefundStatus.PENDING:
        return refund
    payment = session.scalar(select(Payment).where(Payment.id == refund.payment_id)
                             .with_for_update())
    payment.refunded_minor -= refund.amount_minor
    refund.status = RefundStatus.FAILED
    refund.failure_message = message[:500]
    refund.completed_at = utcnow()
    audit.record(session, "refund.failed", organization_id=refund.organization_id,
                 object_type="refund", object_id=refund.id, data={"message": message[:200]})
    return refund


def refund_payment(db: Database, gateway: CardGateway | None, principal: Principal, payment_id: int, *,
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
        _send(db, gateway, refund_id, payment_ref, refund_minor, key)
    with db.session() as session:
        return session.get(Refund, refund_id)


def _send(db: Database, gateway: CardGateway, refund_id: int, payment_ref: str, amount_minor: int,
          key: str) -> None:
    """Ask the processor to refund, and record what it answered.

    No answer (a timeout, a dropped connection, a server error) is not a refusal: the refund
    stays pending with its reservation held, until the processor is asked what it did.
    """
    try:
        result = gateway.refund(payment_ref=payment_ref, amount_minor=amount_minor,
                                idempotency_key=key, metadata={"refund_id": str(refund_id)})
    except GatewayError as exc:
        if getattr(exc, "outcome_unknown", False):
            with db.session() as session, session.begin():
                refund = session.get(Refund, refund_id)
                refund.failure_message = f"{UNANSWERED}: {exc}"[:500]
                audit.record(session, "refund.unanswered", organization_id=refund.organization_id,
                             object_type="refund", object_id=refund.id,
                             data={"message": str(exc)[:200]})
            raise GatewayUnavailable(
                f"The payment processor did not answer: refund {refund_id} stays pending, and "
                "the processor is asked what it did before the refund is tried again (retry it, "
                "or leave it to reconciliation).") from None
        with db.session() as session, session.begin():
            fail_refund(session, refund_id, str(exc))
        raise GatewayUnavailable(f"The payment processor refused the refund: {exc}") from None
    with db.session() as session, session.begin():
        _record_answer(session, refund_id, result)


UNANSWERED = "no answer from the processor"


def _record_answer(session: Session, refund_id: int, result) -> str:
    """The processor's answer about our own refund: done, refused, or still on its way."""
    refund = session.scalar(select(Refund).where(Refund.id == refund_id).with_for_update())
    if refund.gateway_ref is None:
        refund.gateway_ref = result.ref
    match result.status:
        case RefundStatus.SUCCEEDED:
            complete_refund(session, refund.id, gateway_ref=result.ref)
        case RefundStatus.FAILED:
            fail_refund(session, refund.id, "refused by the payment processor"
                        + (f" ({result.failure_reason})" if result.failure_reason else ""))
        case _:
            refund.failure_message = None  # answered: pending at the processor, reserved here
    return f"refund {refund.id}: {refund.status}"


def get_refund_for_finance(session: Session, principal: Principal, refund_id: int) -> Refund:
    refund = session.get(Refund, refund_id)
    if refund is None:
        raise NotFound("No such refund.")
    finance_may_act(session, principal, refund.payment.order)
    refuse_party_to_order(session, principal, refund.payment.order)
    return refund


def retry_refund(db: Database, gateway: CardGateway | None, principal: Principal, refund_id: int) -> Refund:
    """Try a pending card refund again, asking the processor first.

    The processor is looked up for our refund (by its id in the refund's metadata): if it made
    it, that is recorded and nothing is sent; only a refund it has no trace of is sent again,
    under the same idempotency key. A refund no longer pending is returned as it is.
    """
    with db.session() as session:
        refund = get_refund_for_finance(session, principal, refund_id)
        if refund.status != RefundStatus.PENDING:
            return refund
        if refund.payment.method != "card" or gateway is None:
            raise Conflict("Only a card refund is sent to the payment processor.",
                           field="refund")
        payment_ref, key = refund.payment.gateway_ref, refund.idempotency_key
        amount_minor, gateway_ref = refund.amount_minor, refund.gateway_ref
    try:
        found = find_at_processor(gateway, payment_ref, refund_id, gateway_ref)
    except GatewayError as exc:
        raise GatewayUnavailable(f"The payment processor could not be asked about refund "
                                 f"{refund_id}; nothing was sent: {exc}") from None
    if found is not None:
        with db.session() as session, session.begin():
            apply_processor_refund(session, found)
    else:
        _send(db, gateway, refund_id, payment_ref, amount_minor, key)
    with db.session() as session:
        return session.get(Refund, refund_id)


def find_at_processor(gateway: CardGateway, payment_ref: str, refund_id: int, gateway_ref: str | None):
    """Our refund as the processor holds it, or None if it has none.

    Found among the payment intent's refunds by its id or by our refund's id in its metadata
    (a processor may ignore an idempotency key, so the key alone cannot be relied on).
    """
    for found in gateway.list_refunds(payment_ref):
        if found.ref == gateway_ref or found.metadata.get("refund_id") == str(refund_id):
            return found
    return None


# What the processor says about refunds (events, reconciliation) --------------------------------

def apply_processor_refund(session: Session, found, *, event_id: str | None = None,
                           gateway_name: str = "stripe") -> str:
    """Bring our records in line with a refund the processor reports (an event's refund, or
    one found by reconciliation); returns what it did.

    Ours (its id recorded, or our refund's id in its metadata with the same payment, amount and
    currency): its status is applied. A refund of one of our payments that the marketplace did
    not make (the processor's dashboard) is booked when it fits in what remains refundable, and
    is an anomaly otherwise. Anything claiming to be ours that does not match is an anomaly.
    """
    refund = session.scalar(select(Refund).where(Refund.gateway_ref == found.ref)
                            .with_for_update())
    if refund is None:
        claimed = str(found.metadata.get("refund_id", ""))
        if claimed.isdigit():
            refund = session.scalar(select(Refund).where(Refund.id == int(claimed))
                                    .with_for_update())
            reason = _claim_mismatch(refund, found)
            if reason is not None:
                anomalies.record(session, anomalies.UNKNOWN_REFUND, object_ref=found.ref,
                                 gateway=gateway_name, event_id=event_id,
                                 refund_id=refund.id if refund is not None else None,
                                 payment_id=refund.payment_id if refund is not None else None,
                                 amount_minor=found.amount_minor, currency=found.currency,
                                 message=reason, detail={"status": found.status})
                return f"anomaly: {reason}"
            refund.gateway_ref = found.ref
        else:
            return _outside_refund(session, found, event_id=event_id, gateway_name=gateway_name)
    match (refund.status, found.status):
        case (RefundStatus.PENDING, RefundStatus.SUCCEEDED):
            complete_refund(session, refund.id, gateway_ref=found.ref)
        case (RefundStatus.PENDING, RefundStatus.FAILED):
            fail_refund(session, refund.id, "failed at the payment processor"
                        + (f" ({found.failure_reason})" if found.failure_reason else ""))
        case (RefundStatus.PENDING, _):
            refund.failure_message = None  # the processor has it: still on its way
        case ((RefundStatus.SUCCEEDED, RefundStatus.FAILED)
              | (RefundStatus.FAILED, RefundStatus.SUCCEEDED)):
            # Booked one way, ended the other: finance decides (reversing a completed refund's
            # split, or booking money we told them was not returned).
            message = (f"refund {refund.id} is {refund.status} here but {found.status} at the "
                       "payment processor")
            anomalies.record(session, anomalies.REFUND_REVERSED, object_ref=found.ref,
                             gateway=gateway_name, event_id=event_id, refund_id=refund.id,
                             payment_id=refund.payment_id, amount_minor=found.amount_minor,
                             currency=found.currency, message=message,
                             detail={"failure_reason": found.failure_reason})
            return f"anomaly: {message}"
    return f"refund {refund.id}: {refund.status}"


def _claim_mismatch(refund: Refund | None, found) -> str | None:
    if refund is None:
        return f"the processor's refund {found.ref} names a refund we do not have"
    if refund.gateway_ref is not None and refund.gateway_ref != found.ref:
        return f"refund {refund.id} is {refund.gateway_ref} at the processor, not {found.ref}"
    if refund.payment.gateway_ref != found.payment_ref:
        return (f"refund {found.ref} is of {found.payment_ref}, refund {refund.id} of "
                f"{refund.payment.gateway_ref}")
    if found.amount_minor != refund.amount_minor or found.currency != refund.currency:
        return (f"refund {found.ref} is {found.amount_minor} {found.currency}, refund "
                f"{refund.id} {refund.amount_minor} {refund.currency}")
    return None


def _outside_refund(session: Session, found, *, event_id: str | None,
                    gateway_name: str) -> str:
    """A refund of one of our payments that the marketplace did not make."""
    if found.payment_ref is None:
        return "not ours"
    payment = session.scalar(select(Payment).where(Payment.gateway_ref == found.payment_ref)
                             .with_for_update())
    if payment is None:
        return "not ours"
    if found.status == RefundStatus.FAILED:
        return f"refund {found.ref} made elsewhere failed: nothing to book"
    remaining = payment.amount_minor - payment.refunded_minor
    reason = None
    if payment.status != PaymentStatus.SUCCEEDED:
        reason = f"payment {payment.id} is {payment.status}"
    elif found.currency != payment.currency:
        reason = f"the refund is in {found.currency}, payment {payment.id} in {payment.currency}"
    elif not found.amount_minor or found.amount_minor > remaining:
        reason = (f"the refund of {found.amount_minor} minor units is more than the "
                  f"{remaining} that remain of payment {payment.id}")
    if reason is not None:
        anomalies.record(session, anomalies.OUTSIDE_REFUND, object_ref=found.ref,
                         gateway=gateway_name, event_id=event_id, payment_id=payment.id,
                         amount_minor=found.amount_minor, currency=found.currency,
                         message=f"a refund made outside the marketplace cannot be booked: "
                                 f"{reason}", detail={"status": found.status})
        return f"anomaly: {reason}"
    payment.refunded_minor += found.amount_minor
    refund = Refund(payment_id=payment.id, order_id=payment.order_id,
                    organization_id=payment.organization_id, amount_minor=found.amount_minor,
                    currency=payment.currency, status=RefundStatus.PENDING,
                    reason="made at the payment processor", gateway_ref=found.ref,
                    idempotency_key=f"processor:{found.ref}")
    session.add(refund)
    session.flush()  # the audit entry and the ledger posting name the refund's id
    audit.record(session, "refund.found_at_processor", organization_id=payment.organization_id,
                 object_type="refund", object_id=refund.id,
                 data={"payment_id": payment.id, "gateway_ref": found.ref,
                       "amount": str(Money.from_minor(found.amount_minor, payment.currency)),
                       "status": found.status})
    if found.status == RefundStatus.SUCCEEDED:
        complete_refund(session, refund.id, gateway_ref=found.ref)
    return f"refund {refund.id} booked from the processor: {refund.status}"


def reconcile_refunds(db: Database, gateway: CardGateway | None, *, older_than: dt.timedelta = dt.timedelta(minutes=10),
                      lookback: dt.timedelta = dt.timedelta(days=3),
                      now: dt.datetime | None = None,
                      progress: Callable[[str], None] = lambda _m: None) -> dict[str, int]:
    """Ask the processor about card refunds left pending, and find refunds made elsewhere.

    A pending refund the processor has is brought to its status; one it has no trace of after
    ``older_than`` never reached it, and is failed (its reservation released). Every refund the
    processor made in the last ``lookback`` is then checked against ours
    (``apply_processor_refund``), which books or flags those the marketplace did not make.
    """
    now = now or utcnow()
    counts = {"checked": 0, "succeeded": 0, "failed": 0, "booked": 0, "anomalies": 0}
    if gateway is None:
        return counts
    with db.session() as session:
        pending = [(r.id, r.payment.gateway_ref, r.gateway_ref) for r in session.scalars(
            select(Refund).join(Payment, Payment.id == Refund.payment_id)
            .where(Refund.status == RefundStatus.PENDING, Payment.method == "card",
                   Refund.created_at <= now - older_than).order_by(Refund.id))]
    for refund_id, payment_ref, gateway_ref in pending:
        counts["checked"] += 1
        found = find_at_processor(gateway, payment_ref, refund_id, gateway_ref)
        with db.session() as session, session.begin():
            if found is None:
                fail_refund(session, refund_id, "the payment processor has no such refund: "
                                                "nothing was refunded")
                outcome = f"refund {refund_id}: failed"
            else:
                outcome = apply_processor_refund(session, found)
            status = session.get(Refund, refund_id).status
        if status in (RefundStatus.SUCCEEDED, RefundStatus.FAILED):
            counts[status] += 1
        progress(outcome)
    for found in gateway.recent_refunds(int((now - lookback).timestamp())):
        with db.session() as session, session.begin():
            known = session.scalar(select(Refund).where(Refund.gateway_ref == found.ref))
            if known is not None and known.status == found.status:
                continue
            outcome = apply_processor_refund(session, found)
        if outcome.startswith("anomaly"):
            counts["anomalies"] += 1
        elif "booked" in outcome:
            counts["booked"] += 1
        progress(f"{found.ref}: {outcome}")
    return counts


def run_reconciliation(ctx: JobContext) -> dict:
    """Job ``reconcile-payments``: card payments and refunds left unfinished, and refunds
    made outside the marketplace."""
    settings = BillingSettings.from_settings(ctx.settings)
    counts = card.reconcile(ctx.db, ctx.gateway, settings, now=ctx.now, progress=ctx.progress)
    counts["refunds"] = reconcile_refunds(ctx.db, ctx.gateway, now=ctx.now,
                                                  progress=ctx.progress)
    return counts
