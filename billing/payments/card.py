"""Collecting an order's total: by card through the gateway, or by bank transfer (对公转账).

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

A bank transfer is an invoice with a payment reference. Finance records each receipt; money
received is first the buyer's prepaid credit, and once the invoice is covered it pays the order
(an overpayment stays as credit, an underpayment leaves the invoice partly paid).

Settling a payment posts the split — tax, the platform's fee, each supply-chain participant's
share from the revision snapshotted on each line — as one balanced ledger transaction, marks the
order paid and grants what it bought, all in the outcome's transaction.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections import defaultdict
from typing import Any, Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.core import audit
from market.accounts.authz import Maker, Principal, authorize, refuse_party, require_checker
from market.accounts.models import Organization
from market.core.audit import SYSTEM, Actor
from market.catalog.models import Listing
from market.core.db import Database, business_calendar, utcnow
from market.core.errors import Conflict, InvalidInput, MarketError, NotFound
from market.core.keyset import Keyset, asc
from billing import certificates, entitlements
from billing.context import BillingSettings
from billing.settlement.ledger import Line, Purpose, get_account, post
from billing.orders import READABLE_ALPHABET, order_parties
from billing.payments.gateway import CardGateway, GatewayError
from billing.models import (
    LIVE_PAYMENT_STATUSES, BankReceipt, Invoice, Order, Payment, PaymentProfile,
)
from billing.runs import JobContext
from billing.settlement.split import (
    PLATFORM, TAX, post_payment, prepaid_key, receivable_key, split_payment,
)
from pricing.money import Money

# Forward-only: an outcome applies only when it ranks above the payment's status.
_RANK = {"created": 0, "processing": 1, "requires_action": 1, "failed": 2, "canceled": 2,
         "succeeded": 3}


class GatewayUnavailable(MarketError):
    status = 502
    title = "Payment processor unavailable"
    default_code = "processor_unavailable"


# Splitting and settling -------------------------------------------------------------------------

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
            # Usage was shared out day by day as it was recognized (``billing.metering.recognition``):
            # paying its invoice settles the buyer's receivable and the tax, nothing more.
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


def _settle(session: Session, payment: Payment, settings: BillingSettings, *,
            paid_from_prepaid: bool = False) -> None:
    """Mark a payment succeeded and, in the same transaction, pay and fulfil its order."""
    order = session.scalar(select(Order).where(Order.id == payment.order_id).with_for_update())
    payment.status = "succeeded"
    payment.succeeded_at = utcnow()
    payment.failure_code = payment.failure_message = None
    if order.status != "awaiting_payment":
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
    order.status = "paid"
    order.paid_minor = payment.amount_minor
    order.paid_at = payment.succeeded_at
    fulfil(session, order, settings)
    from billing.budgets import lines as budgets
    budgets.on_order_paid(session, order)  # its commitment becomes expenditure
    audit.record(session, "order.paid", organization_id=order.organization_id,
                 object_type="order", object_id=order.id,
                 data={"number": order.number, "payment_id": payment.id,
                       "method": payment.method, "amount": str(payment.amount),
                       "split": payment.split})


def fulfil(session: Session, order: Order, settings: BillingSettings) -> None:
    """Grant what a paid order bought; each kind of order knows its own."""
    match order.kind:
        case "mall" | "token_pack":
            entitlements.grant_order(session, order)
            session.flush()  # certificates name the lines, whose ids must exist
            for line in order.lines:
                if line.kind == "mall_package":
                    certificates.issue(session, order, line, settings.certificate_key)
        case "subscription" | "renewal" | "plan_change":
            from billing import subscriptions
            subscriptions.on_paid(session, order)
        case "custom":
            from billing import deals
            deals.on_milestone_paid(session, order, settings)
        case "usage":
            from billing.metering import postpaid
            postpaid.on_paid(session, order)


def unfulfil(session: Session, order: Order, reason: str) -> None:
    """Take back what a fully refunded order granted."""
    match order.kind:
        case "subscription" | "renewal" | "plan_change":
            from billing import subscriptions
            subscriptions.on_refunded(session, order)
        case _:
            entitlements.revoke_order(session, order, reason)


# Card payments ----------------------------------------------------------------------------------

def _lock_order(session: Session, order_id: int) -> Order:
    order = session.scalar(select(Order).where(Order.id == order_id).with_for_update())
    if order is None:
        raise NotFound("No such order.")
    return order


def _payable(order: Order, principal: Principal | None) -> None:
    if principal is not None and order.organization_id != principal.organization_id:
        raise NotFound("No such order.")
    if order.status == "paid" or order.status.endswith("refunded"):
        raise Conflict("This order is already paid.", field="order")
    if order.status != "awaiting_payment":
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


def save_card(db: Database, gateway: CardGateway, principal: Principal, payment_method_ref: str
              ) -> PaymentProfile:
    """Keep a card (a gateway payment method, confirmed by Stripe.js) for later payments."""
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
    if gateway is None:
        raise Conflict("Card payments are not enabled here; pay by bank transfer.",
                       field="payment_method")
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
                          method="card", status="created", amount_minor=order.total_minor,
                          currency=order.currency, off_session=off_session,
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


def payment_tag(order_number: str, payment_id: int) -> str:
    """How the processor's copy of a payment names ours: unique across every installation's
    history (the order number is random), so reconciliation never adopts a stranger's intent."""
    return f"{order_number}/{payment_id}"


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
    if payment.status == "succeeded" or _RANK[status] < _RANK[payment.status] or (
            status == payment.status):
        return False
    if status == "succeeded":
        _settle(session, payment, settings)
    else:
        if _RANK[status] == _RANK[payment.status] and status != "requires_action":
            return False
        payment.status = status
        if status in ("failed", "canceled"):
            payment.failure_code = failure_code
            payment.failure_message = (failure_message or "")[:500] or None
            _after_failure(session, payment, settings)
    audit.record(session, f"payment.{status}", organization_id=payment.organization_id,
                 object_type="payment", object_id=payment.id,
                 data={"order_id": payment.order_id, "amount": str(payment.amount),
                       "failure_code": failure_code})
    return True


