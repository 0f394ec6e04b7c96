"""Money received by bank transfer against an invoice (``billing.invoices``).

Finance records each receipt; money received is first the buyer's prepaid credit, and once the
invoice is covered it pays the order (``billing.payments.settle``): an overpayment stays as
credit, an underpayment leaves the invoice partly paid. Nobody records money into an order
their organization is a party to, and from the dual-control threshold a receipt waits, with
nothing posted, until a second person confirms it.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.context import BillingSettings
from billing.finance import finance_may_act, finance_sees, refuse_party_to_order
from billing.models import (BankReceipt, Invoice, InvoiceStatus, Order, Payment, PaymentStatus,
                            ReceiptStatus)
from billing.payments.settle import settle_payment
from billing.settlement.ledger import Line, Purpose, get_account, post
from market.accounts.authz import Maker, Principal, authorize, require_checker
from market.core import audit
from market.core.db import business_calendar, utcnow
from market.core.errors import Conflict, InvalidInput, NotFound
from market.core.keyset import Keyset, asc
from pricing.money import Money


def record_bank_receipt(session: Session, principal: Principal, invoice: Invoice, *,
                        amount: Money, received_on: dt.date, bank_reference: str,
                        settings: BillingSettings) -> BankReceipt:
    """Record money received against an invoice.

    The receipt becomes the buyer's prepaid credit; when the invoice is covered, the credit
    pays the order (split and fulfilled in this transaction). Overpayment stays as credit;
    underpayment leaves the invoice partly paid until the rest arrives.

    Nobody records money into an order their organization is a party to. From the
    dual-control threshold the receipt waits, with nothing posted, until a second person
    confirms it (``confirm_bank_receipt``).
    """
    refuse_party_to_order(session, principal, invoice.order)
    if amount.currency != invoice.currency:
        raise InvalidInput(f"The invoice is in {invoice.currency}.", field="amount.currency")
    if not amount.is_positive():
        raise InvalidInput("The amount received must be more than zero.", field="amount")
    if received_on > business_calendar(session).day_of(utcnow()):  # the business day
        raise InvalidInput("The money cannot have arrived in the future.", field="received_on")
    bank_reference = bank_reference.strip()
    if not bank_reference:
        raise InvalidInput("Give the bank's reference of the transfer.", field="bank_reference")
    if session.scalar(select(BankReceipt).where(BankReceipt.bank_reference == bank_reference,
                                                BankReceipt.status != ReceiptStatus.REJECTED)):
        raise Conflict("A receipt with this bank reference is already recorded.",
                       field="bank_reference")
    _receivable(invoice)
    waits = settings.needs_second_approver(amount)
    receipt = BankReceipt(invoice=invoice, amount_minor=amount.minor, currency=amount.currency,
                          received_on=received_on, bank_reference=bank_reference,
                          status=(ReceiptStatus.PENDING_APPROVAL if waits
                                  else ReceiptStatus.CONFIRMED),
                          recorded_by_id=principal.user_id,
                          recorded_by_org_id=principal.organization_id,
                          recorded_by_role=principal.member_role)
    session.add(receipt)
    session.flush()  # the ledger posting and the audit entry name the receipt's id
    audit.record(session, "invoice.receipt_recorded", actor=principal.actor,
                 organization_id=invoice.organization_id, object_type="invoice",
                 object_id=invoice.id,
                 data={"receipt": receipt.id, "amount": str(amount),
                       "bank_reference": bank_reference, "status": receipt.status,
                       "received_on": received_on.isoformat()})
    if not waits:
        _apply_receipt(session, receipt, settings)
    return receipt


def _receivable(invoice: Invoice) -> None:
    if invoice.status in (InvoiceStatus.PAID, InvoiceStatus.VOID):
        raise Conflict(f"The invoice is {invoice.status}; record this money as a refund to the "
                       "buyer instead.", field="invoice")


def _apply_receipt(session: Session, receipt: BankReceipt, settings: BillingSettings) -> None:
    """Post a confirmed receipt: the money becomes the buyer's credit, which pays the invoice
    once it is covered."""
    invoice = receipt.invoice
    amount = Money.from_minor(receipt.amount_minor, receipt.currency)
    order = session.scalar(select(Order).where(Order.id == invoice.order_id).with_for_update())
    receipt.excess_minor = max(receipt.amount_minor - invoice.outstanding_minor, 0)
    post(session, "bank_receipt", [
        Line.debit(get_account(session, Purpose.PLATFORM_CLEARING, amount.currency), amount),
        Line.credit(get_account(session, Purpose.BUYER_PREPAID, amount.currency,
                                invoice.organization_id), amount)],
        idempotency_key=f"bank_receipt:{receipt.id}", reference=("bank_receipt", receipt.id),
        memo={"invoice": invoice.number, "bank_reference": receipt.bank_reference})
    invoice.amount_received_minor += amount.minor
    if invoice.amount_received_minor < invoice.amount_due_minor:
        invoice.status = InvoiceStatus.PARTIALLY_PAID
        return
    invoice.status = InvoiceStatus.PAID
    invoice.paid_at = utcnow()
    payment = Payment(order_id=order.id, organization_id=order.organization_id,
                      method="bank_transfer", status=PaymentStatus.PROCESSING,
                      amount_minor=invoice.amount_due_minor, currency=invoice.currency,
                      idempotency_key=f"invoice:{invoice.id}")
    session.add(payment)
    session.flush()  # the ledger posting names the payment's id
    settle_payment(session, payment, settings, paid_from_prepaid=True)


def get_receipt_for_finance(session: Session, principal: Principal, receipt_id: int
                            ) -> BankReceipt:
    """A receipt, locked, for finance that may act on its order (404 for anyone else)."""
    authorize(principal, "payments:manage")
    receipt = session.scalar(select(BankReceipt).where(BankReceipt.id == receipt_id)
                             .with_for_update())
    if receipt is None:
        raise NotFound("No such receipt.")
    finance_may_act(session, principal, receipt.invoice.order)
    return receipt


def _decide(session: Session, principal: Principal, receipt: BankReceipt, note: str) -> None:
    if receipt.status != ReceiptStatus.PENDING_APPROVAL:
        raise Conflict(f"The receipt is {receipt.status.replace('_', ' ')}; only a receipt "
                       "awaiting approval is confirmed or rejected.", field="status")
    finance_may_act(session, principal, receipt.invoice.order)
    refuse_party_to_order(session, principal, receipt.invoice.order)
    require_checker(principal, Maker(receipt.recorded_by_id, receipt.recorded_by_org_id,
                                     receipt.recorded_by_role), item="receipt")
    if len(note) > 500:
        raise InvalidInput("At most 500 characters.", field="note")
    receipt.decided_by_id = principal.user_id
    receipt.decided_at = utcnow()
    receipt.decision_note = note


def confirm_bank_receipt(session: Session, principal: Principal, receipt: BankReceipt, *,
                         settings: BillingSettings, note: str = "") -> BankReceipt:
    """The checker confirms a receipt awaiting approval; it is posted now, as
    ``record_bank_receipt`` posts one under the threshold."""
    _decide(session, principal, receipt, note.strip())
    invoice = session.scalar(select(Invoice).where(Invoice.id == receipt.invoice_id)
                             .with_for_update())
    _receivable(invoice)
    receipt.status = ReceiptStatus.CONFIRMED
    audit.record(session, "invoice.receipt_confirmed", actor=principal.actor,
                 organization_id=invoice.organization_id, object_type="invoice",
                 object_id=invoice.id,
                 data={"receipt": receipt.id, "bank_reference": receipt.bank_reference,
                       "amount": str(Money.from_minor(receipt.amount_minor, receipt.currency))})
    _apply_receipt(session, receipt, settings)
    return receipt


def reject_bank_receipt(session: Session, principal: Principal, receipt: BankReceipt, *,
                        note: str) -> BankReceipt:
    """The checker rejects a receipt awaiting approval: nothing was posted, and its bank
    reference may be recorded again, corrected."""
    note = (note or "").strip()
    if not note:
        raise InvalidInput("Say why the receipt is rejected.", field="note")
    _decide(session, principal, receipt, note)
    receipt.status = ReceiptStatus.REJECTED
    audit.record(session, "invoice.receipt_rejected", actor=principal.actor,
                 organization_id=receipt.invoice.organization_id, object_type="invoice",
                 object_id=receipt.invoice_id,
                 data={"receipt": receipt.id, "bank_reference": receipt.bank_reference,
                       "note": note})
    return receipt


def pending_receipts(session: Session, principal: Principal) -> Keyset[BankReceipt]:
    """Receipts awaiting a second person, that this principal's finance may see, oldest
    first."""
    authorize(principal, "payments:manage")
    waiting = select(BankReceipt).where(BankReceipt.status == ReceiptStatus.PENDING_APPROVAL)
    return Keyset(session, waiting,
                  [asc(BankReceipt.id)],
                  keep=lambda receipt: finance_sees(session, principal, receipt.invoice.order))
