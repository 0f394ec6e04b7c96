"""Card payments through the gateway.

Card payments never hold a database transaction open across a call to the gateway. Each runs
in three steps, each step its own unit of work:

1. the intent row: the order is locked, checked, and a ``Payment`` is written (``created``) with
   an idempotency key derived from our own ids; committed;
2. the call: the gateway is asked to create and confirm a PaymentIntent under that key, with
   our payment id in its metadata;
3. the outcome: the result is applied to the payment (``apply_intent_status``); committed.

If the process dies between 2 and 3, the payment stays ``created``; ``reconcile`` (a scheduled
job) asks the gateway about it — by its intent id, or by our payment id in the metadata when
the id was never stored — and applies what happened, so nothing is charged twice and no paid
order is left unpaid. Webhooks apply the same outcomes, forward only: a late ``processing`` or
``payment_failed`` never undoes a success.

A succeeded payment is settled (``billing.payments.settle``); a failed one is told to what the
order bought (``billing.fulfilment``: a renewal's dunning).
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.context import BillingSettings
from billing.errors import GatewayUnavailable
from billing.fulfilment import FULFILMENT
from billing.models import (LIVE_PAYMENT_STATUSES, Order, OrderStatus, Payment, PaymentProfile,
                            PaymentStatus)
from billing.payments import anomalies
from billing.payments.gateway import CardGateway, GatewayError, SetupResult, payment_tag
from billing.payments.settle import settle_payment
from market.accounts.authz import Principal
from market.accounts.models import Organization
from market.core import audit
from market.core.db import Database, utcnow
from market.core.errors import Conflict, InvalidInput, NotFound

# Forward-only: an outcome applies only when it ranks above the payment's status.
_RANK = {PaymentStatus.CREATED: 0, PaymentStatus.PROCESSING: 1, PaymentStatus.REQUIRES_ACTION: 1,
         PaymentStatus.FAILED: 2, PaymentStatus.CANCELED: 2, PaymentStatus.SUCCEEDED: 3}
_ALREADY_PAID = (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED)


# Card payments ----------------------------------------------------------------------------------

def _lock_order(session: Session, order_id: int) -> Order:
    order = session.scalar(select(Order).where(Order.id == order_id).with_for_update())
    if order is None:
        raise NotFound("No such order.")
    return order


def _payable(order: Order, principal: Principal | None) -> None:
    if principal is not None and order.organization_id != principal.organization_id:
        raise NotFound("No such order.")
    if order.status in _ALREADY_PAID:
        raise Conflict("This order is already paid.", field="order")
    if order.status != OrderStatus.AWAITING_PAYMENT:
        raise Conflict(f"This order is {order.status.replace('_', ' ')}; it cannot be paid.",
                       field="order")
    live = [p for p in order.payments if p.status in LIVE_PAYMENT_STATUSES]
    if live:
        raise Conflict(f"A payment for this order is already {live[0].status.replace('_', ' ')}"
                       f" (payment {live[0].id}).", field="order")


def profile(session: Session, organization_id: int, gateway_name: str = "stripe"
            ) -> PaymentProfile | None:
    return session.scalar(select(PaymentProfile).where(
        PaymentProfile.organization_id == organization_id,
        PaymentProfile.gateway == gateway_name))


def ensure_customer(db: Database, gateway: CardGateway, organization_id: int) -> PaymentProfile:
    """The organization's customer at the gateway, created there on first use."""
    with db.session() as session:
        found = profile(session, organization_id, gateway.name)
        if found is not None:
            return found
        name = session.get(Organization, organization_id).name
    ref = gateway.create_customer(organization_id=organization_id, name=name,
                                  idempotency_key=f"customer:org:{organization_id}")
    with db.session() as session, session.begin():
        found = profile(session, organization_id, gateway.name)
        if found is None:
            found = PaymentProfile(organization_id=organization_id, gateway=gateway.name,
                                   customer_ref=ref)
            session.add(found)
    return found


def _enabled(gateway: CardGateway | None, field: str | None = None) -> CardGateway:
    """The gateway, or a 409 when card payments are off (bank transfer only)."""
    if gateway is None:
        raise Conflict("Card payments are not enabled here; pay by bank transfer.", field=field)
    return gateway


def start_card_setup(db: Database, gateway: CardGateway | None, principal: Principal
                     ) -> SetupResult:
    """A SetupIntent on the organization's customer, whose client secret Stripe.js confirms in
    the browser; ``save_card`` then keeps the card it set up."""
    gateway = _enabled(gateway)
    customer = ensure_customer(db, gateway, principal.organization_id)
    return gateway.create_setup_intent(customer_ref=customer.customer_ref,
                                       idempotency_key=f"setup:{secrets.token_hex(8)}")


