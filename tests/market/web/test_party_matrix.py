"""The authorization matrix of "party to the item": every money-moving and review endpoint,
called by every role of one organization, once on an item that organization is a party to (as
buyer, seller or participant) and once on an item it is not.

The acting organization holds every marketplace role (platform and exchange included), so only
segregation of duties can stop it: a party with the permission gets 403 ``party_to_item`` and
the item is unchanged; a non-party is never refused for being one. The endpoint list is taken
from the API's own table (every operation under a money or review permission), so a new such
endpoint cannot be missed.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from typing import Callable

import pytest

from billing import invoices, orders
from billing.context import BillingSettings
from billing.models import (
    BankReceipt, CreditLine, CreditLineChange, Payment, Refund, SettlementStatement,
    StatementAdjustment,
)
from billing.models.statements import StatementLine
from billing.settlement.ledger import Line, Purpose, get_account, post
from market.accounts import services as accounts
from market.accounts.models import Organization, OrgRole
from market.web.api import api
from market.catalog import importer, listings
from market.catalog import services as catalog
from market.catalog.models import Listing
from pricing.money import Money, UnitPrice
from pricing.rating import LineItem
from tests.factories import make_key, make_org, make_user
from tests.fixtures import csrf_token

MONEY_AND_REVIEW = {"payments:manage", "statements:manage", "listings:review",
                    "credit_lines:manage", "tax_status:manage"}
# Operations of those permissions that act on no single item (queues, a whole period).
NO_ITEM = {
    ("GET", "/finance/invoices"), ("GET", "/finance/receipts"),
    ("GET", "/finance/payment-anomalies"), ("POST", "/statements/close"),
    ("GET", "/reconciliation"), ("GET", "/reconciliation/export.csv"),
    ("GET", "/reconciliation/export.xlsx"), ("GET", "/review/listings"),
    ("GET", "/credit-lines"), ("GET", "/credit-line-changes"),
}
ROLES = ["owner", "member", "finance", "reviewer", "key:all"]
DATASET = {"title_zh": "数据", "title_en": "Data", "sector": "healthcare", "modality": "text",
           "ai_stage": "pretraining", "licence": "research_only",
           "personal_information": "none",
           "rights": {"holding": "S", "usage": "S", "operation": "S"}}
_seq = iter(range(1, 10**6))


@dataclass
class World:
    session: object
    passwords: object
    actor: Organization    # the organization calling, holding every role
    other: Organization    # a buyer and supplier the actor has no stake in
    maker: object          # a platform finance person of a third organization (the maker)

    def side(self, party: bool) -> Organization:
        return self.actor if party else self.other

    # Items -----------------------------------------------------------------------------------
    def dataset(self, owner: Organization):
        principal = accounts.principal_for_user(make_user(self.session, self.passwords, owner),
                                                owner.id)
        dataset = catalog.create_dataset(self.session, principal, DATASET)
        importer.import_version(self.session, principal, dataset, io.BytesIO(b'{"t": "x"}\n'),
                                source_format="jsonl", encoding="o200k_base")
        catalog.set_supply_chain(self.session, principal, dataset, [
            {"organization_id": owner.id, "role": "supplier", "share_bps": 10_000}])
        return dataset, principal

    def listing(self, party: bool, status: str) -> Listing:
        dataset, owner = self.dataset(self.side(party))
        listing = listings.submit(self.session, owner, dataset,
                                  version_id=dataset.versions[0].id,
                                  exchange_id=self.actor.id, review_days=5)
        listing.status = status
        return listing

    def order(self, party: bool, *, paid: bool = False):
        buyer = self.side(party)
        dataset, _ = self.dataset(self.other)
        order = orders.new_order(self.session, organization_id=buyer.id, kind="mall",
                                 currency="CNY", payment_method="bank_transfer")
        orders.priced_line(self.session, order, kind="mall_package", description="Package",
                           items=[LineItem("pack", "Package", 1,
                                           UnitPrice.of(Money("99.00", "CNY")))],
                           tax_rate="0.06", dataset_id=dataset.id,
                           version_id=dataset.versions[0].id, chain=False)
        self.session.flush()
        if paid:
            order.status, order.paid_minor = "paid", order.total_minor
            payment = Payment(order=order, organization_id=buyer.id, method="bank_transfer",
                              status="succeeded", amount_minor=order.total_minor,
                              currency="CNY", idempotency_key=f"p-{next(_seq)}", applied=True,
                              split={"platform": "99.00", "tax": "5.94"})
            self.session.add(payment)
            self.session.flush()
            return order, payment
        return order, invoices.issue_invoice(self.session, order, BillingSettings())

    def statement(self, party: bool, status: str) -> SettlementStatement:
        participant = self.side(party)
        today = dt.date.today()
        statement = SettlementStatement(
            number=f"ST-P-{next(_seq)}", organization_id=participant.id,
            exchange_id=self.actor.id, currency="CNY", period="2026-01",
            period_start=dt.date(2026, 1, 1), period_end=dt.date(2026, 2, 1),
            cutoff=dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc), status="draft",
            opening_minor=0, activity_minor=100, closing_minor=100, totals={},
            content_hash="0" * 64, review_due_on=today)
        self.session.add(statement)
        self.session.flush()
        money = Money.from_minor(100, "CNY")
        transaction = post(self.session, "other", [
            Line.credit(get_account(self.session, Purpose.PARTICIPANT_PAYABLE, "CNY",
                                    participant.id), money),
            Line.debit(get_account(self.session, Purpose.PLATFORM_REVENUE, "CNY"), money)],
            idempotency_key=f"party:{statement.id}", reference=("statement", statement.id))
        self.session.add(StatementLine(statement_id=statement.id, position=1, kind="sale",
                                       occurred_on=dt.date(2026, 1, 5),
                                       ledger_transaction_id=transaction.id,
                                       description="Sale", gross_minor=10_000,
                                       amount_minor=100))
        self.session.flush()
        statement.status = status
        return statement


@dataclass(frozen=True)
class Item:
    """Builds the item for one endpoint (party or not): its path ids, the body, and a probe
    reading the item's state, which a refused call must leave as it was."""

    build: Callable[[World, bool], tuple[dict, dict | None, Callable[[], object]]]


