"""Postpaid usage: credit lines, the monthly usage invoice (once per month), releasing credit."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import select

from billing.metering import postpaid
from billing import invoices
from billing.payments import bank_transfer, card as payments
from billing.jobs import JOBS_BY_NAME
from billing.runs import run_job
from billing.models import CreditLine, Order, UsageEvent
from market.catalog import offers
from market.core.audit import SYSTEM
from market.core.db import utcnow
from market.core.errors import Forbidden, InvalidInput
from pricing.money import Money
from tests.billing.conftest import METERED
from tests.stripe_server import card

PERIOD = "2026-10"
_requests = itertools.count(1)


def quiet(_message: str) -> None:
    pass


def usage(session, org, listed, *, tokens, amount_minor, paid_by="postpaid", period=PERIOD,
          currency="CNY"):
    event = UsageEvent(request_id=f"req-{next(_requests)}", organization_id=org.id,
                       dataset_id=listed["dataset"].id, kind="data", tokens=tokens,
                       unit_price="12.5", amount_minor=amount_minor, currency=currency,
                       paid_by=paid_by, supply_chain_revision_id=listed["chain"].id,
                       period=period, occurred_at=dt.datetime(2026, 10, 15, tzinfo=dt.timezone.utc))
    session.add(event)
    return event


def run(app, db, *, period=PERIOD, force=False):
    return run_job(db, JOBS_BY_NAME["postpaid-invoices"], period, now=utcnow(),
                   settings=app.config, progress=quiet, force=force)


@pytest.fixture()
def credit(session, buyer, finance):
    line = postpaid.open_credit_line(session, finance.principal, buyer.org.id,
                                     Money("5000.00", "CNY"))
    session.commit()
    return line


def test_only_platform_finance_opens_credit_lines(session, buyer, finance):
    with pytest.raises(Forbidden):
        postpaid.open_credit_line(session, buyer.principal, buyer.org.id,
                                  Money("100", "CNY"))
    with pytest.raises(InvalidInput) as error:
        postpaid.open_credit_line(session, finance.principal, buyer.org.id,
                                  Money("-1", "CNY"))
    assert error.value.field == "limit"
    line = postpaid.open_credit_line(session, SYSTEM, buyer.org.id, Money("100", "CNY"))
    again = postpaid.open_credit_line(session, finance.principal, buyer.org.id,
                                      Money("250", "CNY"))
    assert again.id == line.id and line.limit_minor == 25_000


def test_last_months_usage_on_credit_is_invoiced_once(app, db, session, listed, buyer, finance,
                                                      credit, settings):
    org = buyer.org
    billed = [usage(session, org, listed, tokens=1_000_000, amount_minor=1_250),
              usage(session, org, listed, tokens=2_000_001, amount_minor=2_501)]
    untouched = [usage(session, org, listed, tokens=5, amount_minor=1, paid_by="wallet"),
                 usage(session, org, listed, tokens=5, amount_minor=1, period="2026-11")]
    credit.used_minor = 3_751 + 1
    session.commit()

    outcome = run(app, db)
    assert outcome.summary == {"orders": 1}
    assert run(app, db, force=True).summary == {}

    session.expire_all()
    [order] = session.scalars(select(Order).where(Order.kind == "usage"))
    assert (order.billing_key, order.organization_id) == (f"usage:{org.id}:{PERIOD}", org.id)
    [line] = order.lines
    assert (line.dataset_id, line.tokens, line.subtotal_minor) == (
        listed["dataset"].id, 3_000_001, 3_751)
    assert line.tax_minor == 225  # 6% of 37.51, rounded half-up
    assert order.total_minor == 3_976
    assert line.supply_chain_revision_id == listed["chain"].id and len(line.shares) == 2
    assert {e.order_id for e in billed} == {order.id}
    assert {e.order_id for e in untouched} == {None}
    assert order.invoice is not None and order.invoice.amount_due_minor == 3_976

    invoice = invoices.get_invoice(session, finance.principal, order.invoice.id,
                                   as_finance=True)
    bank_transfer.record_bank_receipt(session, finance.principal, invoice, amount=order.total,
                                      received_on=utcnow().date(), bank_reference="B-usage",
                                      settings=settings)
    assert order.status == "paid"
    assert session.get(CreditLine, credit.id).used_minor == 1


def test_the_usage_invoice_is_taxed_by_the_active_rate_card_not_a_later_retired_one(
        app, db, session, listed, buyer, credit):
    later = offers.add_offer(session, listed["owner"], listed["dataset"],
                             {**METERED, "code": "api-export", "tax_rate": "0"})
    offers.retire_offer(session, listed["owner"], later)
    assert offers.metered_offer(listed["dataset"]).id == listed["metered"].id
    usage(session, buyer.org, listed, tokens=3_000_001, amount_minor=3_751)
    credit.used_minor = 3_751
    session.commit()

    assert run(app, db).summary == {"orders": 1}
    [line] = session.scalar(select(Order).where(Order.kind == "usage")).lines
    assert (line.tax_rate, line.tax_minor) == ("0.06", 225)  # the active card's 6%, not 0%


def test_nothing_to_bill_makes_no_order(app, db, session, listed, buyer, credit):
    usage(session, buyer.org, listed, tokens=10, amount_minor=0)
    session.commit()
    assert run(app, db).summary == {}
    assert session.scalar(select(Order).where(Order.kind == "usage")) is None


def test_a_card_credit_line_is_charged(app, db, session, listed, buyer, finance,
                                       stripe_gateway):
    payments.save_card(db, stripe_gateway, buyer.principal,
                       card(stripe_gateway, "4242424242424242"))
    line = postpaid.open_credit_line(session, finance.principal, buyer.org.id,
                                     Money("5000.00", "CNY"), payment_method="card")
    usage(session, buyer.org, listed, tokens=1_000_000, amount_minor=1_250)
    line.used_minor = 1_250
    session.commit()

    outcome = run_job(db, JOBS_BY_NAME["postpaid-invoices"], PERIOD, now=utcnow(),
                      settings=app.config, gateway=stripe_gateway, progress=quiet)

    assert outcome.summary == {"orders": 1, "charge_succeeded": 1}
    session.expire_all()
    order = session.scalar(select(Order).where(Order.kind == "usage"))
    assert order.status == "paid" and order.invoice is None
    assert session.get(CreditLine, line.id).used_minor == 0
