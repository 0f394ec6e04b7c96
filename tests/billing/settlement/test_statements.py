"""Settlement statements over a month built through the real services: closing amounts worked out
by hand, reconciliation to zero, a close that fails part-way leaves nothing, maker-checker
review, disputes corrected in the next period, frozen approved statements, payouts.

Ledger postings are dated when they happen, so the scenario runs now and the periods are closed
at explicit cutoffs taken between its steps: ``PERIOD`` (last month) closes at ``cut1``, after
the month's sales; ``NEXT`` (this month) at ``cut2``, after what came late.
"""

from __future__ import annotations

import datetime as dt
import time
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text

from billing import subscriptions
from billing.context import BillingSettings
from billing.jobs import JOBS_BY_NAME
from billing.runs import run_job
from billing.metering import recognition
from billing.payments import refunds
from billing.settlement import compute, ledger, reconciliation, workflow
from billing.settlement.ledger import LedgerTransaction
from billing.models import Payment, UsageEvent
from billing.models.statements import SettlementStatement, StatementLine
from billing.orders import CartItem, place_mall_order
from billing.errors import GatewayUnavailable
from billing.invoices import issue_invoice
from billing.payments.bank_transfer import record_bank_receipt
from billing.payments.gateway import GatewayError, payment_tag
from market.catalog.services import current_supply_chain
from market.core.db import utcnow
from market.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from pricing.money import Money
from pricing.periods import BusinessCalendar
from tests.billing.conftest import billing_settings
from tests.billing.payments.fake_gateway import FakeGateway
from tests.billing.shop import buyer, listed_dataset, platform_finance, principal_of
from tests.factories import make_user

SETTINGS = BillingSettings()  # STATEMENT_REVIEW_DAYS and the rest at their defaults

NOW = utcnow()
CALENDAR = BusinessCalendar()  # the app's: BUSINESS_TIMEZONE is left at its default
NEXT = CALENDAR.month_of(NOW)
PERIOD = CALENDAR.previous_month(NOW)
PLAN = {"kind": "subscription", "code": "basic", "period": "month",
        "price": {"amount": "99.00", "currency": "CNY"}, "included_tokens": 1_000_000,
        "overage_per_million": {"amount": "10", "currency": "CNY"}, "rollover": False}

# Hand-computed. A package: 9,800.00 + 6% VAT = 10,388.00; platform 5% of 9,800.00 = 490.00;
# the chain's 9,310.00 shared 60/40 = 5,586.00 / 3,724.00. The plan: 99.00 + 5.94 VAT; platform
# 4.95; chain 94.05 = 56.43 / 37.62. The refund of 10% of the first order reverses 10% of
# each part: 558.60 / 372.40. Usage of 30.01 (postpaid, yesterday): platform 1.50, chain
# 28.51 = 17.11 / 11.40 (largest remainder); royalties of 10.00: platform 0.50, chain 9.50
# = 5.70 / 3.80.
SUPPLIER_PERIOD = 558_600 * 2 + 5_643 - 55_860 + 1_711 + 570
PROCESSOR_PERIOD = 372_400 * 2 + 3_762 - 37_240 + 1_140 + 380
# After cut1: the second order refunded in full, and 0.77 of late usage (platform 0.04, chain
# 0.73 = 0.44 / 0.29).
SUPPLIER_LATE = -558_600 + 44
PROCESSOR_LATE = -372_400 + 29


def _instant() -> dt.datetime:
    """A cutoff strictly between the postings before it and those after."""
    time.sleep(0.002)
    moment = utcnow()
    time.sleep(0.002)
    return moment


def _usage(session, shop, org, request_id, kind, amount, recorded_at):
    revision = current_supply_chain(session, shop["dataset"].id)
    session.add(UsageEvent(
        request_id=request_id, organization_id=org.id, dataset_id=shop["dataset"].id,
        version_id=shop["version"].id, kind=kind, tokens=amount * 10, unit_price="0.1",
        amount_minor=amount, currency="CNY", paid_by="postpaid",
        supply_chain_revision_id=revision.id, period=CALENDAR.month_of(recorded_at),
        occurred_at=recorded_at, recorded_at=recorded_at))
    session.flush()


