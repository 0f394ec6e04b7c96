"""Segregation of duties on money and reviews: no organization confirms money into, refunds,
reviews or adjusts what it is a party to; money from the dual-control threshold waits for a
second person of another team or a higher role; adjustments are bounded by the lines they cite.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from billing import invoices
from billing.payments import bank_transfer, refunds
from billing.settlement import workflow
from billing.settlement.ledger import LedgerEntry, LedgerTransaction
from billing.models import BankReceipt, Invoice, Order
from billing.models.statements import SettlementStatement, StatementAdjustment
from billing.orders import order_parties
from market.core.audit import AuditEntry
from market.catalog import services as catalog
from market.core.db import utcnow
from market.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from pricing.money import Money
from tests.billing.conftest import billing_settings
from tests.billing.shop import listed_dataset, principal_of
from tests.factories import make_key, make_org, make_user
from tests.fixtures import csrf_token

DUAL = billing_settings(dual_control_threshold=Decimal("1000.00"))


@pytest.fixture()
def shop(session, passwords):
    made = listed_dataset(session, passwords, package_price="9800.00")
    session.commit()
    return made


def _order_and_invoice(client, headers, offer_id):
    placed = client.post("/api/v1/orders", headers=headers, json={
        "items": [{"offer_id": offer_id}], "payment_method": "bank_transfer"})
    assert placed.status_code == 201, placed.get_json()
    paid = client.post(f"/api/v1/orders/{placed.get_json()['id']}/pay", headers=headers,
                       json={"method": "bank_transfer"})
    assert paid.status_code == 200, paid.get_json()
    return placed.get_json(), paid.get_json()["invoice"]


def _receipt(client, invoice, reference):
    return client.post(f"/api/v1/invoices/{invoice['id']}/receipts",
                       headers={"X-CSRFToken": csrf_token(client)}, json={
                           "amount": invoice["amount_due"], "received_on": "2026-11-20",
                           "bank_reference": reference})


# Finding: an exchange bought data and confirmed its own bank payment ---------------------------

def test_an_exchange_cannot_confirm_money_for_its_own_purchase(session, sign_in_as, shop):
    exchange = shop["exchange"]
    _, secret = make_key(session, exchange)
    session.commit()
    order, invoice = _order_and_invoice(sign_in_as(exchange, "owner").application.test_client(),
                                        {"Authorization": f"Bearer {secret}"},
                                        shop["package"].id)
    finance = sign_in_as(exchange, "finance")
    refused = _receipt(finance, invoice, "BANK-SELF-1")
    assert refused.status_code == 403, refused.get_json()
    body = refused.get_json()
    assert body["code"] == "party_to_item" and "party" in body["errors"]
    stored = session.get(Invoice, invoice["id"])
    session.refresh(stored)
    assert stored.status == "open" and stored.amount_received_minor == 0
    assert session.get(Order, order["id"]).status == "awaiting_payment"
    assert not session.scalars(select(BankReceipt)).all()


def test_an_exchange_in_the_supply_chain_cannot_confirm_money_for_the_sale(
        session, passwords, sign_in_as, shop):
    exchange, supplier = shop["exchange"], shop["supplier"]
    catalog.set_supply_chain(session, shop["owner"], shop["dataset"], [
        {"organization_id": supplier.id, "role": "supplier", "share_bps": 9_000},
        {"organization_id": exchange.id, "role": "exchange", "share_bps": 1_000}])
    buyer = make_org(session, "buyer", name="City Water Bureau")
    session.commit()
    client = sign_in_as(buyer, "owner")
    order, invoice = _order_and_invoice(client, {"X-CSRFToken": csrf_token(client)},
                                        shop["package"].id)
    assert exchange.id in order_parties(session, session.get(Order, order["id"]))
    assert _receipt(sign_in_as(exchange, "finance"), invoice, "BANK-FEE-1").status_code == 403
    # The platform's finance is no party: it records the money.
    platform = make_org(session, "platform", name="Marketplace Platform")
    session.commit()
    recorded = _receipt(sign_in_as(platform, "finance"), invoice, "BANK-FEE-1")
    assert recorded.status_code == 200, recorded.get_json()
    assert recorded.get_json()["status"] == "paid"


def test_nobody_refunds_an_order_of_their_own_side(session, passwords, shop, settings):
    exchange = shop["exchange"]
    exchange_finance = principal_of(make_user(session, passwords, exchange, "finance"), exchange)
    order, invoice = _service_order(session, shop, exchange.id, settings)
    platform, checker = _platform_people(session, passwords)
    bank_transfer.record_bank_receipt(session, checker["finance"], invoice, amount=order.total,
                                      received_on=utcnow().date(), bank_reference="B-1",
                                      settings=settings)
    payment = order.payments[0]
    with pytest.raises(Forbidden, match="party"):
        refunds.reserve_refund(session, exchange_finance, payment.id, None, "to ourselves")


# Dual control of bank receipts ------------------------------------------------------------------

def _service_order(session, shop, buyer_org_id, settings):
    from billing import orders
    order = orders.place_mall_order(session, _buyer_principal(session, buyer_org_id),
                                    [orders.CartItem(shop["package"].id)],
                                    payment_method="bank_transfer")
    session.flush()
    return order, invoices.issue_invoice(session, order, settings)


def _buyer_principal(session, org_id):
    from market.accounts.authz import Principal
    from market.accounts.models import Organization
    org = session.get(Organization, org_id)
    return Principal(organization_id=org.id, member_role="owner",
                     org_roles=frozenset(org.role_names))


def _platform_people(session, passwords):
    platform = make_org(session, "platform", name="Marketplace Platform")
    people = {role: principal_of(make_user(session, passwords, platform, role), platform)
              for role in ("finance", "reviewer", "owner")}
    people["colleague"] = principal_of(make_user(session, passwords, platform, "finance"),
                                       platform)
    return platform, people


def _postings(session, kind):
    return session.scalar(select(func.count()).select_from(LedgerTransaction).where(
        LedgerTransaction.kind == kind))


@pytest.fixture()
def invoiced(session, passwords, shop):
    """A buyer's bank-transfer invoice of 10,388.00 under a dual-control threshold of 1,000.00,
    and the platform's people (finance, a finance colleague, reviewer, owner)."""
    buyer = make_org(session, "buyer", name="Port Authority")
    order, invoice = _service_order(session, shop, buyer.id, DUAL)
    _, people = _platform_people(session, passwords)
    return buyer, order, invoice, people


