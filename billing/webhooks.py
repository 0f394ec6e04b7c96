"""Gateway events, applied once and forward only.

The webhook view verifies the signature on the raw body and hands the event, a plain dict, to
``handle_event``. The event's id is recorded in the same transaction as its effects: a
duplicate delivery finds it and changes nothing; two deliveries racing cannot both commit (the
id is unique). Stripe does not order its events, so each outcome is applied only if it moves
the payment forward (``payments.apply_intent_status``).
"""

from __future__ import annotations

from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.context import BillingSettings
from billing.models import Payment, Refund, WebhookEvent
from billing.payments import apply_intent_status
from billing.refunds import complete_refund

INTENT_EVENTS = {
    "payment_intent.succeeded": "succeeded",
    "payment_intent.payment_failed": "failed",
    "payment_intent.processing": "processing",
    "payment_intent.requires_action": "requires_action",
    "payment_intent.canceled": "canceled",
}


def _payment_for(session: Session, intent: Mapping[str, Any]) -> Payment | None:
    payment = session.scalar(select(Payment).where(Payment.gateway_ref == intent.get("id"))
                             .with_for_update())
    if payment is not None:
        return payment
    # The event can overtake our own recording of the intent's id: find it by our id.
    payment_id = (intent.get("metadata") or {}).get("payment_id", "")
    if not str(payment_id).isdigit():
        return None
    payment = session.scalar(select(Payment).where(Payment.id == int(payment_id))
                             .with_for_update())
    if payment is not None and payment.gateway_ref is None:
        payment.gateway_ref = intent.get("id")
    return payment


def _apply_intent(session: Session, event_type: str, intent: Mapping[str, Any],
                  settings: BillingSettings) -> str:
    payment = _payment_for(session, intent)
    if payment is None:
        return "no such payment"
    error = intent.get("last_payment_error") or {}
    before = payment.status
    changed = apply_intent_status(
        session, payment, INTENT_EVENTS[event_type], settings,
        failure_code=error.get("decline_code") or error.get("code"),
        failure_message=error.get("message"))
    return f"payment {payment.id}: {before} -> {payment.status}" if changed else \
        f"payment {payment.id}: stays {payment.status}"


def _apply_refund(session: Session, charge: Mapping[str, Any]) -> str:
    outcomes = []
    refunds = (charge.get("refunds") or {}).get("data") or []
    for gateway_refund in refunds:
        refund_id = (gateway_refund.get("metadata") or {}).get("refund_id", "")
        if not str(refund_id).isdigit():
            continue
        refund = session.get(Refund, int(refund_id))
        if refund is not None and refund.status == "pending" and \
                gateway_refund.get("status") == "succeeded":
            complete_refund(session, refund.id, gateway_ref=gateway_refund.get("id"))
            outcomes.append(f"refund {refund.id} succeeded")
    return "; ".join(outcomes) or "nothing to do"


def handle_event(session: Session, event: Mapping[str, Any], settings: BillingSettings,
                 gateway_name: str = "stripe") -> str:
    """Apply one verified gateway event; returns what it did (also stored with the event)."""
    event_id = event["id"]
    if session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id)):
        return "duplicate"
    event_type = event.get("type", "")
    obj = (event.get("data") or {}).get("object") or {}
    match event_type:
        case kind if kind in INTENT_EVENTS:
            outcome = _apply_intent(session, kind, obj, settings)
        case "charge.refunded":
            outcome = _apply_refund(session, obj)
        case _:
            outcome = "ignored"
    session.add(WebhookEvent(gateway=gateway_name, event_id=event_id, type=event_type,
                             object_ref=obj.get("id"), outcome=outcome[:200]))
    return outcome