def save_card(db: Database, gateway: CardGateway | None, principal: Principal,
              payment_method_ref: str) -> PaymentProfile:
    """Keep a card (a gateway payment method, confirmed by Stripe.js) for later payments."""
    gateway = _enabled(gateway)
    customer = ensure_customer(db, gateway, principal.organization_id)
    try:
        gateway.attach_payment_method(customer.customer_ref, payment_method_ref)
        brand, last4 = gateway.card_details(payment_method_ref)
    except GatewayError as exc:
        raise InvalidInput(f"The card could not be saved: {exc}", field="payment_method") \
            from None
    with db.session() as session, session.begin():
        found = profile(session, principal.organization_id, gateway.name)
        found.payment_method_ref = payment_method_ref
        found.card_brand, found.card_last4 = brand, last4
        audit.record(session, "card.saved", actor=principal.actor,
                     organization_id=principal.organization_id, object_type="payment_profile",
                     object_id=found.id, data={"brand": brand, "last4": last4})
    return found


def pay_by_card(db: Database, gateway: CardGateway | None, settings: BillingSettings, order_id: int, *,
                principal: Principal | None, payment_method_ref: str | None = None,
                off_session: bool = False) -> Payment:
    """Charge an order to a card: intent row, gateway call, outcome (see the module notes).

    ``principal`` None: the system charging a saved card (a renewal, off session).
    """
    gateway = _enabled(gateway, field="payment_method")
    customer = ensure_customer(db, gateway, principal.organization_id if principal else
                               _order_owner(db, order_id))
    card = payment_method_ref or customer.payment_method_ref
    if not card:
        raise InvalidInput("Save a card first, or send a payment method.",
                           field="payment_method")
    with db.session() as session, session.begin():
        order = _lock_order(session, order_id)
        _payable(order, principal)
        attempt = len(order.payments) + 1
        payment = Payment(order_id=order.id, organization_id=order.organization_id,
                          method="card", status=PaymentStatus.CREATED,
                          amount_minor=order.total_minor, currency=order.currency,
                          off_session=off_session,
                          idempotency_key=f"order:{order.id}:payment:{attempt}")
        session.add(payment)
        session.flush()  # the gateway's metadata carries our payment id
        payment_id, key = payment.id, payment.idempotency_key
        amount, currency, number = order.total_minor, order.currency, order.number
    try:
        result = gateway.create_payment_intent(
            amount_minor=amount, currency=currency, customer_ref=customer.customer_ref,
            payment_method_ref=card, idempotency_key=key, off_session=off_session,
            metadata={"payment_id": str(payment_id), "order": number,
                      "payment": payment_tag(number, payment_id)})
    except GatewayError as exc:
        # Unknown whether the processor took it: leave the payment for reconciliation.
        with db.session() as session, session.begin():
            payment = session.get(Payment, payment_id)
            payment.failure_message = f"gateway error, to be reconciled: {exc}"[:500]
        raise GatewayUnavailable("The payment processor did not answer; the payment will be "
                                 "checked again shortly. Do not pay twice.") from None
    with db.session() as session, session.begin():
        record_intent_outcome(session, payment_id, result, settings)
    with db.session() as session:
        return session.get(Payment, payment_id)


def _order_owner(db: Database, order_id: int) -> int:
    with db.session() as session:
        order = session.get(Order, order_id)
        if order is None:
            raise NotFound("No such order.")
        return order.organization_id


def intent_mismatch(session: Session, payment: Payment, *, ref: str | None,
                    amount_minor: int | None, currency: str | None,
                    customer_ref: str | None, metadata: Any,
                    full: bool) -> str | None:
    """Why the processor's intent ``ref`` is not the one we created for ``payment``, or None.

    An intent whose id we recorded is ours; its amount and currency, when given, must still be
    what we asked for. Before we recorded an id (``full``: the event overtook our own record,
    or we crashed before it), the intent must carry our payment's tag *and* our amount,
    currency and customer: metadata alone is written by whoever creates the intent.
    """
    if payment.method != "card":
        return f"payment {payment.id} is not a card payment"
    if payment.gateway_ref is not None and payment.gateway_ref != ref:
        return f"payment {payment.id} is paid by {payment.gateway_ref}, not {ref}"
    if amount_minor is not None or full:
        if amount_minor != payment.amount_minor:
            return (f"the intent is for {amount_minor} minor units, payment {payment.id} "
                    f"for {payment.amount_minor}")
    if currency is not None or full:
        if (currency or "").upper() != payment.currency:
            return f"the intent is in {currency}, payment {payment.id} in {payment.currency}"
    if full and payment.gateway_ref is None:
        tag = payment_tag(payment.order.number, payment.id)
        if (metadata or {}).get("payment") != tag:
            return f"the intent does not carry payment {payment.id}'s tag {tag}"
        customer = profile(session, payment.organization_id)
        if customer is None or customer_ref != customer.customer_ref:
            return f"the intent's customer {customer_ref} is not the payer of {payment.id}"
    return None


def record_intent_outcome(session: Session, payment_id: int, result: Any,
                          settings: BillingSettings) -> Payment:
    """Step 3 of a card payment: store the intent's id and apply its status."""
    payment = session.scalar(select(Payment).where(Payment.id == payment_id).with_for_update())
    if payment.gateway_ref is None:
        payment.gateway_ref = result.ref
    apply_intent_status(session, payment, result.status, settings,
                        failure_code=result.failure_code,
                        failure_message=result.failure_message)
    return payment


