"""Subscriptions: subscribing, renewals, plan changes, cancellation and dunning.

A subscription is ``incomplete`` until its first period's order is paid (``on_paid``), then
``active``: the organization holds an ``api`` and a ``download`` entitlement for the dataset (every
version) until the period ends, and the plan's included tokens for the period.

The daily ``renewals`` job (``billing.collection``) bills each due subscription's next period: one
order per period, made unique by its ``billing_key`` and the (subscription, period start) of its
``SubscriptionPeriod``, so a job run twice bills nothing twice. Access is extended to the new
period's end at once; a card renewal is charged off session after the renewal is committed, a
bank-transfer one gets an invoice.

Dunning, anchored on the moment the renewal was billed (the order's ``payable_at``) so that the
schedule does not drift with when the jobs happen to run: a failed renewal charge makes the
subscription ``past_due`` with its next retry ``dunning_retry_days[n]`` days after that moment;
when the last retry fails it is ``suspended`` (access ends now) and, unpaid
``dunning_cancel_days`` after the last retry was due, ``cancelled``. While suspended,
``next_retry_at`` holds that cancellation deadline (there is no column of its own). An unpaid
bank-transfer renewal is suspended once its invoice is overdue. Paying the renewal order at any
point before cancellation makes the subscription active again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from market.core import audit
from market.accounts.authz import Principal
from market.core.audit import SYSTEM, Actor
from market.catalog.models import Offer
from market.core.db import utcnow
from market.core.errors import Conflict, InvalidInput, NotFound
from market.core.keyset import Keyset, desc
from billing import invoices, orders
from billing.budgets import lines as budgets
from billing.context import BillingSettings
from billing.models import (LIVE_PAYMENT_STATUSES, Entitlement, Invoice, InvoiceStatus, Order,
                            OrderStatus, Payment, Subscription, SubscriptionPeriod,
                            SubscriptionStatus)
from pricing import proration
from pricing.errors import PricingError
from pricing.offers import SubscriptionPlan, offer_from_dict
from pricing.periods import midnight
from pricing.proration import BillingPeriod
from pricing.quotes import quote

LIVE = (SubscriptionStatus.INCOMPLETE, SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE,
        SubscriptionStatus.SUSPENDED)
# The plan holds: paid up, or a renewal unpaid and still being retried (not yet suspended).
_COLLECTING = (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE)


# Reading plans and dates ------------------------------------------------------------------------

def plan_of(offer: Offer) -> SubscriptionPlan:
    plan = offer_from_dict(offer.terms)
    assert isinstance(plan, SubscriptionPlan), f"offer {offer.id} is not a subscription plan"
    return plan


def _lock(session: Session, subscription_id: int) -> Subscription | None:
    return session.scalar(select(Subscription).where(Subscription.id == subscription_id)
                          .with_for_update().execution_options(populate_existing=True))


def get_subscription(session: Session, principal: Principal, subscription_id: int, *,
                     for_update: bool = False) -> Subscription:
    """The principal's own subscription (another organization's answers 404)."""
    sub = (_lock(session, subscription_id) if for_update
           else session.get(Subscription, subscription_id))
    if sub is None or sub.organization_id != principal.organization_id:
        raise NotFound("No such subscription.", field="subscription_id")
    return sub


def list_subscriptions(session: Session, principal: Principal) -> Keyset[Subscription]:
    """The organization's subscriptions, newest first."""
    return Keyset(session, select(Subscription).where(
        Subscription.organization_id == principal.organization_id), [desc(Subscription.id)])


def _audit(session: Session, sub: Subscription, action: str, actor: Actor = SYSTEM,
           **data) -> None:
    audit.record(session, f"subscription.{action}", actor=actor,
                 organization_id=sub.organization_id, object_type="subscription",
                 object_id=sub.id, data={"status": sub.status, **data})


