"""Payment anomalies: what the processor reported that we did not ask for, kept for finance.

The processor is outside the marketplace and shared: anyone holding the account's key can create
an intent whose metadata names one of our payments, refund a charge from the dashboard, or change
an amount. Nothing it reports moves money here unless it matches what we asked for (the intent id
we created, or before we recorded it, our tag *and* amount, currency and customer). Anything else
is recorded here, once per finding, and listed to platform finance beside the reconciliation;
it is never applied.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from market.core import audit
from market.accounts.authz import Principal
from market.core.errors import Forbidden
from market.core.keyset import Keyset, desc
from billing.models import PaymentAnomaly

# The kinds of finding, for finance to read.
STRANGER_INTENT = "stranger_intent"          # an intent we did not create names our payment
INTENT_MISMATCH = "intent_mismatch"          # our intent, but its amount or currency differs
UNKNOWN_REFUND = "unknown_refund"            # a refund naming our refund that we did not make
OUTSIDE_REFUND = "outside_refund"            # a refund made elsewhere that cannot be booked
REFUND_REVERSED = "refund_reversed"          # a refund we booked as done, later failed


def record(session: Session, kind: str, *, object_ref: str | None, message: str,
           gateway: str = "stripe", payment_id: int | None = None,
           refund_id: int | None = None, event_id: str | None = None,
           amount_minor: int | None = None, currency: str | None = None,
           detail: dict[str, Any] | None = None) -> PaymentAnomaly:
    """Record a finding once (by kind and the processor's object); a repeat returns the first."""
    key = f"{kind}:{object_ref or event_id or payment_id}"[:160]
    found = session.scalar(select(PaymentAnomaly).where(PaymentAnomaly.key == key))
    if found is not None:
        return found
    anomaly = PaymentAnomaly(key=key, kind=kind, gateway=gateway, object_ref=object_ref,
                             payment_id=payment_id, refund_id=refund_id, event_id=event_id,
                             amount_minor=amount_minor, currency=currency,
                             message=message[:500], detail=detail or {})
    try:
        # A savepoint: another run recording the same finding at once must not undo our unit.
        with session.begin_nested():
            session.add(anomaly)
    except IntegrityError:
        return session.scalar(select(PaymentAnomaly).where(PaymentAnomaly.key == key))
    audit.record(session, "payment.anomaly", object_type="payment_anomaly",
                 object_id=anomaly.id,
                 data={"kind": kind, "object_ref": object_ref, "payment_id": payment_id,
                       "refund_id": refund_id, "message": message[:200]})
    return anomaly


def list_anomalies(session: Session, principal: Principal) -> Keyset[PaymentAnomaly]:
    """The newest findings first; the platform's staff only (they span every organization)."""
    if not principal.is_platform:
        raise Forbidden("Payment anomalies cover the whole platform: its staff only.")
    return Keyset(session, select(PaymentAnomaly),
                  [desc(PaymentAnomaly.created_at), desc(PaymentAnomaly.id)])