def _receipt_body():
    return {"amount": {"amount": "1.00", "currency": "CNY"}, "received_on": "2026-01-02",
            "bank_reference": f"PARTY-{next(_seq)}"}


def _invoice(world, party):
    _, invoice = world.order(party)
    return {"invoice_id": invoice.id}, _receipt_body(), lambda: invoice.amount_received_minor


def _pending_receipt(world, party):
    _, invoice = world.order(party)
    receipt = BankReceipt(invoice=invoice, amount_minor=100, currency="CNY",
                          received_on=dt.date.today(), bank_reference=f"PEND-{next(_seq)}",
                          status="pending_approval", recorded_by_id=world.maker.user_id,
                          recorded_by_org_id=world.maker.organization_id,
                          recorded_by_role="finance")
    world.session.add(receipt)
    world.session.flush()
    return {"receipt_id": receipt.id}, {"note": "checked"}, lambda: receipt.status


def _payment(world, party):
    _, payment = world.order(party, paid=True)
    return ({"payment_id": payment.id}, {"bank_reference": f"OUT-{next(_seq)}"},
            lambda: payment.refunded_minor)


def _pending_refund(world, party):
    _, payment = world.order(party, paid=True)
    refund = Refund(payment=payment, order_id=payment.order_id,
                    organization_id=payment.organization_id, amount_minor=100, currency="CNY",
                    status="pending", idempotency_key=f"r-{next(_seq)}")
    world.session.add(refund)
    world.session.flush()
    return {"refund_id": refund.id}, None, lambda: refund.status


def _statement_in(status, body=None):
    def build(world, party):
        statement = world.statement(party, status)
        return {"statement_id": statement.id}, body, lambda: statement.status
    return build


def _adjustment(world, party):
    statement = world.statement(party, "under_review")
    adjustment = StatementAdjustment(
        statement_id=statement.id, organization_id=statement.organization_id, currency="CNY",
        amount_minor=100, reason="Correction", reason_code="other", evidence={"lines": [1]},
        status="pending_approval", created_by_id=world.maker.user_id,
        created_by_org_id=world.maker.organization_id, created_by_role="finance")
    world.session.add(adjustment)
    world.session.flush()
    return {"adjustment_id": adjustment.id}, {"note": "checked"}, lambda: adjustment.status


def _listing_in(status, body=None):
    def build(world, party):
        listing = world.listing(party, status)
        return {"listing_id": listing.id}, body, lambda: listing.status
    return build


def _credit_request(world, party):
    org = world.side(party)
    return ({}, {"organization_id": org.id, "limit": {"amount": "1.00", "currency": "CNY"},
                 "reason": "terms agreed"},
            lambda: world.session.query(CreditLineChange).filter_by(
                organization_id=org.id).count())


def _credit_line(world, party):
    org = world.side(party)
    line = CreditLine(organization_id=org.id, currency="CNY", limit_minor=100_000)
    world.session.add(line)
    world.session.flush()
    return {"credit_line_id": line.id}, {"reason": "closing"}, lambda: line.suspended_at


def _credit_change(body):
    def build(world, party):
        org = world.side(party)
        change = CreditLineChange(
            organization_id=org.id, currency="CNY", kind="open", limit_minor=100_000,
            limit_before_minor=0, payment_method="bank_transfer", reason="asked",
            status="pending", requested_by_id=world.maker.user_id,
            requested_at=dt.datetime.now(dt.timezone.utc))
        world.session.add(change)
        world.session.flush()
        return {"change_id": change.id}, body, lambda: change.status
    return build


def _tax_status(world, party):
    org = world.side(party)
    return ({"organization_id": org.id}, {"status": "exempt", "evidence": "certificate 1"},
            lambda: org.tax_status)