def _period_line(session: Session, order: Order, offer: Offer, plan: SubscriptionPlan,
                 period: BillingPeriod) -> None:
    priced = quote(plan, buyer=orders.buyer_tax_status(session, order.organization_id))
    orders.priced_line(
        session, order, kind="subscription", items=[line.item for line in priced.lines],
        tax_rate=plan.tax_rate, buyer=priced.buyer_tax_status.value, offer=offer,
        dataset_id=offer.dataset_id, tokens=plan.included_tokens,
        description=f"{offer.dataset.title_en} — {plan.code}, "
                    f"{period.start.isoformat()} to {period.end.isoformat()}",
        terms={"offer": offer.terms, "period": period.to_dict()},
        taxed=(priced.subtotal, priced.tax))


# Access -----------------------------------------------------------------------------------------

def _extend_access(session: Session, sub: Subscription, until: dt.datetime) -> None:
    """Hold an api and a download entitlement (every version) until ``until``."""
    held = set()
    for entitlement in session.scalars(select(Entitlement).where(
            Entitlement.subscription_id == sub.id, Entitlement.revoked_at.is_(None))):
        entitlement.valid_until = until
        held.add(entitlement.kind)
    for kind in ("api", "download"):
        if kind not in held:
            session.add(Entitlement(organization_id=sub.organization_id,
                                    dataset_id=sub.dataset_id, version_id=None, kind=kind,
                                    subscription_id=sub.id, valid_from=utcnow(),
                                    valid_until=until))


def _end_access(session: Session, sub: Subscription, reason: str, *,
                at: dt.datetime | None = None, revoke: bool = True) -> None:
    """End the subscription's entitlements: revoked now (suspension, refund), or just not
    extended past ``at`` (a cancellation at the period end)."""
    at = at or utcnow()
    for entitlement in session.scalars(select(Entitlement).where(
            Entitlement.subscription_id == sub.id, Entitlement.revoked_at.is_(None))):
        if revoke:
            entitlement.revoked_at = at
            entitlement.revoked_reason = reason[:200]
        elif entitlement.valid_until is None or entitlement.valid_until > at:
            entitlement.valid_until = at


# Subscribing ------------------------------------------------------------------------------------

def subscribe(session: Session, principal: Principal, offer_id: int, *, payment_method: str,
              settings: BillingSettings, today: dt.date | None = None,
              budget_line_id: int | None = None,
              purchase_order_number: str | None = None) -> Subscription:
    """Start a subscription to a plan; its first period is billed up front.

    One live (not cancelled) subscription per organization and dataset. The subscription is
    ``incomplete`` until its order (``subscription.periods[0].order_id``) is paid: by card
    (``billing.payments.card.pay_by_card``) or against an invoice
    (``billing.invoices.issue_invoice``).
    """
    offer = orders.sellable_offer(session, principal, offer_id, kinds=("subscription",),
                                  field="offer_id")
    if payment_method not in orders.PAYMENT_METHODS:
        raise InvalidInput(f"Pay by {' or '.join(orders.PAYMENT_METHODS)}.",
                           field="payment_method")
    existing = session.scalar(select(Subscription).where(
        Subscription.organization_id == principal.organization_id,
        Subscription.dataset_id == offer.dataset_id, Subscription.status.in_(LIVE)))
    if existing is not None:
        raise Conflict(f"Your organization already has a subscription to this dataset "
                       f"({existing.status}); change its plan instead.", field="offer_id")
    plan = plan_of(offer)
    period = BillingPeriod.starting(today or utcnow().date(), plan.period)
    sub = Subscription(organization_id=principal.organization_id, dataset_id=offer.dataset_id,
                       offer_id=offer.id, status=SubscriptionStatus.INCOMPLETE,
                       payment_method=payment_method,
                       current_period_start=period.start, current_period_end=period.end,
                       included_tokens=0, rollover_tokens=0, tokens_used=0,
                       cancel_at_period_end=False, dunning_attempts=0,
                       created_by_id=principal.user_id)
    session.add(sub)
    session.flush()  # the order and the period name the subscription's id
    order = orders.new_order(session, organization_id=principal.organization_id,
                             kind="subscription", currency=plan.currency,
                             payment_method=payment_method, created_by_id=principal.user_id,
                             subscription_id=sub.id)
    _period_line(session, order, offer, plan, period)
    session.flush()  # the period row and the audit entries name the order's id
    order.budget_warnings = budgets.commit_order(
        session, principal, order, budget_line_id=budget_line_id,
        purchase_order_number=purchase_order_number)
    session.add(SubscriptionPeriod(subscription_id=sub.id, period_start=period.start,
                                   period_end=period.end, offer_id=offer.id, order_id=order.id))
    audit.record(session, "order.placed", actor=principal.actor,
                 organization_id=order.organization_id, object_type="order", object_id=order.id,
                 data={"number": order.number, "total": str(order.total),
                       "subscription_id": sub.id})
    _audit(session, sub, "created", principal.actor, offer_id=offer.id, order_id=order.id,
           period=period.to_dict())
    return sub


