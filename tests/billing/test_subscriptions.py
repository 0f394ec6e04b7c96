"""Subscriptions: subscribing and paying, renewals (once per period), rollover, cancellation,
plan changes with proration, and dunning with a card that is declined."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from billing import entitlements, invoices, subscriptions
from billing.payments import bank_transfer, card as payments
from billing.jobs import JOBS_BY_NAME
from billing.runs import run_job
from billing.models import Order, Subscription, SubscriptionPeriod
from market.core.audit import AuditEntry
from market.core.db import utcnow
from market.core.errors import Conflict, NotFound
from pricing import proration
from pricing.money import Money
from pricing.offers import offer_from_dict
from tests.stripe_server import card
from tests.factories import make_org

VISA = "4242424242424242"
DECLINED_ON_CHARGE = "4000000000000341"
TODAY = utcnow().date()
# Started 40 days ago, so the first monthly period has ended by today.
LAST_MONTH = TODAY - dt.timedelta(days=40)


def quiet(_message: str) -> None:
    pass


def pay_by_bank(session, finance, order, settings, reference="B-1"):
    invoice = invoices.issue_invoice(session, order, settings)
    bank_transfer.record_bank_receipt(session, finance.principal, invoice, amount=order.total,
                                      received_on=TODAY, bank_reference=reference,
                                      settings=settings)


def subscribed(session, listed, buyer, finance, settings, *, plan="basic", today=LAST_MONTH):
    """An active subscription, paid by bank transfer."""
    sub = subscriptions.subscribe(session, buyer.principal, listed["plans"][plan].id,
                                  payment_method="bank_transfer", settings=settings,
                                  today=today)
    pay_by_bank(session, finance, subscriptions.first_order(session, sub), settings,
                reference=f"B-first-{sub.id}")
    session.commit()
    return sub


def run(app, db, name, *, day=TODAY, now=None, gateway=None, force=False):
    return run_job(db, JOBS_BY_NAME[name], day.isoformat(), now=now or utcnow(),
                   settings=app.config, gateway=gateway, progress=quiet, force=force)


def audited(session, sub) -> list[str]:
    return list(session.scalars(select(AuditEntry.action).where(
        AuditEntry.object_type == "subscription", AuditEntry.object_id == str(sub.id))
        .order_by(AuditEntry.seq)))


def renewal_orders(session, sub) -> list[Order]:
    return list(session.scalars(select(Order).where(Order.subscription_id == sub.id,
                                                    Order.kind == "renewal")))


def has_access(session, sub, kind="api", at=None) -> bool:
    return entitlements.active_entitlement(session, sub.organization_id, sub.dataset_id,
                                           kind=kind, at=at) is not None


def test_subscribe_by_bank_transfer_is_active_once_the_invoice_is_paid(
        session, listed, buyer, finance, settings):
    sub = subscriptions.subscribe(session, buyer.principal, listed["plans"]["basic"].id,
                                  payment_method="bank_transfer", settings=settings)
    order = subscriptions.first_order(session, sub)
    assert (sub.status, order.kind, order.subscription_id) == ("incomplete", "subscription",
                                                               sub.id)
    # CNY 99.00 and 6% tax, with the supply chain snapshotted on the line.
    assert (order.subtotal_minor, order.tax_minor, order.total_minor) == (9_900, 594, 10_494)
    assert order.lines[0].supply_chain_revision_id == listed["chain"].id
    assert sorted(order.lines[0].shares) == [[f"processor:{listed['processor'].id}", 4_000],
                                             [f"supplier:{listed['supplier'].id}", 6_000]]
    assert [(p.period_start, p.order_id) for p in sub.periods] == [(TODAY, order.id)]
    assert not has_access(session, sub)

    pay_by_bank(session, finance, order, settings)

    assert order.status == "paid"
    assert sub.status == "active"
    assert (sub.included_tokens, sub.rollover_tokens, sub.tokens_used) == (1_000_000, 0, 0)
    for kind in ("api", "download"):
        granted = entitlements.active_entitlement(session, buyer.org.id,
                                                  listed["dataset"].id, kind=kind)
        assert granted.version_id is None and granted.subscription_id == sub.id
        assert granted.valid_until.date() == sub.current_period_end
    assert audited(session, sub) == ["subscription.created", "subscription.activated"]


def test_one_live_subscription_per_organization_and_dataset(session, listed, buyer, settings):
    subscriptions.subscribe(session, buyer.principal, listed["plans"]["basic"].id,
                            payment_method="bank_transfer", settings=settings)
    with pytest.raises(Conflict) as error:
        subscriptions.subscribe(session, buyer.principal, listed["plans"]["pro"].id,
                                payment_method="bank_transfer", settings=settings)
    assert error.value.field == "offer_id"


def test_another_organizations_subscription_does_not_exist(session, listed, buyer, finance,
                                                           settings):
    sub = subscribed(session, listed, buyer, finance, settings)
    stranger = make_org(session, "buyer")
    from market.accounts.authz import Principal
    with pytest.raises(NotFound):
        subscriptions.cancel(session, Principal(organization_id=stranger.id, user_id=None),
                             sub.id)


def test_renewal_bills_each_period_once_even_when_run_twice(app, db, session, listed, buyer,
                                                            finance, settings):
    sub = subscribed(session, listed, buyer, finance, settings)
    first_end = sub.current_period_end
    sub.tokens_used = 400_000  # basic rolls unused included tokens over
    session.commit()

    assert run(app, db, "renewals").ran
    assert run(app, db, "renewals").outcome == "already-done"
    assert run(app, db, "renewals", force=True).ran
    direct = subscriptions.renew_subscription(session, sub.id, day=TODAY, settings=settings)
    assert direct == ("not_due", None)

    session.expire_all()
    [order] = renewal_orders(session, sub)
    assert order.billing_key == f"renewal:{sub.id}:{first_end.isoformat()}"
    assert order.invoice is not None and order.total_minor == 10_494
    assert [p.period_start for p in sub.periods] == [LAST_MONTH, first_end]
    assert sub.current_period_start == first_end > TODAY - dt.timedelta(days=31)
    assert (sub.status, sub.included_tokens, sub.rollover_tokens, sub.tokens_used) == (
        "active", 1_000_000, 600_000, 0)
    assert has_access(session, sub, at=utcnow() + dt.timedelta(days=15))
    assert "subscription.renewed" in audited(session, sub)

    pay_by_bank(session, finance, order, settings, reference="B-renewal")
    assert order.status == "paid" and sub.status == "active"


def test_cancel_at_period_end_keeps_access_until_the_renewal_job_ends_it(
        app, db, session, listed, buyer, finance, settings):
    sub = subscribed(session, listed, buyer, finance, settings)
    subscriptions.cancel(session, buyer.principal, sub.id)
    subscriptions.resume(session, buyer.principal, sub.id, today=LAST_MONTH)
    assert not sub.cancel_at_period_end
    subscriptions.cancel(session, buyer.principal, sub.id)
    assert (sub.status, sub.cancel_at_period_end) == ("active", True)
    session.commit()

    assert run(app, db, "renewals").summary == {"cancelled": 1}

    session.expire_all()
    assert sub.status == "cancelled"
    assert renewal_orders(session, sub) == []
    assert not has_access(session, sub)
    assert audited(session, sub)[-4:] == ["subscription.cancel_scheduled",
                                          "subscription.resumed",
                                          "subscription.cancel_scheduled",
                                          "subscription.cancelled"]
    with pytest.raises(Conflict):
        subscriptions.resume(session, buyer.principal, sub.id)


def test_upgrade_mid_period_charges_the_prorated_difference(session, listed, buyer, finance,
                                                            settings):
    sub = subscribed(session, listed, buyer, finance, settings, today=TODAY)
    middle = TODAY + dt.timedelta(days=10)
    period = proration.BillingPeriod(sub.current_period_start, sub.current_period_end)
    basic = offer_from_dict(listed["plans"]["basic"].terms)
    pro = offer_from_dict(listed["plans"]["pro"].terms)
    expected = proration.change_plan(basic, pro, period, middle)

    change = subscriptions.change_plan(session, buyer.principal, sub.id,
                                       listed["plans"]["pro"].id, today=middle)

    assert change.outcome == "awaiting_payment"
    order = change.order
    assert (order.kind, order.subscription_id) == ("plan_change", sub.id)
    assert order.subtotal_minor == expected.total.minor > 0
    assert sub.offer_id == listed["plans"]["basic"].id  # not before it is paid
    with pytest.raises(Conflict):
        subscriptions.change_plan(session, buyer.principal, sub.id,
                                  listed["plans"]["pro"].id, today=middle)

    pay_by_bank(session, finance, order, settings, reference="B-upgrade")

    assert sub.offer_id == listed["plans"]["pro"].id
    remaining = expected.days_remaining
    assert sub.included_tokens == (1_000_000 - 1_000_000 * remaining // period.days
                                   + expected.included_tokens)
    assert audited(session, sub)[-2:] == ["subscription.upgrade_ordered",
                                          "subscription.plan_changed"]


def test_downgrade_waits_for_the_period_end(app, db, session, listed, buyer, finance,
                                            settings):
    sub = subscribed(session, listed, buyer, finance, settings, plan="pro")
    change = subscriptions.change_plan(session, buyer.principal, sub.id,
                                       listed["plans"]["basic"].id, today=LAST_MONTH)
    assert (change.outcome, change.order) == ("scheduled", None)
    assert (sub.offer_id, sub.pending_offer_id) == (listed["plans"]["pro"].id,
                                                    listed["plans"]["basic"].id)
    assert sub.included_tokens == 3_000_000
    session.commit()

    run(app, db, "renewals")

    session.expire_all()
    [order] = renewal_orders(session, sub)
    assert order.subtotal_minor == 9_900
    assert (sub.offer_id, sub.pending_offer_id) == (listed["plans"]["basic"].id, None)
    assert sub.periods[-1].offer_id == listed["plans"]["basic"].id
    assert (sub.included_tokens, sub.rollover_tokens) == (1_000_000, 0)  # pro: no rollover
    assert "subscription.downgrade_scheduled" in audited(session, sub)


def test_a_declined_renewal_goes_past_due_then_suspended_then_cancelled(
        app, db, session, listed, buyer, settings, stripe_gateway):
    principal = buyer.principal
    payments.save_card(db, stripe_gateway, principal, card(stripe_gateway, VISA))
    sub = subscriptions.subscribe(session, principal, listed["plans"]["basic"].id,
                                  payment_method="card", settings=settings, today=LAST_MONTH)
    first = subscriptions.first_order(session, sub)
    session.commit()
    assert payments.pay_by_card(db, stripe_gateway, settings, first.id,
                                principal=principal).status == "succeeded"
    payments.save_card(db, stripe_gateway, principal, card(stripe_gateway, DECLINED_ON_CHARGE))

    assert run(app, db, "renewals", gateway=stripe_gateway).summary == {
        "renewed": 1, "charge_failed": 1}
    session.expire_all()
    [order] = renewal_orders(session, sub)
    billed = order.payable_at
    assert (sub.status, sub.dunning_attempts) == ("past_due", 1)
    assert sub.next_retry_at == billed + dt.timedelta(days=1)
    assert has_access(session, sub)  # access goes on while the retries last

    # Not due yet: nothing is retried.
    assert run(app, db, "dunning", gateway=stripe_gateway, now=billed).summary == {}
    for attempt, day in ((2, 1), (3, 3)):
        moment = billed + dt.timedelta(days=day, minutes=1)
        assert run(app, db, "dunning", day=moment.date(), now=moment,
                   gateway=stripe_gateway).summary == {"retry_failed": 1}
        session.expire_all()
        assert (sub.status, sub.dunning_attempts) == ("past_due", attempt)
    assert sub.next_retry_at == billed + dt.timedelta(days=7)

    moment = billed + dt.timedelta(days=7, minutes=1)
    run(app, db, "dunning", day=moment.date(), now=moment, gateway=stripe_gateway)
    session.expire_all()
    assert (sub.status, sub.dunning_attempts) == ("suspended", 4)
    assert not has_access(session, sub) and not has_access(session, sub, "download")
    assert sub.next_retry_at == billed + dt.timedelta(days=7 + settings.dunning_cancel_days)
    assert [p.status for p in order.payments] == ["failed"] * 4

    moment = billed + dt.timedelta(days=7 + settings.dunning_cancel_days, minutes=1)
    assert run(app, db, "dunning", day=moment.date(), now=moment,
               gateway=stripe_gateway).summary == {"cancelled": 1}
    session.expire_all()
    assert sub.status == "cancelled" and order.status == "cancelled"
    assert audited(session, sub) == [
        "subscription.created", "subscription.activated", "subscription.renewed",
        "subscription.past_due", "subscription.payment_retried", "subscription.past_due",
        "subscription.payment_retried", "subscription.past_due",
        "subscription.payment_retried", "subscription.suspended", "subscription.cancelled"]


def test_a_past_due_renewal_paid_on_retry_is_active_again(app, db, session, listed, buyer,
                                                          settings, stripe_gateway):
    principal = buyer.principal
    payments.save_card(db, stripe_gateway, principal, card(stripe_gateway, DECLINED_ON_CHARGE))
    sub = subscriptions.subscribe(session, principal, listed["plans"]["basic"].id,
                                  payment_method="card", settings=settings, today=LAST_MONTH)
    # The first period was paid; only the renewal meets the declined card.
    first = subscriptions.first_order(session, sub)
    session.commit()
    payments.save_card(db, stripe_gateway, principal, card(stripe_gateway, VISA))
    payments.pay_by_card(db, stripe_gateway, settings, first.id, principal=principal)
    payments.save_card(db, stripe_gateway, principal, card(stripe_gateway, DECLINED_ON_CHARGE))
    run(app, db, "renewals", gateway=stripe_gateway)
    session.expire_all()
    assert sub.status == "past_due"

    payments.save_card(db, stripe_gateway, principal, card(stripe_gateway, VISA))
    moment = sub.next_retry_at + dt.timedelta(minutes=1)
    assert run(app, db, "dunning", day=moment.date(), now=moment,
               gateway=stripe_gateway).summary == {"retry_paid": 1}
    session.expire_all()
    assert (sub.status, sub.dunning_attempts, sub.next_retry_at) == ("active", 0, None)
    assert renewal_orders(session, sub)[0].status == "paid"
    assert audited(session, sub)[-1] == "subscription.renewal_paid"


def test_an_overdue_bank_transfer_renewal_is_suspended(app, db, session, listed, buyer,
                                                       finance, settings):
    sub = subscribed(session, listed, buyer, finance, settings)
    run(app, db, "renewals")
    session.expire_all()
    [order] = renewal_orders(session, sub)
    overdue = dt.datetime.combine(order.invoice.due_on + dt.timedelta(days=1), dt.time(1),
                                  tzinfo=dt.timezone.utc)
    assert run(app, db, "dunning", day=overdue.date(), now=overdue).summary == {
        "suspended": 1}
    session.expire_all()
    assert sub.status == "suspended" and not has_access(session, sub)

    pay_by_bank(session, finance, order, settings, reference="B-late")
    assert sub.status == "active" and has_access(session, sub)


def test_a_refunded_first_period_ends_the_subscription(db, session, listed, buyer, finance,
                                                       settings):
    from billing.payments import refunds
    sub = subscribed(session, listed, buyer, finance, settings, today=TODAY)
    payment = subscriptions.first_order(session, sub).payments[0]
    session.commit()
    refunds.refund_payment(db, None, finance.principal, payment.id, reason="mistake",
                           bank_reference="OUT-1")
    session.expire_all()
    assert sub.status == "cancelled" and not has_access(session, sub)


def test_periods_are_unique_per_start(session, listed, buyer, finance, settings):
    sub = subscribed(session, listed, buyer, finance, settings)
    assert session.scalar(select(SubscriptionPeriod).where(
        SubscriptionPeriod.subscription_id == sub.id)).period_start == LAST_MONTH
    assert isinstance(session.get(Subscription, sub.id), Subscription)
    assert Money.from_minor(subscriptions.first_order(session, sub).total_minor, "CNY") == \
        Money("104.94", "CNY")


def test_an_unpaid_upgrade_lapses_when_the_period_renews(app, db, session, listed, buyer,
                                                         finance, settings):
    sub = subscribed(session, listed, buyer, finance, settings)
    change = subscriptions.change_plan(session, buyer.principal, sub.id,
                                       listed["plans"]["pro"].id,
                                       today=sub.current_period_end - dt.timedelta(days=1))
    assert change.order.total_minor > 0
    session.commit()

    run(app, db, "renewals")

    session.expire_all()
    assert change.order.status == "cancelled"
    assert sub.offer_id == listed["plans"]["basic"].id
    assert renewal_orders(session, sub)[0].subtotal_minor == 9_900
