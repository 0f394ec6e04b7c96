"""Gateway events, applied once, forward only, and only when they are about what we asked for.

The webhook view verifies the signature on the raw body and hands the event, a plain dict, to
``handle_event``. The event's id is claimed first, in the same transaction as its effects: a
duplicate delivery finds it and changes nothing, and a delivery racing another of the same new
event waits for it on the unique id and then answers ``duplicate`` (or, if the other rolled
back, applies it). Stripe does not order its events, so each outcome is applied only if it moves
the payment forward (``payments.apply_intent_status``).

A signature proves only that the event came from our processor account, not that the intent in
it is ours: anyone with the account's key can create an intent whose metadata names one of our
payments. An intent event is applied to a payment only when the intent's id is the one we
created for it, or, before we recorded that id, when its tag, amount, currency and customer are
all what we asked for (``payments.intent_mismatch``); anything else is an anomaly for finance
(``billing.payments.anomalies``), never applied. Refund events go through the same rule
(``refunds.apply_processor_refund``).
"""

from __future__ import annotations

from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billing.payments import anomalies
from billing.context import BillingSettings
from billing.payments.gateway import refund_result
from billing.models import Payment, PaymentStatus, WebhookEvent
from billing.payments.card import apply_intent_status, intent_mismatch
from billing.payments.refunds import apply_processor_refund

INTENT_EVENTS = {
    "payment_intent.succeeded": PaymentStatus.SUCCEEDED,
    "payment_intent.payment_failed": PaymentStatus.FAILED,
    "payment_intent.processing": PaymentStatus.PROCESSING,
    "payment_intent.requires_action": PaymentStatus.REQUIRES_ACTION,
    "payment_intent.canceled": PaymentStatus.CANCELED,
}
# Events whose object is one refund.
REFUND_EVENTS = ("refund.created", "refund.updated", "refund.failed", "charge.refund.updated")


def _intent_fields(intent: Mapping[str, Any]) -> dict[str, Any]:
    customer = intent.get("customer")
    return {"ref": intent.get("id"), "amount_minor": intent.get("amount"),
            "currency": intent.get("currency"),
            "customer_ref": customer.get("id") if isinstance(customer, dict) else customer,
            "metadata": intent.get("metadata") or {}}


def _payment_for(session: Session, intent: Mapping[str, Any], event_id: str) -> Payment | None:
    """The payment this intent is ours for, or None (an anomaly recorded when it names one)."""
    fields = _intent_fields(intent)
    payment = session.scalar(select(Payment).where(Payment.gateway_ref == fields["ref"])
                             .with_for_update())
    kind = anomalies.INTENT_MISMATCH
    if payment is None:
        # The event can overtake our own recording of the intent's id: find it by our id.
        payment_id = str(fields["metadata"].get("payment_id", ""))
        if not payment_id.isdigit():
            return None
        payment = session.scalar(select(Payment).where(Payment.id == int(payment_id))
                                 .with_for_update())
        if payment is None:
            return None
        kind = anomalies.STRANGER_INTENT
    reason = intent_mismatch(session, payment, **fields, full=payment.gateway_ref is None)
    if reason is not None:
        anomalies.record(session, kind, object_ref=fields["ref"], payment_id=payment.id,
                         event_id=event_id, amount_minor=fields["amount_minor"],
                         currency=(fields["currency"] or "").upper() or None, message=reason,
                         detail={"status": intent.get("status"), "found_by": "webhook"})
        return None
    if payment.gateway_ref is None:
        payment.gateway_ref = fields["ref"]
    return payment


def _apply_intent(session: Session, event_id: str, event_type: str,
                  intent: Mapping[str, Any], settings: BillingSettings) -> str:
    payment = _payment_for(session, intent, event_id)
    if payment is None:
        return "no payment of ours"
    error = intent.get("last_payment_error") or {}
    before = payment.status
    changed = apply_intent_status(
        session, payment, INTENT_EVENTS[event_type], settings,
        failure_code=error.get("decline_code") or error.get("code"),
        failure_message=error.get("message"))
    return f"payment {payment.id}: {before} -> {payment.status}" if changed else \
        f"payment {payment.id}: stays {payment.status}"


def _apply_charge_refunds(session: Session, event_id: str, charge: Mapping[str, Any]) -> str:
    outcomes = []
    intent = charge.get("payment_intent")
    for refund in (charge.get("refunds") or {}).get("data") or []:
        refund = dict(refund, payment_intent=refund.get("payment_intent") or intent)
        outcomes.append(_apply_refund(session, event_id, refund))
    return "; ".join(outcomes) or "nothing to do"


def _apply_refund(session: Session, event_id: str, refund: Mapping[str, Any]) -> str:
    return apply_processor_refund(session, refund_result(refund), event_id=event_id)


def handle_event(session: Session, event: Mapping[str, Any], settings: BillingSettings,
                 gateway_name: str = "stripe") -> str:
    """Apply one verified gateway event; returns what it did (also stored with the event)."""
    event_id = event["id"]
    if session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id)):
        return "duplicate"
    event_type = event.get("type", "")
    obj = (event.get("data") or {}).get("object") or {}
    record = WebhookEvent(gateway=gateway_name, event_id=event_id, type=event_type,
                          object_ref=obj.get("id"), outcome="received")
    try:
        # Claimed before anything is applied: a concurrent delivery of the same event waits
        # here for the first one's transaction, and finds it done.
        with session.begin_nested():
            session.add(record)
    except IntegrityError:
        return "duplicate"
    match event_type:
        case kind if kind in INTENT_EVENTS:
            outcome = _apply_intent(session, event_id, kind, obj, settings)
        case "charge.refunded":
            outcome = _apply_charge_refunds(session, event_id, obj)
        case kind if kind in REFUND_EVENTS:
            outcome = _apply_refund(session, event_id, obj)
        case _:
            outcome = "ignored"
    record.outcome = outcome[:200]
    return outcome