def first_order(session: Session, sub: Subscription) -> Order:
    return session.scalar(select(Order).where(Order.subscription_id == sub.id,
                                              Order.kind == "subscription"))


# What payments tell us --------------------------------------------------------------------------

def on_paid(session: Session, order: Order) -> None:
    """A subscription, renewal or plan-change order was paid (called by ``payments``)."""
    sub = _lock(session, order.subscription_id)
    if sub is None:
        return
    if sub.status == SubscriptionStatus.CANCELLED:
        # Paid after it was cancelled (an invoice settled late): nothing to grant; the money is
        # on the order and can be refunded.
        _audit(session, sub, "paid_after_cancellation", order_id=order.id)
        return
    match order.kind:
        case "subscription":
            plan = plan_of(session.get(Offer, sub.offer_id))
            sub.status = SubscriptionStatus.ACTIVE
            sub.included_tokens, sub.rollover_tokens, sub.tokens_used = (
                plan.included_tokens, 0, 0)
            _extend_access(session, sub, midnight(sub.current_period_end))
            _audit(session, sub, "activated", order_id=order.id,
                   included_tokens=sub.included_tokens,
                   period_end=sub.current_period_end.isoformat())
        case "renewal":
            before = sub.status
            sub.status = SubscriptionStatus.ACTIVE
            sub.dunning_attempts = 0
            sub.next_retry_at = None
            _extend_access(session, sub, midnight(sub.current_period_end))
            _audit(session, sub, "renewal_paid", order_id=order.id, status_before=before)
        case "plan_change":
            _apply_change(session, sub, order.lines[0].terms["plan_change"], order_id=order.id)


def on_renewal_failed(session: Session, order: Order, payment: Payment | None,
                      settings: BillingSettings | None = None) -> None:
    """A renewal charge failed: the next step of dunning (past due, or suspended at last)."""
    sub = _lock(session, order.subscription_id)
    if sub is None or sub.status not in _COLLECTING or (
            order.status != OrderStatus.AWAITING_PAYMENT):
        return
    _dunning_step(session, sub, order, settings or BillingSettings(),
                  reason=(payment.failure_code if payment is not None else None) or "failed")


def _dunning_step(session: Session, sub: Subscription, order: Order,
                  settings: BillingSettings, reason: str) -> None:
    retries = settings.dunning_retry_days
    anchor = order.payable_at or utcnow()
    sub.dunning_attempts += 1
    if sub.dunning_attempts <= len(retries):
        sub.status = SubscriptionStatus.PAST_DUE
        sub.next_retry_at = anchor + dt.timedelta(days=retries[sub.dunning_attempts - 1])
        _audit(session, sub, "past_due", order_id=order.id, reason=reason,
               attempts=sub.dunning_attempts, next_retry_at=sub.next_retry_at.isoformat())
        return
    last_retry = anchor + dt.timedelta(days=retries[-1] if retries else 0)
    _suspend(session, sub, order, reason=reason,
             cancel_at=last_retry + dt.timedelta(days=settings.dunning_cancel_days))


def _suspend(session: Session, sub: Subscription, order: Order, *, reason: str,
             cancel_at: dt.datetime) -> None:
    sub.status = SubscriptionStatus.SUSPENDED
    sub.next_retry_at = cancel_at
    _end_access(session, sub, f"suspended: renewal {order.number} unpaid")
    _audit(session, sub, "suspended", order_id=order.id, reason=reason,
           attempts=sub.dunning_attempts, cancel_at=cancel_at.isoformat())


