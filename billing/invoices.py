"""Bank-transfer invoices (对公转账): issuing one for an order, and finding them.

An invoice carries a payment reference the buyer writes on the transfer: ten characters of an
alphabet read without confusion, the last a check character (mod 32), so a mistyped reference
is caught when finance enters it. What money received against an invoice does is
``billing.payments.bank_transfer``'s.
"""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.context import BillingSettings
from billing.errors import CardPaymentInFlight
from billing.finance import finance_may_act, finance_sees
from billing.models import Invoice, InvoiceStatus, Order, OrderStatus, Payment, PaymentStatus
from billing.orders import READABLE_ALPHABET
from market.accounts.authz import Principal
from market.core import audit
from market.core.audit import SYSTEM, Actor
from market.core.db import business_calendar, utcnow
from market.core.errors import Conflict, InvalidInput, NotFound
from market.core.keyset import Keyset, asc

# A payment in these may still succeed (a succeeded one has paid the order already).
PAYMENT_IN_FLIGHT = (PaymentStatus.CREATED, PaymentStatus.PROCESSING,
                     PaymentStatus.REQUIRES_ACTION)


def payment_reference() -> str:
    """A reference the buyer writes on the transfer: ten characters, the last a check
    character (mod 32), so a mistyped reference is caught when finance enters it."""
    body = "".join(secrets.choice(READABLE_ALPHABET) for _ in range(9))
    return body + _check_char(body)


def _check_char(body: str) -> str:
    total = sum((i + 1) * READABLE_ALPHABET.index(c) for i, c in enumerate(body))
    return READABLE_ALPHABET[total % 32]


def reference_is_valid(reference: str) -> bool:
    reference = reference.strip().upper()
    return (len(reference) == 10 and all(c in READABLE_ALPHABET for c in reference)
            and _check_char(reference[:9]) == reference[9])


def issue_invoice(session: Session, order: Order, settings: BillingSettings,
                  actor: Actor = SYSTEM) -> Invoice:
    """The bank-transfer invoice of an order (issued once; a second call returns it).

    Not while a card payment of the order is under way (``CardPaymentInFlight``): it may still
    succeed, and the buyer would pay twice.
    """
    if session.scalar(select(Payment.id).where(Payment.order_id == order.id,
                                               Payment.status.in_(PAYMENT_IN_FLIGHT)).limit(1)):
        raise CardPaymentInFlight()
    if order.status != OrderStatus.AWAITING_PAYMENT:
        raise Conflict(f"This order is {order.status.replace('_', ' ')}; it cannot be paid "
                       "again.", field="order")
    if order.invoice is not None:
        return order.invoice
    invoice = Invoice(
        number=order.number.replace("DM-", "INV-", 1), order=order,
        organization_id=order.organization_id, status=InvoiceStatus.OPEN,
        currency=order.currency,
        amount_due_minor=order.total_minor, amount_received_minor=0,
        payment_reference=payment_reference(),
        due_on=business_calendar(session).day_of(utcnow())
        + dt.timedelta(days=settings.invoice_due_days))
    order.payment_method = "bank_transfer"
    session.add(invoice)
    session.flush()  # the audit entry names the invoice's id
    audit.record(session, "invoice.issued", actor=actor, organization_id=order.organization_id,
                 object_type="invoice", object_id=invoice.id,
                 data={"number": invoice.number, "order": order.number,
                       "amount": str(order.total), "reference": invoice.payment_reference})
    return invoice


def get_invoice(session: Session, principal: Principal, invoice_id: int, *,
                as_finance: bool = False, for_update: bool = False) -> Invoice:
    query = select(Invoice).where(Invoice.id == invoice_id)
    invoice = session.scalar(query.with_for_update() if for_update else query)
    if invoice is None:
        raise NotFound("No such invoice.")
    if as_finance:
        finance_may_act(session, principal, invoice.order)
    elif invoice.organization_id != principal.organization_id:
        raise NotFound("No such invoice.")
    return invoice


def find_invoice_by_reference(session: Session, principal: Principal, reference: str
                              ) -> Invoice:
    if not reference_is_valid(reference):
        raise InvalidInput("This is not a valid payment reference (check its characters).",
                           field="payment_reference")
    invoice = session.scalar(select(Invoice).where(
        Invoice.payment_reference == reference.strip().upper()))
    if invoice is None:
        raise NotFound("No invoice has this payment reference.", field="payment_reference")
    finance_may_act(session, principal, invoice.order)
    return invoice


def open_invoices(session: Session, principal: Principal) -> Keyset[Invoice]:
    """Invoices awaiting money, for finance (the platform's: all; an exchange's: its own), the
    soonest due first."""
    awaiting = select(Invoice).where(Invoice.status.in_((InvoiceStatus.OPEN,
                                                          InvoiceStatus.PARTIALLY_PAID)))
    return Keyset(session, awaiting,
                  [asc(Invoice.due_on), asc(Invoice.id)],
                  keep=lambda invoice: finance_sees(session, principal, invoice.order))