def _after_failure(session: Session, payment: Payment, settings: BillingSettings) -> None:
    order = session.get(Order, payment.order_id)
    if order.kind == "renewal":
        from billing import subscriptions
        # The dunning schedule is a setting: the hook needs them to plan the next retry.
        subscriptions.on_renewal_failed(session, order, payment, settings)


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
                                  Payment.status.in_(("created", "processing",
                                                      "requires_action")),
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
                apply_intent_status(session, payment, "failed", settings,
                                    failure_code="not_found",
                                    failure_message="The processor has no such payment.")
            # Else only intents we did not create: recorded for finance, nothing applied.
            after = payment.status
        key = after if after in ("succeeded", "failed") and after != before else "unchanged"
        counts[key] += 1
        progress(f"payment {payment_id}: {before} -> {after}")
    return counts


def _ours(session: Session, payment: Payment, found: list[Any]) -> tuple[Any, list[Any]]:
    """The intent among ``found`` that is ours (see ``intent_mismatch``), and the others,
    each recorded as an anomaly."""
    from billing.payments import anomalies

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


# Bank transfer ----------------------------------------------------------------------------------

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
    """The bank-transfer invoice of an order (issued once; a second call returns it)."""
    if order.status != "awaiting_payment":
        raise Conflict(f"This order is {order.status.replace('_', ' ')}; it cannot be paid "
                       "again.", field="order")
    if order.invoice is not None:
        return order.invoice
    invoice = Invoice(
        number=order.number.replace("DM-", "INV-", 1), order=order,
        organization_id=order.organization_id, status="open", currency=order.currency,
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


def finance_may_act(session: Session, principal: Principal, order: Order) -> None:
    """Platform finance acts on every order; an exchange's finance on orders for datasets
    listed through it. Anyone else: the order does not exist for them."""
    if principal.is_platform:
        return
    if principal.is_exchange:
        dataset_ids = [line.dataset_id for line in order.lines if line.dataset_id]
        if dataset_ids and session.scalar(select(func.count()).select_from(Listing).where(
                Listing.dataset_id.in_(dataset_ids),
                Listing.exchange_id == principal.organization_id)):
            return
    raise NotFound("No such order.")


def _finance_sees(session: Session, principal: Principal, order: Order) -> bool:
    try:
        finance_may_act(session, principal, order)
    except NotFound:
        return False
    return True


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


def refuse_party_to_order(session: Session, principal: Principal, order: Order) -> None:
    """403 when the principal's organization is a party to the order (buyer, seller or
    supply-chain participant): it never moves money on it. Whether it may see the order at
    all (``finance_may_act``) is the caller's first check."""
    refuse_party(principal, order_parties(session, order), item="order",
                 action="confirm money for")


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
                                                BankReceipt.status != "rejected")):
        raise Conflict("A receipt with this bank reference is already recorded.",
                       field="bank_reference")
    _receivable(invoice)
    waits = settings.needs_second_approver(amount)
    receipt = BankReceipt(invoice=invoice, amount_minor=amount.minor, currency=amount.currency,
                          received_on=received_on, bank_reference=bank_reference,
                          status="pending_approval" if waits else "confirmed",
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
    if invoice.status in ("paid", "void"):
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
        invoice.status = "partially_paid"
        return
    invoice.status = "paid"
    invoice.paid_at = utcnow()
    payment = Payment(order_id=order.id, organization_id=order.organization_id,
                      method="bank_transfer", status="processing",
                      amount_minor=invoice.amount_due_minor, currency=invoice.currency,
                      idempotency_key=f"invoice:{invoice.id}")
    session.add(payment)
    session.flush()  # the ledger posting names the payment's id
    _settle(session, payment, settings, paid_from_prepaid=True)


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
    if receipt.status != "pending_approval":
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
    receipt.status = "confirmed"
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
    receipt.status = "rejected"
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
    return Keyset(session, select(BankReceipt).where(BankReceipt.status == "pending_approval"),
                  [asc(BankReceipt.id)],
                  keep=lambda receipt: _finance_sees(session, principal, receipt.invoice.order))


def get_payment_for_finance(session: Session, principal: Principal, payment_id: int, *,
                            for_update: bool = False) -> Payment:
    query = select(Payment).where(Payment.id == payment_id)
    payment = session.scalar(query.with_for_update() if for_update else query)
    if payment is None:
        raise NotFound("No such payment.")
    finance_may_act(session, principal, payment.order)
    return payment


def open_invoices(session: Session, principal: Principal) -> Keyset[Invoice]:
    """Invoices awaiting money, for finance (the platform's: all; an exchange's: its own), the
    soonest due first."""
    return Keyset(session, select(Invoice).where(Invoice.status.in_(("open", "partially_paid"))),
                  [asc(Invoice.due_on), asc(Invoice.id)],
                  keep=lambda invoice: _finance_sees(session, principal, invoice.order))


# The scheduled reconciliation ---------------------------------------------------------------------

def run_reconciliation(ctx: JobContext) -> dict:
    """Job ``reconcile-payments``: card payments and refunds left unfinished, and refunds
    made outside the marketplace."""
    from billing.payments import refunds

    settings = BillingSettings.from_settings(ctx.settings)
    counts = reconcile(ctx.db, ctx.gateway, settings, now=ctx.now, progress=ctx.progress)
    counts["refunds"] = refunds.reconcile_refunds(ctx.db, ctx.gateway, now=ctx.now,
                                                  progress=ctx.progress)
    return counts