def on_refunded(session: Session, order: Order) -> None:
    """A subscription's order was fully refunded: if it paid for the current period (or an
    upgrade in it), the subscription ends now; a past period's refund changes nothing more."""
    sub = _lock(session, order.subscription_id)
    if sub is None:
        return
    current = session.scalar(select(SubscriptionPeriod).where(
        SubscriptionPeriod.subscription_id == sub.id,
        SubscriptionPeriod.period_start == sub.current_period_start))
    if sub.status != SubscriptionStatus.CANCELLED and (order.kind == "plan_change" or (
            current is not None and current.order_id == order.id)):
        _cancel_now(session, sub, f"order {order.number} refunded")
    else:
        _audit(session, sub, "past_order_refunded", order_id=order.id)


# Renewals ---------------------------------------------------------------------------------------

def _next_period(sub: Subscription, plan: SubscriptionPlan) -> BillingPeriod:
    """The period after the current one, counted from the first period's start so that month
    ends do not drift (Jan 31 renews on Feb 29, then Mar 31)."""
    anchor = sub.periods[0].period_start if sub.periods else sub.current_period_start
    try:
        period = BillingPeriod.containing(anchor, plan.period, sub.current_period_end)
    except PricingError:
        period = None
    if period is None or period.start != sub.current_period_end:
        # The plan's period kind changed since the anchor: count from here on.
        period = BillingPeriod.starting(sub.current_period_end, plan.period)
    return period


def renew_subscription(session: Session, subscription_id: int, *, day: dt.date,
                       settings: BillingSettings) -> tuple[str, Order | None]:
    """Bill one due subscription's next period (or end it, if it cancels at the period end).

    Returns what happened (``renewed``, ``cancelled``, ``not_due``) and the renewal order.
    A period already billed (its ``billing_key`` exists) is never billed again.
    """
    sub = _lock(session, subscription_id)
    if sub is None or sub.status != SubscriptionStatus.ACTIVE or sub.current_period_end > day:
        return "not_due", None
    if sub.cancel_at_period_end:
        sub.status = SubscriptionStatus.CANCELLED
        sub.cancelled_at = utcnow()
        _end_access(session, sub, "cancelled at period end",
                    at=midnight(sub.current_period_end), revoke=False)
        _audit(session, sub, "cancelled", reason="cancel_at_period_end",
               period_end=sub.current_period_end.isoformat())
        return "cancelled", None
    # An upgrade still unpaid was prorated over the period that is ending: it lapses.
    _cancel_unpaid(session, sub, "plan_change", "the period it was prorated over ended")
    old_plan = plan_of(session.get(Offer, sub.offer_id))
    if sub.pending_offer_id is not None:
        _audit(session, sub, "plan_changed", from_offer_id=sub.offer_id,
               to_offer_id=sub.pending_offer_id, when="period_end")
        sub.offer_id, sub.pending_offer_id = sub.pending_offer_id, None
    offer = session.get(Offer, sub.offer_id)
    plan = plan_of(offer)
    period = _next_period(sub, plan)
    key = f"renewal:{sub.id}:{period.start.isoformat()}"
    if session.scalar(select(Order.id).where(Order.billing_key == key)) is not None:
        return "not_due", None
    order = orders.new_order(session, organization_id=sub.organization_id, kind="renewal",
                             currency=plan.currency, payment_method=sub.payment_method,
                             billing_key=key, subscription_id=sub.id)
    _period_line(session, order, offer, plan, period)
    session.flush()  # the period row names the order's id
    session.add(SubscriptionPeriod(subscription_id=sub.id, period_start=period.start,
                                   period_end=period.end, offer_id=offer.id, order_id=order.id))
    # Rollover tokens are used first, so what is left unused is the included allowance's.
    unused_included = max(sub.included_tokens - max(sub.tokens_used - sub.rollover_tokens, 0),
                          0)
    carried = unused_included if old_plan.rollover else 0
    sub.current_period_start, sub.current_period_end = period.start, period.end
    sub.included_tokens, sub.rollover_tokens, sub.tokens_used = (
        plan.included_tokens, carried, 0)
    # Access goes on while the renewal is collected; dunning ends it if it never is.
    _extend_access(session, sub, midnight(period.end))
    audit.record(session, "order.placed", organization_id=order.organization_id,
                 object_type="order", object_id=order.id,
                 data={"number": order.number, "total": str(order.total),
                       "subscription_id": sub.id})
    _audit(session, sub, "renewed", order_id=order.id, period=period.to_dict(),
           included_tokens=sub.included_tokens, rollover_tokens=carried)
    if sub.payment_method == "bank_transfer":
        invoices.issue_invoice(session, order, settings)
    return "renewed", order