def _pay_by_bank(session, finance, order, settings, reference):
    invoice = issue_invoice(session, order, settings)
    record_bank_receipt(session, finance, invoice, amount=order.total,
                        received_on=utcnow().date(), bank_reference=reference,
                        settings=settings)


def _refund(session, finance, order, amount, reference):
    refund = refunds.reserve_refund(session, finance, order.payments[0].id, amount, "refund")
    refunds.complete_refund(session, refund.id, gateway_ref=f"bank:{reference}")


@pytest.fixture()
def month(session, passwords):
    settings = billing_settings()
    shop = listed_dataset(session, passwords, extra_offers=(PLAN,))
    org, _, shopper = buyer(session, passwords)
    _, _, finance = platform_finance(session, passwords)
    yesterday = utcnow() - dt.timedelta(days=1)
    _usage(session, shop, org, "u-1", "data", 1_001, yesterday)
    _usage(session, shop, org, "u-2", "data", 2_000, yesterday)
    _usage(session, shop, org, "u-3", "royalty", 1_000, yesterday)
    recognition.recognize_day(session, CALENDAR.day_of(yesterday), settings)
    orders = []
    for n in (1, 2):
        order = place_mall_order(session, shopper, [CartItem(shop["package"].id)],
                                 payment_method="bank_transfer")
        _pay_by_bank(session, finance, order, settings, f"B-{n}")
        orders.append(order)
    sub = subscriptions.subscribe(session, shopper, shop["offers"][0].id,
                                  payment_method="bank_transfer", settings=settings)
    _pay_by_bank(session, finance, subscriptions.first_order(session, sub), settings, "B-sub")
    _refund(session, finance, orders[0], Money("1038.80", "CNY"), "OUT-1")
    cut1 = _instant()
    # After the cutoff: a full refund and a usage event recorded late.
    _refund(session, finance, orders[1], None, "OUT-2")
    _usage(session, shop, org, "u-late", "data", 77, utcnow())
    recognition.recognize_day(session, CALENDAR.day_of(utcnow()), settings)
    session.commit()
    return SimpleNamespace(shop=shop, orders=orders, finance=finance, shopper=shopper,
                           settings=settings, cut1=cut1, supplier=shop["supplier"],
                           processor=shop["processor"], exchange=shop["exchange"])


def _by_org(made):
    return {statement.organization_id: statement for statement in made}


def test_a_month_closes_into_statements_traced_to_the_ledger(session, month):
    made = workflow.close_period(session, PERIOD, actor=None, settings=SETTINGS, cutoff=month.cut1)
    assert len(made) == 2
    supplier = _by_org(made)[month.supplier.id]
    processor = _by_org(made)[month.processor.id]
    assert (supplier.opening_minor, supplier.closing_minor) == (0, SUPPLIER_PERIOD)
    assert (processor.opening_minor, processor.closing_minor) == (0, PROCESSOR_PERIOD)
    assert supplier.number == f"ST-{PERIOD}-{month.supplier.id}-CNY"
    assert supplier.status == "draft" and supplier.generated_by_id is None
    assert supplier.exchange_id == month.exchange.id
    assert supplier.review_due_on == utcnow().date() + dt.timedelta(days=5)
    assert sorted(line.kind for line in supplier.lines) == \
        ["refund", "royalty", "sale", "sale", "subscription", "usage"]
    assert supplier.totals == {"refund": "-558.60", "royalty": "5.70", "sale": "11172.00",
                               "subscription": "56.43", "usage": "17.11"}
    sale = next(line for line in supplier.lines if line.kind == "sale")
    assert sale.order_number == month.orders[0].number and sale.gross_minor == 1_038_800
    assert sale.dataset_id == month.shop["dataset"].id and sale.amount_minor == 558_600
    assert sale.description == f"Order {month.orders[0].number} — Grid load series, " \
                               "share 60.00%"
    usage = next(line for line in supplier.lines if line.kind == "usage")
    assert usage.gross_minor == 3_001 and usage.order_number is None
    assert [line.position for line in supplier.lines] == list(range(1, 7))
    assert supplier.content_hash == compute.content_hash(
        compute.statement_content(supplier))
    assert compute.verify_statements(session) == []

    report = reconciliation.reconcile(session, PERIOD, actor=None)["currencies"]["CNY"]
    assert report["gross_collected"] == 1_038_800 * 2 + 10_494
    assert report["refunds"] == 103_880
    assert report["participants"] == SUPPLIER_PERIOD + PROCESSOR_PERIOD
    assert report["participants_by_kind"]["usage"] == 1_711 + 1_140 + 570 + 380
    assert report["buyer_receivable"] == -(3_001 + 1_000)
    assert report["difference"] == 0
    assert reconciliation.reconcile(session, NEXT, actor=None)["currencies"]["CNY"]["difference"] == 0

    with pytest.raises(Conflict) as closed:
        workflow.close_period(session, PERIOD, actor=None, settings=SETTINGS, cutoff=month.cut1)
    assert closed.value.field == "period"
    with pytest.raises(InvalidInput) as early:
        workflow.close_period(session, NEXT, actor=None,
                              settings=SETTINGS)  # this month has not ended
    assert early.value.field == "period"


