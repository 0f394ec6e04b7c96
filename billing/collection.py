"""The jobs that bill and collect: ``renewals`` bills each due subscription's next period and
charges a card renewal off session; ``dunning`` retries failed card renewals, suspends those
whose invoice is overdue and cancels those suspended past their deadline; ``postpaid-invoices``
bills last month's usage on credit and charges it to the saved card where the credit line says so.

The rules of each step are ``billing.subscriptions``' and ``billing.metering.postpaid``'s; these
jobs sit above both and the card payments (``billing.payments.card``), whose outcome is told
back to what the order bought through ``billing.fulfilment``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from sqlalchemy import select

from billing import subscriptions
from billing.context import BillingSettings
from billing.errors import GatewayUnavailable
from billing.metering import postpaid
from billing.models import (LIVE_PAYMENT_STATUSES, CreditLine, Invoice, Order, OrderStatus,
                            PaymentStatus, Subscription, SubscriptionStatus)
from billing.payments import card
from billing.payments.gateway import CardGateway
from billing.runs import JobContext
from market.core.db import Database
from market.core.errors import MarketError

# Periods a scheduler that was down may catch up on in one run, per subscription.
MAX_CATCH_UP = 24


def _charge_renewal(db: Database, gateway: CardGateway | None, settings: BillingSettings,
                    order_id: int) -> str:
    """Charge a renewal order to the saved card, off session; what happened, in one word.

    An unanswered gateway call is left to reconciliation; a charge that cannot even start
    (no card saved, no gateway) counts as a failed attempt.
    """
    with db.session() as session:
        order = session.get(Order, order_id)
        if order.status != OrderStatus.AWAITING_PAYMENT:
            return "settled"
        if any(p.status in LIVE_PAYMENT_STATUSES for p in order.payments):
            return "in_flight"
    try:
        payment = card.pay_by_card(db, gateway, settings, order_id, principal=None,
                                   off_session=True)
    except GatewayUnavailable:
        return "unknown"
    except MarketError as exc:
        with db.session() as session, session.begin():
            subscriptions.charge_refused(session, order_id, settings, exc.detail[:200])
        return "failed"
    return "paid" if payment.status == PaymentStatus.SUCCEEDED else payment.status


def run_renewals(ctx: JobContext) -> dict:
    """Job ``renewals``: bill every subscription whose period ended by the run's day."""
    settings = BillingSettings.from_settings(ctx.settings)
    day = dt.date.fromisoformat(ctx.period)
    counts: Counter = Counter()
    with ctx.db.session() as session:
        due = list(session.scalars(select(Subscription.id).where(
            Subscription.status == SubscriptionStatus.ACTIVE,
            Subscription.current_period_end <= day).order_by(Subscription.id)))
    for subscription_id in due:
        for _ in range(MAX_CATCH_UP):
            with ctx.db.session() as session, session.begin():
                outcome, order = subscriptions.renew_subscription(
                    session, subscription_id, day=day, settings=settings)
                order_id, method = (order.id, order.payment_method) if order else (None, None)
            counts[outcome] += 1
            if outcome != "renewed":
                break
            if method == "card":
                charged = _charge_renewal(ctx.db, ctx.gateway, settings, order_id)
                counts[f"charge_{charged}"] += 1
            ctx.progress(f"subscription {subscription_id}: renewed, order {order_id}")
    counts.pop("not_due", None)
    return dict(counts)


def run_dunning(ctx: JobContext) -> dict:
    """Job ``dunning``: retry due past-due card renewals, suspend overdue bank-transfer
    renewals, and cancel subscriptions suspended past their deadline."""
    settings = BillingSettings.from_settings(ctx.settings)
    now = ctx.now
    counts: Counter = Counter()
    with ctx.db.session() as session:
        retry = list(session.scalars(select(Subscription.id).where(
            Subscription.status == SubscriptionStatus.PAST_DUE,
            Subscription.payment_method == "card", Subscription.next_retry_at <= now)
            .order_by(Subscription.id)))
        overdue = list(session.execute(
            select(Subscription.id, Invoice.id).join(Order, Order.subscription_id
                                                     == Subscription.id)
            .join(Invoice, Invoice.order_id == Order.id)
            .where(Subscription.status.in_((SubscriptionStatus.ACTIVE,
                                            SubscriptionStatus.PAST_DUE)),
                   Subscription.payment_method == "bank_transfer",
                   Order.kind == "renewal", Order.status == OrderStatus.AWAITING_PAYMENT,
                   Invoice.due_on < now.date())).all())
        expired = list(session.scalars(select(Subscription.id).where(
            Subscription.status == SubscriptionStatus.SUSPENDED, Subscription.next_retry_at <= now)
            .order_by(Subscription.id)))
    for subscription_id in retry:
        with ctx.db.session() as session, session.begin():
            order_id = subscriptions.retry_due(session, subscription_id, now)
        if order_id is None:
            continue
        charged = _charge_renewal(ctx.db, ctx.gateway, settings, order_id)
        counts[f"retry_{charged}"] += 1
        ctx.progress(f"subscription {subscription_id}: retry {charged}")
    for subscription_id, invoice_id in overdue:
        with ctx.db.session() as session, session.begin():
            suspended = subscriptions.suspend_overdue(session, subscription_id, invoice_id,
                                                      settings)
        if suspended:
            counts["suspended"] += 1
    for subscription_id in expired:
        with ctx.db.session() as session, session.begin():
            cancelled = subscriptions.cancel_expired(session, subscription_id, now)
        if cancelled:
            counts["cancelled"] += 1
    return dict(counts)


def run_postpaid_invoices(ctx: JobContext) -> dict:
    """Job ``postpaid-invoices``: bill last month's usage on credit, organization by
    organization, each in its own transaction."""
    settings = BillingSettings.from_settings(ctx.settings)
    counts: Counter = Counter()
    with ctx.db.session() as session:
        lines = list(session.scalars(select(CreditLine.id).order_by(CreditLine.id)))
    for credit_line_id in lines:
        with ctx.db.session() as session, session.begin():
            order = postpaid.bill_usage(session, credit_line_id, ctx.period, settings)
            billed = (order.id, order.payment_method) if order is not None else None
        if billed is None:
            continue
        counts["orders"] += 1
        order_id, method = billed
        ctx.progress(f"credit line {credit_line_id}: usage order {order_id}")
        if method == "card":
            try:
                payment = card.pay_by_card(ctx.db, ctx.gateway, settings, order_id,
                                           principal=None, off_session=True)
            except GatewayUnavailable:
                counts["charge_unknown"] += 1  # reconciliation settles it
            except MarketError as exc:
                # The order stays awaiting payment; finance can invoice it instead.
                counts["charge_failed"] += 1
                ctx.progress(f"usage order {order_id}: not charged: {exc.detail}")
            else:
                counts[f"charge_{payment.status}"] += 1
    return dict(counts)