def charge_refused(session: Session, order_id: int, settings: BillingSettings,
                   reason: str) -> None:
    """A renewal's card charge could not even start (no card saved, no gateway): it counts as
    a failed attempt, the next step of dunning."""
    order = session.get(Order, order_id)
    sub = _lock(session, order.subscription_id)
    if sub is not None and sub.status in _COLLECTING:
        _dunning_step(session, sub, order, settings, reason=reason)


# Dunning ----------------------------------------------------------------------------------------

def _unpaid_renewal(session: Session, sub: Subscription) -> Order | None:
    return session.scalar(select(Order).where(
        Order.subscription_id == sub.id, Order.kind == "renewal",
        Order.status == OrderStatus.AWAITING_PAYMENT).order_by(Order.id.desc()).limit(1))


def _cancel_now(session: Session, sub: Subscription, reason: str) -> None:
    sub.status = SubscriptionStatus.CANCELLED
    sub.cancelled_at = utcnow()
    sub.cancel_at_period_end = False
    sub.next_retry_at = None
    _end_access(session, sub, reason)
    _cancel_unpaid(session, sub, None, reason)
    _audit(session, sub, "cancelled", reason=reason)


def _cancel_unpaid(session: Session, sub: Subscription, kind: str | None, reason: str) -> None:
    """Cancel the subscription's unpaid orders (of one kind, or all)."""
    query = select(Order).where(Order.subscription_id == sub.id,
                                Order.status == OrderStatus.AWAITING_PAYMENT)
    if kind is not None:
        query = query.where(Order.kind == kind)
    for order in session.scalars(query):
        if any(p.status in LIVE_PAYMENT_STATUSES for p in order.payments):
            continue  # a charge in flight: reconciliation decides; a late success is credit
        orders.cancel_unpaid(session, order, reason=reason)


def retry_due(session: Session, subscription_id: int, now: dt.datetime) -> int | None:
    """The unpaid renewal order of a past-due subscription whose next retry is due, its retry
    audited; None when there is nothing to retry (paid or retried meanwhile)."""
    sub = _lock(session, subscription_id)
    order = _unpaid_renewal(session, sub) if sub.status == SubscriptionStatus.PAST_DUE else None
    if order is None or sub.next_retry_at is None or sub.next_retry_at > now:
        return None
    _audit(session, sub, "payment_retried", order_id=order.id, attempt=sub.dunning_attempts + 1)
    return order.id


def suspend_overdue(session: Session, subscription_id: int, invoice_id: int,
                    settings: BillingSettings) -> bool:
    """Suspend a subscription whose renewal invoice is overdue, to be cancelled
    ``dunning_cancel_days`` after its due day; whether it was suspended."""
    sub = _lock(session, subscription_id)
    invoice = session.get(Invoice, invoice_id)
    if sub.status not in _COLLECTING or invoice.status in (InvoiceStatus.PAID,
                                                           InvoiceStatus.VOID):
        return False
    cancel_at = midnight(invoice.due_on) + dt.timedelta(days=settings.dunning_cancel_days)
    _suspend(session, sub, invoice.order, reason="invoice_overdue", cancel_at=cancel_at)
    return True


def cancel_expired(session: Session, subscription_id: int, now: dt.datetime) -> bool:
    """Cancel a subscription suspended past its deadline; whether it was cancelled."""
    sub = _lock(session, subscription_id)
    if (sub.status != SubscriptionStatus.SUSPENDED or sub.next_retry_at is None
            or sub.next_retry_at > now):
        return False
    _cancel_now(session, sub, "renewal unpaid after dunning")
    return True