def _record(session, people, invoice, amount, reference):
    """The platform's finance person records money seen on the bank account today."""
    return bank_transfer.record_bank_receipt(session, people["finance"], invoice, amount=amount,
                                             received_on=utcnow().date(),
                                             bank_reference=reference, settings=DUAL)


def test_a_large_receipt_waits_for_a_second_person_of_another_team(session, invoiced):
    buyer, order, invoice, people = invoiced
    receipt = _record(session, people, invoice, order.total, "ICBC-BIG-1")
    # 10,388.00 is over the threshold of 1,000.00: recorded, nothing posted, nothing paid.
    assert receipt.status == "pending_approval"
    assert invoice.status == "open" and invoice.amount_received_minor == 0
    assert _postings(session, "bank_receipt") == 0 and order.status == "awaiting_payment"
    assert [r.id for r in bank_transfer.pending_receipts(session, people["owner"]).all()] == [
        receipt.id]

    # Neither the maker nor a colleague of the same team may confirm it.
    with pytest.raises(Forbidden, match="cannot also approve"):
        bank_transfer.confirm_bank_receipt(session, people["finance"], receipt, settings=DUAL)
    with pytest.raises(Forbidden, match="another team or a higher role"):
        bank_transfer.confirm_bank_receipt(session, people["colleague"], receipt, settings=DUAL)
    # Nor the buyer's side, nor an API key.
    with pytest.raises(NotFound):
        bank_transfer.confirm_bank_receipt(session, _buyer_principal(session, buyer.id), receipt,
                                           settings=DUAL)
    with pytest.raises(Forbidden, match="person"):
        bank_transfer.confirm_bank_receipt(session, dataclasses.replace(
            people["owner"], user_id=None, api_key_id=1), receipt, settings=DUAL)
    assert receipt.status == "pending_approval"

    # The platform's owner (a higher role) confirms: posted and paid now.
    bank_transfer.confirm_bank_receipt(session, people["owner"], receipt, settings=DUAL,
                                       note="Seen on the statement of the 20th.")
    assert receipt.status == "confirmed" and receipt.decided_by_id == people["owner"].user_id
    assert invoice.status == "paid" and order.status == "paid"
    assert _postings(session, "bank_receipt") == 1
    with pytest.raises(Conflict):
        bank_transfer.confirm_bank_receipt(session, people["owner"], receipt, settings=DUAL)
    actions = set(session.scalars(select(AuditEntry.action).where(
        AuditEntry.object_type == "invoice", AuditEntry.object_id == str(invoice.id))))
    assert {"invoice.receipt_recorded", "invoice.receipt_confirmed"} <= actions