def test_a_close_that_fails_part_way_leaves_nothing_and_reruns_identically(
        db, session, month, monkeypatch):
    def hashes():
        return {s.number: s.content_hash for s in session.scalars(
            select(SettlementStatement).execution_options(populate_existing=True))}

    nested = session.begin_nested()
    workflow.close_period(session, PERIOD, actor=None, settings=SETTINGS, cutoff=month.cut1)
    session.flush()
    uninterrupted = hashes()
    nested.rollback()
    assert len(uninterrupted) == 2 and hashes() == {}

    original, calls = workflow._statement_for, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return original(*args, **kwargs)

    monkeypatch.setattr(workflow, "_statement_for", failing)
    with pytest.raises(RuntimeError):
        with db.session() as other, other.begin():
            workflow.close_period(other, PERIOD, actor=None, settings=SETTINGS, cutoff=month.cut1)
    assert len(calls) == 2
    assert session.scalar(select(func.count()).select_from(SettlementStatement)) == 0
    assert session.scalar(select(func.count()).select_from(StatementLine)) == 0
    monkeypatch.undo()
    with db.session() as other, other.begin():
        workflow.close_period(other, PERIOD, actor=None, settings=SETTINGS, cutoff=month.cut1)
    assert hashes() == uninterrupted


def test_review_dispute_correction_payout_and_the_next_period(session, passwords, month,
                                                               runner):
    exchange = month.exchange
    maker = principal_of(make_user(session, passwords, exchange, "reviewer"), exchange)
    checker = principal_of(make_user(session, passwords, exchange, "reviewer"), exchange)
    made = _by_org(workflow.close_period(session, PERIOD, actor=None,
                                         settings=SETTINGS, cutoff=month.cut1))
    supplier, processor = made[month.supplier.id], made[month.processor.id]

    # Maker-checker: whoever issued it cannot approve it; another reviewer can.
    workflow.issue(session, maker, processor)
    assert processor.generated_by_id == maker.user_id
    workflow.start_review(session, maker, processor)
    with pytest.raises(Forbidden) as same:
        workflow.approve(session, maker, processor)
    assert same.value.field == "approver"
    workflow.approve(session, checker, processor)
    assert processor.status == "approved" and processor.approved_by_id == checker.user_id

    # The supplier disputes its statement: it cannot be approved, nor paid, until resolved.
    workflow.issue(session, maker, supplier)
    workflow.start_review(session, maker, supplier)
    workflow.dispute(session, month.shop["owner"], supplier, "A sale of ours is missing.")
    with pytest.raises(Conflict):
        workflow.approve(session, checker, supplier)
    with pytest.raises(Conflict):
        workflow.pay(session, month.finance, supplier, bank_reference="PAY-0")
    adjustment = workflow.resolve_dispute(session, checker, supplier, Money("100.00", "CNY"),
                                            "Agreed: 100.00 more.", reason_code="share_error",
                                            lines=[line.position for line in supplier.lines])
    assert adjustment.amount_minor == 10_000 and supplier.status == "under_review"
    workflow.approve(session, checker, supplier)
    session.commit()

    # Approved: frozen. Neither its amounts nor its lines change, and nothing did.
    supplier.closing_minor += 1
    supplier.activity_minor += 1
    with pytest.raises(Conflict):
        session.flush()
    session.rollback()
    supplier.lines[0].amount_minor += 1
    with pytest.raises(Conflict):
        session.flush()
    session.rollback()
    supplier.lines.append(StatementLine(position=99, kind="other", occurred_on=NOW.date(),
                                        ledger_transaction_id=supplier.lines[0]
                                        .ledger_transaction_id, description="x",
                                        amount_minor=1))
    with pytest.raises(Conflict):
        session.flush()
    session.rollback()
    session.expire_all()
    assert supplier.closing_minor == SUPPLIER_PERIOD and len(supplier.lines) == 6
    assert compute.verify_statements(session) == []

    # Paid by bank transfer: the payout leaves platform clearing.
    workflow.pay(session, month.finance, processor, bank_reference="PAY-1")
    assert (processor.status, processor.payout_method, processor.payout_reference) == \
        ("paid", "bank_transfer", "PAY-1")
    payout = session.scalar(select(LedgerTransaction).where(
        LedgerTransaction.idempotency_key == f"payout:{processor.id}:{month.processor.id}"))
    assert payout.kind == "payout" and sorted(e.amount_minor for e in payout.entries) == \
        [-PROCESSOR_PERIOD, PROCESSOR_PERIOD]
    with pytest.raises(Conflict):
        workflow.pay(session, month.finance, processor, bank_reference="PAY-2")
    session.commit()

    cut2 = _instant()
    following = _by_org(workflow.close_period(session, NEXT, actor=None,
                                              settings=SETTINGS, cutoff=cut2))
    nxt = following[month.supplier.id]
    assert nxt.opening_minor == SUPPLIER_PERIOD
    assert nxt.closing_minor == SUPPLIER_PERIOD + SUPPLIER_LATE + 10_000
    assert sorted(line.kind for line in nxt.lines) == ["adjustment", "refund", "usage"]
    assert nxt.totals["adjustment"] == "100.00"
    paid_next = following[month.processor.id]
    payout_line = next(line for line in paid_next.lines if line.kind == "payout")
    # What was paid is what was owed at the cutoff: the next period starts from zero.
    assert paid_next.opening_minor + payout_line.amount_minor == 0
    assert paid_next.closing_minor == PROCESSOR_LATE
    # Owing nothing (the refund after the payout is the processor's debt): paid with no payout.
    payouts = session.scalar(select(func.count()).select_from(LedgerTransaction)
                             .where(LedgerTransaction.kind == "payout"))
    workflow.issue(session, maker, paid_next)
    workflow.start_review(session, maker, paid_next)
    workflow.approve(session, checker, paid_next)
    workflow.pay(session, month.finance, paid_next, bank_reference="NONE-DUE")
    assert paid_next.status == "paid" and session.scalar(
        select(func.count()).select_from(LedgerTransaction)
        .where(LedgerTransaction.kind == "payout")) == payouts
    assert reconciliation.reconcile(session, NEXT, actor=None)["currencies"]["CNY"]["payouts"] == \
        PROCESSOR_PERIOD
    assert reconciliation.reconcile(session, NEXT, actor=None)["currencies"]["CNY"]["difference"] == 0
    assert ledger.trial_balance(session) == {"CNY": 0}
    session.commit()

    # A stored hash altered behind the service's back is found, and named by the CLI.
    assert runner.invoke(args=["billing", "verify-statements"]).output.strip() == \
        "4 statements verified"
    session.execute(text("UPDATE settlement_statements SET content_hash = :h WHERE id = :id"),
                    {"h": "0" * 64, "id": supplier.id})
    session.execute(text("UPDATE statement_lines SET amount_minor = amount_minor + 1 "
                         "WHERE statement_id = :id AND position = 1"), {"id": processor.id})
    session.expire_all()
    problems = compute.verify_statements(session)
    assert [statement_id for statement_id, _ in problems] == sorted([supplier.id, processor.id])
    result = runner.invoke(args=["billing", "verify-statements"])
    assert result.exit_code == 1 and supplier.number in result.output