# Plan changes, cancelling, resuming -------------------------------------------------------------

@dataclass(frozen=True)
class PlanChange:
    """What ``change_plan`` did: ``upgraded`` (now), ``awaiting_payment`` (the order pays for
    the upgrade), or ``scheduled`` (at the period end)."""

    subscription: Subscription
    outcome: str
    order: Order | None = None
    proration: proration.Proration | None = None


def change_plan(session: Session, principal: Principal, subscription_id: int,
                new_offer_id: int, *, today: dt.date | None = None) -> PlanChange:
    """Move a subscription to another plan of the same dataset.

    A dearer plan applies now: the unused days of the current plan are credited and the new
    plan's charged (``pricing.proration.change_plan``) in a ``plan_change`` order, and the
    switch happens when it is paid (at once if it comes to nothing). A cheaper (or equal)
    plan waits for the period end.
    """
    sub = get_subscription(session, principal, subscription_id, for_update=True)
    if sub.status != SubscriptionStatus.ACTIVE:
        raise Conflict(f"The subscription is {sub.status.replace('_', ' ')}; only an active "
                       "one can change plan.", field="subscription_id")
    offer = orders.sellable_offer(session, principal, new_offer_id, kinds=("subscription",),
                                  field="offer_id")
    if offer.dataset_id != sub.dataset_id:
        raise InvalidInput("That plan is for another dataset.", field="offer_id")
    if offer.id == sub.offer_id:
        if sub.pending_offer_id is not None:
            _audit(session, sub, "plan_change_withdrawn", principal.actor,
                   pending_offer_id=sub.pending_offer_id)
            sub.pending_offer_id = None
            return PlanChange(sub, "kept")
        raise Conflict("The subscription is already on this plan.", field="offer_id")
    current, new = plan_of(session.get(Offer, sub.offer_id)), plan_of(offer)
    if new.currency != current.currency:
        raise InvalidInput(f"The subscription is paid in {current.currency}.",
                           field="offer_id")
    unpaid = session.scalar(select(Order).where(
        Order.subscription_id == sub.id, Order.kind == "plan_change",
        Order.status == OrderStatus.AWAITING_PAYMENT))
    if unpaid is not None:
        raise Conflict(f"An earlier plan change (order {unpaid.number}) is awaiting payment; "
                       "pay or cancel it first.", field="subscription_id")
    if new.price <= current.price:
        sub.pending_offer_id = offer.id
        _audit(session, sub, "downgrade_scheduled", principal.actor, from_offer_id=sub.offer_id,
               to_offer_id=offer.id, effective=sub.current_period_end.isoformat())
        return PlanChange(sub, "scheduled")
    effective = today or utcnow().date()
    period = BillingPeriod(sub.current_period_start, sub.current_period_end)
    try:
        prorated = proration.change_plan(current, new, period, effective)
    except PricingError as exc:
        raise InvalidInput(str(exc), field=exc.field or "offer_id") from None
    # The old plan's allowance for the days left, which the new plan's replaces.
    old_tokens = current.included_tokens * prorated.days_remaining // prorated.days_in_period
    change = {"from_offer_id": sub.offer_id, "to_offer_id": offer.id,
              "effective": effective.isoformat(), "period": prorated.period.to_dict(),
              "same_period": prorated.period == period,
              "included_tokens": prorated.included_tokens, "replaced_tokens": old_tokens,
              "proration": prorated.to_dict()}
    sub.pending_offer_id = None
    if not prorated.total.is_positive():
        _apply_change(session, sub, change, actor=principal.actor)
        return PlanChange(sub, "upgraded", proration=prorated)
    order = orders.new_order(session, organization_id=sub.organization_id, kind="plan_change",
                             currency=new.currency, payment_method=sub.payment_method,
                             created_by_id=principal.user_id, subscription_id=sub.id)
    orders.priced_line(session, order, kind="plan_change", items=list(prorated.lines),
                       tax_rate=new.tax_rate, offer=offer,
                       dataset_id=offer.dataset_id, tokens=prorated.included_tokens,
                       description=f"{offer.dataset.title_en} — {current.code} to {new.code}, "
                                   f"from {effective.isoformat()}",
                       terms={"offer": offer.terms, "plan_change": change})
    session.flush()  # the audit entries name the order's id
    audit.record(session, "order.placed", actor=principal.actor,
                 organization_id=order.organization_id, object_type="order", object_id=order.id,
                 data={"number": order.number, "total": str(order.total),
                       "subscription_id": sub.id})
    _audit(session, sub, "upgrade_ordered", principal.actor, order_id=order.id,
           from_offer_id=sub.offer_id, to_offer_id=offer.id, total=str(order.total))
    return PlanChange(sub, "awaiting_payment", order=order, proration=prorated)