def test_a_rejected_receipt_posts_nothing_and_frees_its_reference(session, invoiced):
    _, order, invoice, people = invoiced
    wrong = _record(session, people, invoice, Money("99999.00", "CNY"), "ICBC-TYPO")
    with pytest.raises(InvalidInput):
        bank_transfer.reject_bank_receipt(session, people["owner"], wrong, note=" ")
    bank_transfer.reject_bank_receipt(session, people["owner"], wrong, note="Amount mistyped.")
    session.flush()
    assert wrong.status == "rejected" and _postings(session, "bank_receipt") == 0
    corrected = _record(session, people, invoice, order.total, "ICBC-TYPO")
    session.flush()
    assert corrected.status == "pending_approval"
    with pytest.raises(Conflict, match="already recorded"):
        _record(session, people, invoice, order.total, "ICBC-TYPO")


def test_a_small_receipt_is_posted_by_one_person(session, invoiced):
    _, order, invoice, people = invoiced
    receipt = _record(session, people, invoice, Money("999.99", "CNY"), "ICBC-SMALL")
    assert receipt.status == "confirmed" and invoice.status == "partially_paid"
    assert _postings(session, "bank_receipt") == 1


@pytest.fixture()
def bank_transfer_over_threshold(app, session, sign_in_as, shop, monkeypatch):
    """A buyer's invoice of 10,388.00 over a dual-control threshold of 1,000.00, and the
    platform's finance person who will record its money."""
    monkeypatch.setitem(app.extensions, "market.billing", dataclasses.replace(
        app.extensions["market.billing"], dual_control_threshold=Decimal("1000.00")))
    buyer = make_org(session, "buyer", name="Port Authority")
    platform = make_org(session, "platform", name="Marketplace Platform")
    session.commit()
    client = sign_in_as(buyer, "owner")
    _, invoice = _order_and_invoice(client, {"X-CSRFToken": csrf_token(client)},
                                    shop["package"].id)
    return platform, invoice, sign_in_as(platform, "finance")


def test_receipt_approval_over_http(session, sign_in_as, bank_transfer_over_threshold):
    platform, invoice, maker = bank_transfer_over_threshold
    recorded = _receipt(maker, invoice, "ICBC-HTTP-1")
    assert recorded.status_code == 200 and recorded.get_json()["status"] == "open"
    [receipt] = recorded.get_json()["receipts"]
    assert receipt["status"] == "pending_approval"
    headers = {"X-CSRFToken": csrf_token(maker)}
    assert [r["id"] for r in maker.get("/api/v1/finance/receipts").get_json()["items"]] == [
        receipt["id"]]
    own = maker.post(f"/api/v1/receipts/{receipt['id']}/confirm", headers=headers, json={})
    assert own.status_code == 403 and own.get_json()["code"] == "checker_required"
    checker = sign_in_as(platform, "owner")
    done = checker.post(f"/api/v1/receipts/{receipt['id']}/confirm",
                        headers={"X-CSRFToken": csrf_token(checker)}, json={"note": "ok"})
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["status"] == "confirmed"
    session.expire_all()
    assert session.get(Invoice, invoice["id"]).status == "paid"


# Statements: the participant never reviews its own; adjustments bounded and checked ----------