def test_only_its_participant_exchange_and_platform_see_a_statement(session, passwords, month):
    made = _by_org(workflow.close_period(session, PERIOD, actor=None,
                                         settings=SETTINGS, cutoff=month.cut1))
    statement = made[month.supplier.id]
    reviewer = principal_of(make_user(session, passwords, month.exchange, "reviewer"),
                            month.exchange)
    for principal in (month.shop["owner"], reviewer, month.finance):
        assert workflow.get_statement(session, principal, statement.id) is statement
    with pytest.raises(NotFound):
        workflow.get_statement(session, month.shopper, statement.id)
    with pytest.raises(NotFound):
        workflow.participant_history(session, month.shopper, month.supplier.id)
    assert workflow.list_statements(session, month.shop["owner"]).all() == [statement]
    assert set(workflow.list_statements(session, reviewer, period=PERIOD).all()) == \
        set(made.values())
    assert workflow.participant_history(session, reviewer, month.supplier.id) == [statement]
    # The buyer cannot dispute, the supplier cannot review.
    with pytest.raises(NotFound):
        workflow.dispute(session, month.shopper, statement, "no")
    with pytest.raises(Forbidden):
        workflow.issue(session, month.shop["owner"], statement)


def test_the_monthly_job_closes_once_and_then_says_so(app, db, session, month):
    job = JOBS_BY_NAME["close-statements"]
    assert job.trigger == {"day": workflow.STATEMENT_CLOSE_DAY, "hour": 2, "minute": 0}
    assert job.period_of(dt.datetime(2026, 12, 3, 2, 0)) == "2026-11"
    workflow.close_period(session, PERIOD, actor=None, settings=SETTINGS, cutoff=month.cut1)
    session.commit()
    before = {s.number: s.content_hash for s in session.scalars(select(SettlementStatement))}
    messages = []
    outcome = run_job(db, job, PERIOD, now=utcnow(), settings=app.config,
                      progress=messages.append)
    assert outcome.summary == {"statements": 0, "already_closed": True}
    assert any("already closed" in m for m in messages)
    after = {s.number: s.content_hash for s in session.scalars(
        select(SettlementStatement).execution_options(populate_existing=True))}
    assert after == before