def _apply_change(session: Session, sub: Subscription, change: dict, *,
                  actor: Actor = SYSTEM, order_id: int | None = None) -> None:
    """Switch the plan now: the new plan's allowance replaces the old one's for the days left,
    or, when the new plan bills another kind of period, a new period starts."""
    if sub.status not in _COLLECTING or sub.offer_id != change["from_offer_id"]:
        # The subscription moved on before the upgrade was paid: keep the money as the
        # order's (refundable) and say so.
        _audit(session, sub, "plan_change_stale", actor, order_id=order_id, change=change)
        return
    sub.offer_id = change["to_offer_id"]
    sub.pending_offer_id = None
    if change["same_period"]:
        sub.included_tokens = max(
            sub.included_tokens - change["replaced_tokens"] + change["included_tokens"],
            sub.tokens_used - sub.rollover_tokens, 0)
    else:
        start = dt.date.fromisoformat(change["period"]["start"])
        end = dt.date.fromisoformat(change["period"]["end"])
        row = session.scalar(select(SubscriptionPeriod).where(
            SubscriptionPeriod.subscription_id == sub.id,
            SubscriptionPeriod.period_start == start))
        if row is None:
            session.add(SubscriptionPeriod(subscription_id=sub.id, period_start=start,
                                           period_end=end, offer_id=sub.offer_id,
                                           order_id=order_id))
        else:
            row.period_end, row.offer_id, row.order_id = end, sub.offer_id, order_id
        sub.current_period_start, sub.current_period_end = start, end
        sub.included_tokens, sub.rollover_tokens, sub.tokens_used = (
            change["included_tokens"], 0, 0)
        _extend_access(session, sub, midnight(end))
    _audit(session, sub, "plan_changed", actor, from_offer_id=change["from_offer_id"],
           to_offer_id=change["to_offer_id"], when="now", order_id=order_id,
           included_tokens=sub.included_tokens)


def cancel(session: Session, principal: Principal, subscription_id: int) -> Subscription:
    """Cancel at the period end: access and tokens stay until then (``resume`` undoes it).

    A subscription never paid for (incomplete), or one whose renewal is unpaid (past due,
    suspended), ends now, and its unpaid orders are cancelled.
    """
    sub = get_subscription(session, principal, subscription_id, for_update=True)
    if sub.status == SubscriptionStatus.CANCELLED:
        raise Conflict("The subscription is already cancelled.", field="subscription_id")
    if sub.status == SubscriptionStatus.ACTIVE:
        if not sub.cancel_at_period_end:
            sub.cancel_at_period_end = True
            sub.pending_offer_id = None
            _audit(session, sub, "cancel_scheduled", principal.actor,
                   effective=sub.current_period_end.isoformat())
        return sub
    _cancel_now(session, sub, f"cancelled by the buyer while {sub.status}")
    return sub


def resume(session: Session, principal: Principal, subscription_id: int, *,
           today: dt.date | None = None) -> Subscription:
    """Take back a cancellation at the period end, while the period lasts."""
    sub = get_subscription(session, principal, subscription_id, for_update=True)
    if sub.status != SubscriptionStatus.ACTIVE or not sub.cancel_at_period_end:
        raise Conflict("The subscription is not set to cancel.", field="subscription_id")
    if (today or utcnow().date()) >= sub.current_period_end:
        raise Conflict("The period has ended; subscribe again.", field="subscription_id")
    sub.cancel_at_period_end = False
    _audit(session, sub, "resumed", principal.actor)
    return sub