@pytest.fixture()
def statement_of(session):
    def make(participant, exchange, *, lines=((1_000_000, 940_000),), status="issued"):
        from billing.models.statements import StatementLine
        from billing.settlement.ledger import Line, Purpose, get_account, post
        today = dt.date.today()
        cutoff = dt.datetime.combine(today.replace(day=1), dt.time(), tzinfo=dt.timezone.utc)
        statement = SettlementStatement(
            number=f"ST-T-{participant.id}-{exchange.id}", organization_id=participant.id,
            exchange_id=exchange.id, currency="CNY", period="2026-01",
            period_start=dt.date(2026, 1, 1), period_end=dt.date(2026, 2, 1), cutoff=cutoff,
            status="draft", opening_minor=0, activity_minor=sum(a for _, a in lines),
            closing_minor=sum(a for _, a in lines), totals={}, content_hash="0" * 64,
            review_due_on=today)
        session.add(statement)
        session.flush()
        money = Money.from_minor(1, "CNY")
        transaction = post(session, "other", [
            Line.credit(get_account(session, Purpose.PARTICIPANT_PAYABLE, "CNY",
                                    participant.id), money),
            Line.debit(get_account(session, Purpose.PLATFORM_REVENUE, "CNY"), money)],
            idempotency_key=f"t:{statement.id}", reference=("statement", statement.id))
        for position, (gross, amount) in enumerate(lines, start=1):
            session.add(StatementLine(statement_id=statement.id, position=position,
                                      kind="sale", occurred_on=dt.date(2026, 1, 5),
                                      ledger_transaction_id=transaction.id,
                                      description="Sale", gross_minor=gross,
                                      amount_minor=amount))
        session.flush()
        session.expire(statement, ["lines"])
        statement.status = status
        session.flush()
        return statement
    return make


def test_an_exchange_never_reviews_its_own_statement(session, passwords, statement_of):
    exchange = make_org(session, "exchange", name="Self Exchange")
    statement = statement_of(exchange, exchange)
    reviewer = principal_of(make_user(session, passwords, exchange, "reviewer"), exchange)
    colleague = principal_of(make_user(session, passwords, exchange, "owner"), exchange)
    for step in (workflow.start_review, workflow.approve):
        with pytest.raises(Forbidden, match="party"):
            step(session, reviewer, statement)
    workflow.dispute(session, colleague, statement, "We are owed more.")  # as participant
    with pytest.raises(Forbidden, match="party"):
        workflow.resolve_dispute(session, colleague, statement, Money("1000000.00", "CNY"),
                                   "Give us a million.", lines=[1], settings=DUAL)
    assert not session.scalars(select(StatementAdjustment)).all()
    # The platform's staff review it instead.
    platform = make_org(session, "platform", name="Marketplace Platform")
    staff = principal_of(make_user(session, passwords, platform, "reviewer"), platform)
    workflow.resolve_dispute(session, staff, statement, Money("0.00", "CNY"), "Nothing owed.")
    assert statement.status == "under_review"


def test_an_adjustment_is_bounded_by_the_lines_it_cites(session, passwords, statement_of):
    exchange = make_org(session, "exchange", name="Review Exchange")
    supplier = make_org(session, "supplier", name="Supplier Co")
    statement = statement_of(supplier, exchange, lines=((1_000_000, 940_000), (50_000, 47_000)),
                             status="disputed")
    reviewer = principal_of(make_user(session, passwords, exchange, "reviewer"), exchange)
    resolve = lambda amount, **kw: workflow.resolve_dispute(  # noqa: E731
        session, reviewer, statement, Money(amount, "CNY"), "Correction.", settings=DUAL, **kw)
    for kwargs, field in (({"lines": []}, "evidence.lines"), ({"lines": [3]}, "evidence.lines"),
                          ({"lines": [1], "reason_code": "gift"}, "reason_code")):
        with pytest.raises(InvalidInput) as refused:
            resolve("10.00", **kwargs)
        assert refused.value.field == field
    # Line 2 grossed 500.00: at most 500.00 may be corrected on it alone.
    with pytest.raises(InvalidInput, match="at most CNY 500.00") as too_much:
        resolve("500.01", lines=[2])
    assert too_much.value.field == "amount"
    with pytest.raises(InvalidInput, match="at most"):
        resolve("1000000.00", lines=[1, 2])
    adjustment = resolve("-120.00", lines=[2], reason_code="duplicate_line",
                         document="Bank statement 2026-01-05")
    assert adjustment.status == "posted" and adjustment.amount_minor == -12_000
    assert adjustment.evidence == {"lines": [2], "document": "Bank statement 2026-01-05"}