def test_reconciliation_compares_card_payments_with_the_processor(session, month):
    order = month.orders[0]
    payment = Payment(order_id=order.id, organization_id=order.organization_id, method="card",
                      status="succeeded", amount_minor=5_000, currency="CNY",
                      idempotency_key="card-test", succeeded_at=utcnow())
    session.add(payment)
    session.flush()

    gateway = FakeGateway()
    gateway.add_intent(amount_minor=4_000, currency="cny", created=utcnow(),
                       metadata={"payment": payment_tag(order.number, payment.id)})
    gateway.add_intent(amount_minor=9_999, currency="cny", created=utcnow(),
                       metadata={"payment": "someone else's"})
    report = reconciliation.reconcile(session, NEXT, actor=None, gateway=gateway)
    # Ours 50.00, theirs 40.00 for our payment; a stranger's intent is not counted.
    assert report["currencies"]["CNY"]["processor_difference"] == 1_000


def test_the_processor_is_asked_for_the_period_s_window_only(session, month):
    """A closed period: its statements' window; one never closed: its month on the business
    calendar (Asia/Shanghai). Each from a day earlier (``INTENT_LEAD``)."""
    order = month.orders[0]
    payment = Payment(order_id=order.id, organization_id=order.organization_id, method="card",
                      status="succeeded", amount_minor=5_000, currency="CNY",
                      idempotency_key="card-window", succeeded_at=utcnow())
    session.add(payment)
    session.flush()

    closed = workflow.close_period(session, PERIOD, actor=None,
                                   settings=SETTINGS, cutoff=month.cut1)
    gateway = FakeGateway()
    # The processor still holds an intent with our tag created long before the window.
    gateway.add_intent(amount_minor=5_000, currency="CNY",
                       metadata={"payment": payment_tag(order.number, payment.id)},
                       created=utcnow() - dt.timedelta(days=90))
    report = reconciliation.reconcile(session, NEXT, actor=None, gateway=gateway)
    assert gateway.windows == [(closed[0].cutoff - reconciliation.INTENT_LEAD,
                                CALENDAR.month_bounds(NEXT)[1])]
    assert report["currencies"]["CNY"]["processor_difference"] == 5_000

    reconciliation.reconcile(session, "2020-03", actor=None, gateway=gateway)
    assert gateway.windows[-1] == (
        dt.datetime(2020, 2, 28, 16, tzinfo=dt.timezone.utc),
        dt.datetime(2020, 3, 31, 16, tzinfo=dt.timezone.utc))