def apply_intent_status(session: Session, payment: Payment, status: str,
                        settings: BillingSettings, *, failure_code: str | None = None,
                        failure_message: str | None = None) -> bool:
    """Move a payment forward to ``status``; a stale or repeated outcome changes nothing.

    Returns whether anything changed.
    """
    if status not in _RANK:
        raise ValueError(f"unknown payment status {status!r}")
    if payment.status == PaymentStatus.SUCCEEDED or _RANK[status] < _RANK[payment.status] or (
            status == payment.status):
        return False
    if status == PaymentStatus.SUCCEEDED:
        settle_payment(session, payment, settings)
    else:
        if _RANK[status] == _RANK[payment.status] and status != PaymentStatus.REQUIRES_ACTION:
            return False
        payment.status = status
        if status in (PaymentStatus.FAILED, PaymentStatus.CANCELED):
            payment.failure_code = failure_code
            payment.failure_message = (failure_message or "")[:500] or None
            order = session.get(Order, payment.order_id)
            FULFILMENT[order.kind].payment_failed(session, order, payment, settings)
    audit.record(session, f"payment.{status}", organization_id=payment.organization_id,
                 object_type="payment", object_id=payment.id,
                 data={"order_id": payment.order_id, "amount": str(payment.amount),
                       "failure_code": failure_code})
    return True


# Reconciliation ---------------------------------------------------------------------------------

def reconcile(db: Database, gateway: CardGateway | None, settings: BillingSettings, *,
              older_than: dt.timedelta = dt.timedelta(minutes=10),
              now: dt.datetime | None = None,
              progress: Callable[[str], None] = lambda _m: None) -> dict[str, int]:
    """Ask the gateway about card payments left unfinished and apply what it says.

    A payment whose intent id was never stored is found by its tag in the intent's metadata,
    and the intent is taken only if its amount, currency and customer are what we asked for
    (``intent_mismatch``; any other is an anomaly for finance); if the gateway has no such
    intent, the call never reached it and the payment failed, so the order can be paid again.
    """
    now = now or utcnow()
    counts = {"checked": 0, "succeeded": 0, "failed": 0, "unchanged": 0, "anomalies": 0}
    if gateway is None:
        return counts
    with db.session() as session:
        stale = [(p.id, p.gateway_ref, p.organization_id, p.order.number) for p in session.scalars(
            select(Payment).where(Payment.method == "card",
                                  Payment.status.in_((PaymentStatus.CREATED,
                                                      PaymentStatus.PROCESSING,
                                                      PaymentStatus.REQUIRES_ACTION)),
                                  Payment.updated_at <= now - older_than)
            .order_by(Payment.id))]
    for payment_id, ref, organization_id, order_number in stale:
        counts["checked"] += 1
        if ref is not None:
            found = [gateway.retrieve_payment_intent(ref)]
        else:
            with db.session() as session:
                customer = profile(session, organization_id, gateway.name)
            found = gateway.find_payment_intents(
                customer_ref=customer.customer_ref, metadata_key="payment",
                metadata_value=payment_tag(order_number, payment_id)) if customer else []
        with db.session() as session, session.begin():
            payment = session.scalar(select(Payment).where(Payment.id == payment_id)
                                     .with_for_update())
            before = payment.status
            result, strangers = _ours(session, payment, found)
            counts["anomalies"] += len(strangers)
            if result is not None:
                if payment.gateway_ref is None:
                    payment.gateway_ref = result.ref
                apply_intent_status(session, payment, result.status, settings,
                                    failure_code=result.failure_code,
                                    failure_message=result.failure_message)
            elif not strangers:
                apply_intent_status(session, payment, PaymentStatus.FAILED, settings,
                                    failure_code="not_found",
                                    failure_message="The processor has no such payment.")
            # Else only intents we did not create: recorded for finance, nothing applied.
            after = payment.status
        moved = after != before and after in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED)
        key = after if moved else "unchanged"
        counts[key] += 1
        progress(f"payment {payment_id}: {before} -> {after}")
    return counts


def _ours(session: Session, payment: Payment, found: list[Any]) -> tuple[Any, list[Any]]:
    """The intent among ``found`` that is ours (see ``intent_mismatch``), and the others,
    each recorded as an anomaly."""
    ours, strangers = None, []
    for result in found:
        reason = intent_mismatch(session, payment, ref=result.ref,
                                 amount_minor=result.amount_minor, currency=result.currency,
                                 customer_ref=result.customer_ref, metadata=result.metadata,
                                 full=payment.gateway_ref is None)
        if reason is None and ours is None:
            ours = result
            continue
        strangers.append(result)
        kind = anomalies.INTENT_MISMATCH if result.ref == payment.gateway_ref else \
            anomalies.STRANGER_INTENT
        anomalies.record(session, kind, object_ref=result.ref, payment_id=payment.id,
                         amount_minor=result.amount_minor, currency=result.currency,
                         message=reason or "a second intent carries this payment's tag",
                         detail={"status": result.status, "found_by": "reconciliation"})
    return ours, strangers