def test_a_large_adjustment_waits_for_a_checker_who_did_not_make_it(
        session, passwords, statement_of):
    exchange = make_org(session, "exchange", name="Review Exchange")
    supplier = make_org(session, "supplier", name="Supplier Co")
    statement = statement_of(supplier, exchange, status="disputed")
    maker = principal_of(make_user(session, passwords, exchange, "reviewer"), exchange)
    same_team = principal_of(make_user(session, passwords, exchange, "reviewer"), exchange)
    finance = principal_of(make_user(session, passwords, exchange, "finance"), exchange)
    before = _postings(session, "adjustment")
    adjustment = workflow.resolve_dispute(session, maker, statement, Money("5000.00", "CNY"),
                                            "Share applied at 50% not 60%.",
                                            reason_code="share_error", lines=[1], settings=DUAL)
    assert adjustment.status == "pending_approval" and adjustment.ledger_transaction_id is None
    assert _postings(session, "adjustment") == before
    for who, match in ((maker, "cannot also approve"), (same_team, "another team")):
        with pytest.raises(Forbidden, match=match):
            workflow.decide_adjustment(session, who, adjustment, approve=True)
    supplier_owner = principal_of(make_user(session, passwords, supplier, "owner"), supplier)
    with pytest.raises(Forbidden):
        workflow.decide_adjustment(session, supplier_owner, adjustment, approve=True)
    workflow.decide_adjustment(session, finance, adjustment, approve=True, note="Checked.")
    assert adjustment.status == "posted" and adjustment.decided_by_id == finance.user_id
    entries = session.scalars(select(LedgerEntry).where(
        LedgerEntry.transaction_id == adjustment.ledger_transaction_id)).all()
    assert sorted(e.amount_minor for e in entries) == [-500_000, 500_000]


def test_whoever_submitted_a_statement_for_approval_cannot_approve_it(
        session, passwords, statement_of):
    exchange = make_org(session, "exchange", name="Review Exchange")
    supplier = make_org(session, "supplier", name="Supplier Co")
    statement = statement_of(supplier, exchange)
    submitter = principal_of(make_user(session, passwords, exchange, "reviewer"), exchange)
    workflow.start_review(session, submitter, statement)
    with pytest.raises(Forbidden, match="submitted") as refused:
        workflow.approve(session, submitter, statement)
    assert refused.value.code == "checker_required"


def test_whoever_approved_a_statement_does_not_record_its_payout(session, passwords,
                                                                  statement_of):
    platform = make_org(session, "platform", name="Marketplace Platform")
    supplier = make_org(session, "supplier", name="Supplier Co")
    statement = statement_of(supplier, platform, status="approved")
    approver = principal_of(make_user(session, passwords, platform, "finance"), platform)
    statement.approved_by_id = approver.user_id
    with pytest.raises(Forbidden, match="approved"):
        workflow.pay(session, approver, statement, bank_reference="PAYOUT-1")
    assert statement.status == "approved"


def test_the_finance_page_shows_receipts_awaiting_a_checker(session, sign_in_as,
                                                           bank_transfer_over_threshold):
    platform, invoice, maker = bank_transfer_over_threshold
    [receipt] = _receipt(maker, invoice, "ICBC-PAGE-1").get_json()["receipts"]
    checker = sign_in_as(platform, "owner")
    page = checker.get("/finance").get_data(as_text=True)
    assert "Receipts awaiting a second person" in page and "ICBC-PAGE-1" in page
    token = csrf_token(checker, "/finance")
    refused = maker.post(f"/finance/receipts/{receipt['id']}/confirm",
                         data={"csrf_token": csrf_token(maker, "/finance")})
    assert refused.status_code == 403
    done = checker.post(f"/finance/receipts/{receipt['id']}/confirm",
                        data={"csrf_token": token, "note": "Seen on the bank statement."})
    assert done.status_code == 302, done.get_data(as_text=True)
    session.expire_all()
    assert session.get(BankReceipt, receipt["id"]).status == "confirmed"
    assert session.get(Invoice, invoice["id"]).status == "paid"
