"""A period's reconciliation: where its money came from and where it went, from the ledger, and
how our card payments compare with the card processor's.

The ledger's side must satisfy, per currency, Σ participants + platform revenue + tax + Σ buyer
credit movement = collected − refunds (``difference`` zero); ``billing.settlement.exports``
writes it as CSV and XLSX so that the identity can be checked from the file alone.

It covers the whole platform, so only the platform's staff (or the operator, ``actor`` None)
reconcile. The processor is asked, through the gateway, only for the intents created in the
period's window (and the day before it: an intent is created when its payment is confirmed,
and a buyer's 3-D Secure check may finish after midnight); when it does not answer, the
reconciliation is refused with ``GatewayUnavailable`` naming it, never half-computed.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any, Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing.models import BankReceipt, Payment, PaymentStatus, Refund
from billing.models.statements import SettlementStatement
from billing.errors import GatewayUnavailable
from billing.payments.gateway import CardGateway, GatewayError, payment_tag
from billing.settlement.compute import period_bounds, window_start
from billing.settlement.ledger import LedgerAccount, LedgerEntry, LedgerTransaction, Purpose
from market.accounts.authz import Principal, authorize
from market.core.db import business_calendar
from market.core.errors import Forbidden

COLLECTED = ("payment", "payment_unapplied", "bank_receipt")
# How long before the window the processor is asked from (see the module's docstring).
INTENT_LEAD = dt.timedelta(days=1)


def _period_window(session: Session, period: str) -> tuple[dt.datetime, dt.datetime]:
    """The instants a period covers: its statements' window once closed, else the month."""
    start = window_start(session, period)
    cutoff = session.scalar(select(func.max(SettlementStatement.cutoff))
                            .where(SettlementStatement.period == period))
    if cutoff is None:
        cutoff = business_calendar(session).start_of_day(period_bounds(period)[1])
    return start, cutoff


