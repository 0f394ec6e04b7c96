"""A day's usage revenue reaches the ledger once, per dataset, split to its supply chain; paying
the month's usage invoice then settles the buyer's receivable without sharing anything twice."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from billing import entitlements
from billing.metering import recognition
from billing.settlement import ledger
from billing.context import BillingSettings
from billing.settlement.ledger import LedgerTransaction, Purpose
from billing.models import UsageEvent
from market.catalog.services import current_supply_chain
from pricing.money import Money
from tests.billing.shop import buyer, listed_dataset

DAY = dt.date(2026, 10, 14)


@pytest.fixture()
def usage(session, passwords):
    shop = listed_dataset(session, passwords)
    org, _, _ = buyer(session, passwords)
    revision = current_supply_chain(session, shop["dataset"].id)
    at = dt.datetime.combine(DAY, dt.time(9), tzinfo=dt.timezone.utc)
    for n, (paid_by, amount, tokens) in enumerate([
            ("postpaid", 1_001, 1_000), ("postpaid", 2_000, 2_000),
            ("wallet", 0, 250_000),  # platform tokens: 250,000 at 20.00 a million = 5.00
            ("subscription", 0, 4_000)]):
        session.add(UsageEvent(
            request_id=f"rec-{n}", organization_id=org.id, dataset_id=shop["dataset"].id,
            version_id=shop["version"].id, kind="data", tokens=tokens,
            unit_price="1", amount_minor=amount, currency="CNY", paid_by=paid_by,
            supply_chain_revision_id=revision.id, period="2026-10", occurred_at=at,
            recorded_at=at))
    wallet = entitlements.get_wallet(session, org.id, "platform")
    entitlements.change_wallet(session, wallet, 1_000_000, kind="grant", reference="rec-grant")
    entitlements.change_wallet(session, wallet, -250_000, kind="debit", reference="rec-2")
    # An event recorded the next day belongs to that day, even if it happened on this one.
    session.add(UsageEvent(
        request_id="rec-late", organization_id=org.id, dataset_id=shop["dataset"].id,
        kind="data", tokens=10, unit_price="1", amount_minor=77, currency="CNY",
        paid_by="postpaid", supply_chain_revision_id=revision.id, period="2026-10",
        occurred_at=at, recorded_at=at + dt.timedelta(days=1)))
    session.flush()
    return shop, org


def _balance(session, purpose, org=None):
    return ledger.balance(session, ledger.get_account(session, purpose, "CNY", org)).minor


def test_a_day_is_shared_out_once(session, usage):
    shop, org = usage
    settings = BillingSettings(platform_fee_bps=500,
                               token_pack_price_per_million=Money("20.00", "CNY"))
    result = recognition.recognize_day(session, DAY, settings)
    assert result["groups"] == 2  # postpaid and wallet; the subscription's tokens carry no money
    assert _balance(session, Purpose.BUYER_RECEIVABLE, org.id) == 3_001
    assert _balance(session, Purpose.BUYER_PREPAID, org.id) == 500
    # 3,001: platform 5% = 150, chain 2,851 as 60/40 = 1,711 / 1,140 (largest remainder);
    # 500: platform 25, chain 475 = 285 / 190.
    assert _balance(session, Purpose.PLATFORM_REVENUE) == -175
    assert _balance(session, Purpose.PARTICIPANT_PAYABLE, shop["supplier"].id) == -(1_711 + 285)
    assert _balance(session, Purpose.PARTICIPANT_PAYABLE, shop["processor"].id) == -(1_140 + 190)
    assert ledger.trial_balance(session) == {"CNY": 0}

    again = recognition.recognize_day(session, DAY, settings)
    assert again == {"already": 2}  # both groups were posted: nothing more
    assert session.scalar(select(func.count()).select_from(LedgerTransaction).where(
        LedgerTransaction.kind == "usage")) == 2  # the same postings, not new ones
    recognition.recognize_day(session, DAY + dt.timedelta(days=1), settings)
    assert _balance(session, Purpose.BUYER_RECEIVABLE, org.id) == 3_078


def test_a_day_with_events_pointing_at_missing_rows_is_not_posted(session, usage):
    shop, org = usage
    at = dt.datetime.combine(DAY, dt.time(10), tzinfo=dt.timezone.utc)
    session.add(UsageEvent(
        request_id="rec-dangling", organization_id=org.id, dataset_id=987_654,
        api_key_id=876_543, kind="royalty", tokens=5, unit_price="1", amount_minor=5,
        currency="CNY", paid_by="postpaid", period="2026-10", occurred_at=at, recorded_at=at))
    session.flush()
    start = dt.datetime.combine(DAY, dt.time(), tzinfo=dt.timezone.utc)
    assert recognition.dangling_references(session, start, start + dt.timedelta(days=1)) == {
        "api_key_id": 1, "dataset_id": 1}
    with pytest.raises(recognition.DanglingReferences, match="dataset_id"):
        recognition.recognize_day(session, DAY, BillingSettings(platform_fee_bps=500))
    assert session.scalar(select(func.count()).select_from(LedgerTransaction)) == 0
    # The next day's events are sound, and are posted.
    assert recognition.recognize_day(session, DAY + dt.timedelta(days=1),
                                     BillingSettings(platform_fee_bps=500))["groups"] == 1


def test_paying_the_usage_invoice_settles_the_receivable(session, usage, passwords):
    from billing import orders
    from billing.payments import settle
    from billing.models import Payment
    from pricing.money import Money, UnitPrice
    from pricing.rating import LineItem

    shop, org = usage
    settings = BillingSettings(platform_fee_bps=500)
    recognition.recognize_day(session, DAY, settings)
    payable_before = _balance(session, Purpose.PARTICIPANT_PAYABLE, shop["supplier"].id)
    order = orders.new_order(session, organization_id=org.id, kind="usage", currency="CNY",
                             payment_method="bank_transfer")
    orders.priced_line(session, order, kind="usage", description="October usage",
                       items=[LineItem("usage", "usage", 1, UnitPrice.of(Money("30.01", "CNY")))],
                       tax_rate="0.06", dataset_id=shop["dataset"].id)
    session.flush()
    payment = Payment(order=order, organization_id=org.id, method="bank_transfer",
                      status="processing", amount_minor=order.total_minor, currency="CNY",
                      idempotency_key="usage-pay")
    session.add(payment)
    session.flush()
    settle.settle_payment(session, payment, settings)
    assert _balance(session, Purpose.BUYER_RECEIVABLE, org.id) == 0
    assert _balance(session, Purpose.PARTICIPANT_PAYABLE, shop["supplier"].id) == payable_before
    assert _balance(session, Purpose.TAX_PAYABLE) == -180
    assert ledger.trial_balance(session) == {"CNY": 0}