PARTY_MATRIX: dict[tuple[str, str], Item] = {
    ("POST", "/invoices/<int:invoice_id>/receipts"): Item(_invoice),
    ("POST", "/receipts/<int:receipt_id>/confirm"): Item(_pending_receipt),
    ("POST", "/receipts/<int:receipt_id>/reject"): Item(_pending_receipt),
    ("POST", "/payments/<int:payment_id>/refunds"): Item(_payment),
    ("POST", "/refunds/<int:refund_id>/retry"): Item(_pending_refund),
    ("POST", "/statements/<int:statement_id>/issue"): Item(_statement_in("draft")),
    ("POST", "/statements/<int:statement_id>/review"): Item(_statement_in("issued")),
    ("POST", "/statements/<int:statement_id>/approve"): Item(_statement_in("under_review")),
    ("POST", "/statements/<int:statement_id>/resolve"): Item(_statement_in("disputed", {
        "amount": {"amount": "1.00", "currency": "CNY"}, "reason": "x",
        "evidence": {"lines": [1]}})),
    ("POST", "/statements/<int:statement_id>/pay"): Item(_statement_in(
        "approved", {"bank_reference": "PAYOUT-1"})),
    ("POST", "/adjustments/<int:adjustment_id>/confirm"): Item(_adjustment),
    ("POST", "/adjustments/<int:adjustment_id>/reject"): Item(_adjustment),
    ("POST", "/listings/<int:listing_id>/approve"): Item(_listing_in("submitted", {"text": ""})),
    ("POST", "/listings/<int:listing_id>/reject"): Item(_listing_in(
        "submitted", {"reasons": ["other"], "text": "x"})),
    ("POST", "/listings/<int:listing_id>/suspend"): Item(_listing_in("approved", {"text": "x"})),
    ("POST", "/listings/<int:listing_id>/reinstate"): Item(_listing_in("suspended",
                                                                       {"text": ""})),
    ("POST", "/credit-lines"): Item(_credit_request),
    ("POST", "/credit-lines/<int:credit_line_id>/close"): Item(_credit_line),
    ("POST", "/credit-line-changes/<int:change_id>/approve"): Item(_credit_change(None)),
    ("POST", "/credit-line-changes/<int:change_id>/reject"): Item(_credit_change(
        {"reason": "no"})),
    ("PUT", "/organizations/<int:organization_id>/tax-status"): Item(_tax_status),
}
# Ending sales is the supplier's own right too (it may delist its dataset), so being a party
# does not stop it; the listing's exchange may as well.
PARTY_MAY = {("POST", "/listings/<int:listing_id>/delist")}

# Operations whose service asks for a second permission beyond the one the API declares.
ALSO_NEEDS = {("POST", "/statements/<int:statement_id>/pay"): "payments:manage"}

OPERATIONS = {(op.method, op.rule): op for op in api.operations}
GUARDED = {key for key, op in OPERATIONS.items() if op.permission in MONEY_AND_REVIEW}


def test_every_money_and_review_endpoint_is_in_the_party_matrix():
    assert set(PARTY_MATRIX) | NO_ITEM | PARTY_MAY == GUARDED


@pytest.fixture()
def world(session, passwords):
    actor = make_org(session, *[r.value for r in OrgRole], name="Actor Exchange")
    other = make_org(session, "buyer", "supplier", name="Other Co")
    third = make_org(session, "platform", name="Platform Two")
    maker = accounts.principal_for_user(make_user(session, passwords, third, "finance"),
                                        third.id)
    return World(session, passwords, actor, other, maker)


def _call(app, sign_in_as, session, world, role, method, rule, ids, body):
    client = app.test_client()
    if role.startswith("key:"):
        _, secret = make_key(session, world.actor)
        session.commit()
        headers = {"Authorization": f"Bearer {secret}"}
        principal = None
    else:
        client = sign_in_as(world.actor, role)
        headers = {"X-CSRFToken": csrf_token(client)}
        principal = accounts.principal_for_user(client.user, world.actor.id)
    path = "/api/v1" + rule
    for name, value in ids.items():
        path = path.replace(f"<int:{name}>", str(value))
    kwargs = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    elif method in ("POST", "PUT"):
        kwargs["json"] = {}
    return client.open(path, method=method, **kwargs), principal


@pytest.mark.parametrize("party", [True, False], ids=["party", "non-party"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method, rule", sorted(PARTY_MATRIX))
def test_no_organization_acts_on_what_it_is_a_party_to(app, sign_in_as, session, world, party,
                                                      role, method, rule):
    ids, body, probe = PARTY_MATRIX[(method, rule)].build(world, party)
    session.commit()
    before = probe()
    response, principal = _call(app, sign_in_as, session, world, role, method, rule, ids, body)
    status, problem = response.status_code, response.get_json(silent=True) or {}
    assert status < 500, response.get_data(as_text=True)
    needs = {OPERATIONS[(method, rule)].permission, ALSO_NEEDS.get((method, rule))} - {None}
    permitted = principal is not None and all(principal.can(p) for p in needs)
    if not permitted:
        assert status == 403 and problem.get("code") != "party_to_item", problem
    elif party:
        assert status == 403 and problem.get("code") == "party_to_item", problem
    else:
        assert problem.get("code") != "party_to_item", problem
    if status >= 400:
        session.expire_all()
        assert probe() == before