def reconcile(session: Session, period: str, *, actor: Principal | None,
              gateway: CardGateway | None = None) -> dict[str, Any]:
    """Where the period's money came from and where it went, per currency, in minor units.

    From the ledger, over the period's window (its statements' once closed):

    - ``gross_collected``: platform_clearing debits of card payments (``payment``, and
      ``payment_unapplied`` late successes kept as credit) and bank receipts;
    - ``refunds`` and ``payouts``: platform_clearing credits of those kinds;
    - ``participants`` (by kind, payouts excluded), ``platform_revenue``, ``tax_payable``,
      ``buyer_prepaid`` and ``buyer_receivable``: what each came to be owed (credit positive;
      a buyer's receivable growing is negative);
    - ``difference`` = participants + platform + tax + buyer credit and receivable changes −
      (gross collected − refunds): zero when every movement of money is accounted for;
    - ``participants_by_organization``: what each participant came to be owed (its statement's
      activity, payouts excluded), and ``payouts_by_organization``;
    - ``buyer_credit``: each buyer's credit movement by what it is (``BUYER_CREDIT_PARTS``):
      its prepaid token ``wallet``, money it ``overpaid`` (bank receipts beyond their invoice,
      late card successes kept as credit), money ``underpaid`` (bank receipts held against an
      invoice not yet covered, less what paid an invoice), ``other`` prepaid movements, and its
      ``receivable`` (usage owed, less invoices paid). They sum to buyer_prepaid + receivable.

    With a ``gateway``, ``processor_difference`` is our succeeded card payments in the window
    minus the processor's succeeded PaymentIntents that carry their tags (``payment_tag``).
    ``actor`` None: the operator (a command).
    """
    if actor is not None:
        authorize(actor, "statements:manage")
        if not actor.is_platform:
            raise Forbidden("The reconciliation covers the whole platform: its staff only.")
    start, end = _period_window(session, period)
    rows = session.execute(
        select(LedgerAccount.purpose, LedgerEntry.currency, LedgerTransaction.kind,
               LedgerEntry.amount_minor, LedgerAccount.organization_id,
               LedgerTransaction.reference_type, LedgerTransaction.reference_id)
        .join(LedgerEntry, LedgerEntry.account_id == LedgerAccount.id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where(LedgerTransaction.occurred_at >= start, LedgerTransaction.occurred_at < end)
        .order_by(LedgerEntry.id)).all()
    report: dict[str, dict[str, Any]] = {}
    credit_part = _buyer_credit_classifier(session, rows)

    def of(currency: str) -> dict[str, Any]:
        return report.setdefault(currency, {
            "gross_collected": 0, "collected_by_kind": {}, "refunds": 0, "payouts": 0,
            "participants": 0, "participants_by_kind": {}, "participants_by_organization": {},
            "payouts_by_organization": {}, "platform_revenue": 0,
            "tax_payable": 0, "buyer_prepaid": 0, "buyer_receivable": 0, "buyer_credit": {},
            "other_clearing": 0})

    def add(mapping: dict, key: Any, amount: int) -> None:
        mapping[key] = mapping.get(key, 0) + amount

    owed_keys = {Purpose.PLATFORM_REVENUE.value: "platform_revenue",
                 Purpose.TAX_PAYABLE.value: "tax_payable",
                 Purpose.BUYER_PREPAID.value: "buyer_prepaid",
                 Purpose.BUYER_RECEIVABLE.value: "buyer_receivable"}
    for purpose, currency, kind, amount, organization_id, ref_type, ref_id in rows:
        figures = of(currency)
        if purpose == Purpose.PLATFORM_CLEARING.value:
            if kind in COLLECTED and amount > 0:
                figures["gross_collected"] += amount
                figures["collected_by_kind"][kind] = \
                    figures["collected_by_kind"].get(kind, 0) + amount
            elif kind == "refund" and amount < 0:
                figures["refunds"] -= amount
            elif kind == "payout" and amount < 0:
                figures["payouts"] -= amount
            else:
                figures["other_clearing"] += amount
        elif purpose == Purpose.PARTICIPANT_PAYABLE.value:
            if kind != "payout":
                figures["participants"] -= amount
                figures["participants_by_kind"][kind] = \
                    figures["participants_by_kind"].get(kind, 0) - amount
                add(figures["participants_by_organization"], organization_id, -amount)
            else:
                add(figures["payouts_by_organization"], organization_id, amount)
        elif purpose in owed_keys:
            figures[owed_keys[purpose]] -= amount
            if purpose in (Purpose.BUYER_PREPAID.value, Purpose.BUYER_RECEIVABLE.value):
                parts = figures["buyer_credit"].setdefault(
                    organization_id, dict.fromkeys(BUYER_CREDIT_PARTS, 0))
                for part, share in credit_part(purpose, kind, amount, ref_type, ref_id):
                    parts[part] -= share
        else:  # payout_clearing: payouts in flight count as still owed by the platform
            figures["other_clearing"] -= amount
    for figures in report.values():
        figures["difference"] = (
            figures["participants"] + figures["platform_revenue"] + figures["tax_payable"]
            + figures["buyer_prepaid"] + figures["buyer_receivable"]
            - (figures["gross_collected"] - figures["refunds"]))
    if gateway is not None:
        ours = _card_payments(session, start, end)
        theirs = _processor_totals(gateway, start, end, set(ours["ids"]))
        for currency in set(ours["totals"]) | set(theirs):
            of(currency)["processor_difference"] = \
                ours["totals"].get(currency, 0) - theirs.get(currency, 0)
    return {"period": period, "from": start.isoformat(), "to": end.isoformat(),
            "currencies": report}


BUYER_CREDIT_PARTS = ("wallet", "overpaid", "underpaid", "other", "receivable")


def _buyer_credit_classifier(session: Session, rows: Iterable[Any]):
    """What each buyer-credit posting is: a function of (purpose, kind, amount, reference)
    giving the parts of ``BUYER_CREDIT_PARTS`` it moves, in debit-positive minor units.

    A bank receipt is money held against its invoice (``underpaid`` until the invoice is
    covered, when the payment out of that credit takes it back) except its ``excess_minor``,
    which was ``overpaid``. A refund out of prepaid credit returns a token pack (``wallet``) or
    a payment that was never applied to its order (``overpaid``)."""
    receipt_ids = {int(ref_id) for _, _, kind, _, _, ref_type, ref_id in rows
                   if kind == "bank_receipt" and ref_type == "bank_receipt"}
    refund_ids = {int(ref_id) for purpose, _, kind, _, _, ref_type, ref_id in rows
                  if kind == "refund" and ref_type == "refund"
                  and purpose == Purpose.BUYER_PREPAID.value}
    excess = dict(session.execute(select(BankReceipt.id, BankReceipt.excess_minor).where(
        BankReceipt.id.in_(receipt_ids))).all()) if receipt_ids else {}
    unapplied = set(session.scalars(
        select(Refund.id).join(Payment, Payment.id == Refund.payment_id)
        .where(Refund.id.in_(refund_ids), Payment.applied.is_(False)))) if refund_ids else set()

    def parts(purpose: str, kind: str, amount: int, ref_type: str | None,
              ref_id: str | None) -> list[tuple[str, int]]:
        if purpose == Purpose.BUYER_RECEIVABLE.value:
            return [("receivable", amount)]
        if kind == "usage" or (kind == "payment" and amount < 0):
            return [("wallet", amount)]  # tokens used from, or bought into, the wallet
        if kind == "payment":
            return [("underpaid", amount)]  # held bank money paying its invoice
        if kind == "bank_receipt" and ref_type == "bank_receipt":
            over = min(excess.get(int(ref_id), 0), -amount)
            return [("overpaid", -over), ("underpaid", amount + over)]
        if kind == "payment_unapplied":
            return [("overpaid", amount)]
        if kind == "refund":
            refund_id = int(ref_id) if ref_type == "refund" else None
            return [("overpaid" if refund_id in unapplied else "wallet", amount)]
        return [("other", amount)]

    return parts


def _card_payments(session: Session, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    payments = session.scalars(select(Payment).where(
        Payment.method == "card", Payment.status == PaymentStatus.SUCCEEDED,
        Payment.succeeded_at >= start, Payment.succeeded_at < end)).all()
    totals: dict[str, int] = defaultdict(int)
    for payment in payments:
        totals[payment.currency] += payment.amount_minor
    # Matched by the tag our payments carry at the processor (order number / payment id).
    return {"ids": [payment_tag(payment.order.number, payment.id) for payment in payments],
            "totals": dict(totals)}


def _processor_totals(gateway: CardGateway, start: dt.datetime, end: dt.datetime,
                      payment_tags: set[str]) -> dict[str, int]:
    """The processor's succeeded PaymentIntents for our payments of the window, summed per
    currency."""
    try:
        intents = gateway.list_succeeded_intents(start - INTENT_LEAD, end)
    except GatewayError as error:
        raise GatewayUnavailable(
            f"The card processor ({gateway.name}) did not answer ({error.code}), so card "
            "payments cannot be compared with it; try again shortly.",
            extensions={"processor": gateway.name}) from error
    totals: dict[str, int] = defaultdict(int)
    for intent in intents:
        if intent.metadata.get("payment") in payment_tags and intent.amount_minor is not None:
            totals[str(intent.currency)] += intent.amount_minor
    return dict(totals)