def test_a_processor_that_does_not_answer_refuses_the_reconciliation(session, month):
    gateway = FakeGateway()
    gateway.failure = GatewayError("api_connection_error", "timed out", outcome_unknown=True)
    with pytest.raises(GatewayUnavailable) as refused:
        reconciliation.reconcile(session, NEXT, actor=None, gateway=gateway)
    assert refused.value.status == 502 and refused.value.code == "processor_unavailable"
    assert "card processor (fake)" in refused.value.detail


def test_only_the_platform_reconciles(session, passwords, month):
    reviewer = principal_of(make_user(session, passwords, month.exchange, "reviewer"),
                            month.exchange)
    with pytest.raises(Forbidden, match="whole platform"):
        reconciliation.reconcile(session, NEXT, actor=reviewer)
    assert reconciliation.reconcile(session, NEXT, actor=month.finance)["period"] == NEXT


def test_whoever_issued_a_statement_cannot_approve_it(session, passwords):
    """The maker is whoever generated the statement and whoever issued it."""
    from billing.models import SettlementStatement
    from market.accounts import services as accounts
    from market.core.errors import Forbidden
    from tests.factories import make_org, make_user

    exchange = make_org(session, "exchange", name="Review Exchange")
    participant = make_org(session, "supplier", name="Participant Co")
    issuer = make_user(session, passwords, exchange, "reviewer")
    checker = make_user(session, passwords, exchange, "reviewer")
    statement = SettlementStatement(
        number="ST-2026-01-X", organization_id=participant.id, exchange_id=exchange.id,
        currency="CNY", period="2026-01", period_start=dt.date(2026, 1, 1),
        period_end=dt.date(2026, 2, 1), cutoff=dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc),
        status="draft", opening_minor=0, activity_minor=0, closing_minor=0, totals={},
        content_hash="0" * 64, generated_by_id=None)
    session.add(statement)
    session.flush()
    statement.content_hash = compute.content_hash(compute.statement_content(statement))
    by_issuer = accounts.principal_for_user(issuer, exchange.id)
    workflow.issue(session, by_issuer, statement)
    workflow.start_review(session, by_issuer, statement)
    with pytest.raises(Forbidden, match="generated, issued or submitted"):
        workflow.approve(session, by_issuer, statement)
    # Another reviewer passes the maker-checker rule; this bare statement then stops at the
    # ledger check (the full approval is shown by the scenario above).
    with pytest.raises(Conflict, match="payable account"):
        workflow.approve(session, accounts.principal_for_user(checker, exchange.id),
                           statement)
