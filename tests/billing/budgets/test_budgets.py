"""Budgets: lines and amendments (approved is always the original plus its amendments), and
what purchases do to a line — committed at checkout, spent when paid, released when cancelled,
reduced by refunds — with block and warn enforcement, threshold alerts that fire once, the
metered API's guard, the daily usage posting, and the API with its 404 for other organizations.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import pytest
from sqlalchemy import func, select

from billing import invoices, orders, subscriptions
from billing.budgets import guards, lines as budgets
from billing.errors import PaymentRequired
from billing.payments import bank_transfer, refunds
from billing.jobs import JOBS_BY_NAME
from billing.models import (
    BudgetAlert, BudgetAmendment, BudgetLine, BudgetRecord, CreditLine, Order,
)
from market.core.audit import AuditEntry
from market.core.db import business_calendar, utcnow
from market.core.errors import Conflict, InvalidInput, NotFound
from pricing.money import Money
from tests.billing import shop as shopping
from tests.billing.budgets.amendments import approved_from_amendments
from tests.factories import make_key, make_org, make_user
from tests.fixtures import csrf_token

YEAR = utcnow().year
TOTAL = 1_038_800  # one package: 9,800.00 + 6% VAT
METERED = {"kind": "metered", "code": "api", "mode": "graduated", "tiers": [
    {"from_tokens": 0, "up_to": None,
     "price_per_million": {"amount": "300000", "currency": "CNY"}}]}


def cny(amount: str) -> Money:
    return Money(amount, "CNY")


@pytest.fixture()
def shop(session, passwords):
    return shopping.listed_dataset(session, passwords, extra_offers=[METERED])


@pytest.fixture()
def buying(session, passwords):
    org, user, principal = shopping.buyer(session, passwords)
    return {"org": org, "user": user, "principal": principal}


@pytest.fixture()
def finance(session, passwords):
    _, _, principal = shopping.platform_finance(session, passwords)
    return principal


def _budget(session, principal, *, approved="50000.00", enforcement="block", **options):
    budget = budgets.create_budget(session, principal, fiscal_year=YEAR, currency="CNY",
                                   name="Data purchases", enforcement=enforcement, **options)
    line = budgets.add_line(session, principal, budget, code=f"{YEAR}-DATA-01",
                            name="Industry datasets", category="data_purchase",
                            approved=cny(approved))
    return budget, line


def _buy(session, principal, shop, line, quantity=1, **extra) -> Order:
    return orders.place_mall_order(session, principal,
                                   [orders.CartItem(shop["package"].id, quantity)],
                                   payment_method="bank_transfer",
                                   budget_line_id=line.id if line is not None else None, **extra)


def _pay(session, order, finance, settings) -> None:
    invoice = invoices.issue_invoice(session, order, settings)
    bank_transfer.record_bank_receipt(session, finance, invoice, amount=order.total,
                                      received_on=dt.date.today(),
                                      bank_reference=f"IN-{order.number}", settings=settings)


def _kinds(session, line) -> dict[str, int]:
    """The amounts of the line's records, per kind."""
    totals: dict[str, int] = defaultdict(int)
    for record in session.scalars(select(BudgetRecord).where(BudgetRecord.line_id == line.id)):
        totals[record.kind] += record.amount_minor
    return dict(totals)


def _fresh(session, line) -> BudgetLine:
    session.refresh(line)
    return line


# Budgets, lines and amendments -------------------------------------------------------------------

def test_approved_is_always_the_original_plus_the_amendments(session, buying):
    principal = buying["principal"]
    budget, line = _budget(session, principal, approved="100000.00")
    other = budgets.add_line(session, principal, budget, code=f"{YEAR}-COMP-01",
                             name="Compute", category="compute", approved=cny("0"))
    budgets.amend(session, principal, line, kind="increase", amount=cny("5000.00"),
                  reason="Second-half data programme")
    budgets.amend(session, principal, line, kind="decrease", amount=cny("2000.50"),
                  reason="Savings")
    made = budgets.amend(session, principal, line, kind="transfer", amount=cny("1000.00"),
                         reason="Compute for fine-tuning", to_line=other)

    assert [(a.line_id, a.kind, a.counterpart_line_id) for a in made] == [
        (line.id, "transfer_out", other.id), (other.id, "transfer_in", line.id)]
    for changed, expected in ((line, 10_199_950), (other, 100_000)):
        _fresh(session, changed)
        assert changed.approved_minor == expected
        assert changed.approved_minor == approved_from_amendments(session, changed)
    assert session.scalar(select(func.count()).select_from(BudgetAmendment)) == 4
    actions = session.scalars(select(AuditEntry.action).where(
        AuditEntry.action.like("budget.%"))).all()
    assert actions.count("budget.amended") == 4 and "budget.created" in actions


def test_a_budget_in_a_currency_the_organization_does_not_use_is_refused(session, buying):
    with pytest.raises(InvalidInput) as refused:
        budgets.create_budget(session, buying["principal"], fiscal_year=YEAR, currency="USD",
                              name="Dollars")
    assert refused.value.field == "currency" and "USD" in refused.value.detail


def test_one_budget_per_year_and_currency_and_one_api_line(session, buying):
    budget, _ = _budget(session, buying["principal"])
    with pytest.raises(Conflict) as twice:
        budgets.create_budget(session, buying["principal"], fiscal_year=YEAR, currency="cny",
                              name="Again")
    assert twice.value.field == "fiscal_year"
    budgets.add_line(session, buying["principal"], budget, code="API", name="API",
                     category="model_services", approved=cny("10.00"), default_for_api=True)
    with pytest.raises(Conflict) as second:
        budgets.add_line(session, buying["principal"], budget, code="API-2", name="API 2",
                         category="model_services", approved=cny("10.00"),
                         default_for_api=True)
    assert second.value.field == "default_for_api"


def test_a_negative_approved_amount_is_refused(session, buying):
    budget, _ = _budget(session, buying["principal"])
    with pytest.raises(InvalidInput) as refused:
        budgets.add_line(session, buying["principal"], budget, code="NEG", name="Negative",
                         category="other", approved=cny("-1.00"))
    assert refused.value.field == "approved"


def test_an_amendment_below_committed_and_spent_is_refused(session, buying, shop):
    principal = buying["principal"]
    _, line = _budget(session, principal, approved="20000.00")
    _buy(session, principal, shop, line)  # 10,388.00 committed; 9,612.00 left
    with pytest.raises(InvalidInput) as refused:
        budgets.amend(session, principal, line, kind="decrease", amount=cny("10000.00"),
                      reason="Cut")
    assert refused.value.field == "amount"
    assert "short by CNY 388.00" in refused.value.detail
    with pytest.raises(InvalidInput) as no_reason:
        budgets.amend(session, principal, line, kind="increase", amount=cny("1.00"),
                      reason="  ")
    assert no_reason.value.field == "reason"
    assert _fresh(session, line).approved_minor == 2_000_000
    budgets.amend(session, principal, line, kind="decrease", amount=cny("9612.00"),
                  reason="Exactly what is left")
    assert _fresh(session, line).remaining_minor == 0


# Checkout, payment, cancellation, refunds -----------------------------------------------------

def test_checkout_commits_payment_spends_refund_reduces(session, buying, shop, finance,
                                                       settings):
    principal = buying["principal"]
    _, line = _budget(session, principal)
    order = _buy(session, principal, shop, line, purchase_order_number="PO-2026-001")
    assert order.budget_line_id == line.id and order.purchase_order_number == "PO-2026-001"
    assert (_fresh(session, line).committed_minor, line.spent_minor) == (TOTAL, 0)
    assert _kinds(session, line) == {"commitment": TOTAL}
    record = session.scalar(select(BudgetRecord).where(BudgetRecord.kind == "commitment"))
    assert (record.dataset_id, record.supplier_id, record.sector, record.month) == (
        shop["dataset"].id, shop["supplier"].id, "smart_energy", f"{utcnow():%Y-%m}")

    _pay(session, order, finance, settings)
    assert (_fresh(session, line).committed_minor, line.spent_minor) == (0, TOTAL)
    assert _kinds(session, line) == {"commitment": TOTAL, "release": TOTAL,
                                     "expenditure": TOTAL}

    refund = refunds.reserve_refund(session, finance, order.payments[0].id, cny("1000.00"),
                                    "one file was corrupt")
    refunds.complete_refund(session, refund.id, gateway_ref="bank:OUT-1")
    refunds.complete_refund(session, refund.id)  # a repeat changes nothing
    assert _fresh(session, line).spent_minor == TOTAL - 100_000
    assert _kinds(session, line)["refund"] == 100_000


def test_a_cancelled_order_releases_its_commitment(session, buying, shop):
    principal = buying["principal"]
    _, line = _budget(session, principal)
    order = _buy(session, principal, shop, line, quantity=2)
    assert _fresh(session, line).committed_minor == 2 * TOTAL
    orders.cancel_order(session, principal, order)
    assert _fresh(session, line).committed_minor == 0
    assert _kinds(session, line) == {"commitment": 2 * TOTAL, "release": 2 * TOTAL}


def test_block_mode_refuses_naming_the_line_and_the_shortfall(session, buying, shop):
    principal = buying["principal"]
    _, line = _budget(session, principal, approved="1200.00")
    with pytest.raises(Conflict) as refused:
        _buy(session, principal, shop, line)
    assert refused.value.field == "budget_line_id"
    assert refused.value.detail == (
        f"Line {YEAR}-DATA-01 has CNY 1,200.00 left; this order needs CNY 10,388.00: "
        "short by CNY 9,188.00.")
    assert _fresh(session, line).committed_minor == 0


def test_the_line_is_required_once_there_is_a_budget_and_the_po_number_when_asked(
        session, buying, shop):
    principal = buying["principal"]
    assert _buy(session, principal, shop, None).budget_line_id is None  # no budget: optional
    _, line = _budget(session, principal, require_purchase_order=True)
    with pytest.raises(InvalidInput) as no_line:
        _buy(session, principal, shop, None)
    assert no_line.value.field == "budget_line_id"
    with pytest.raises(InvalidInput) as no_po:
        _buy(session, principal, shop, line)
    assert no_po.value.field == "purchase_order_number"
    assert _fresh(session, line).committed_minor == 0


def test_another_organizations_line_is_not_found(session, passwords, buying, shop):
    _, line = _budget(session, buying["principal"])
    other = make_org(session, "buyer", name="Another Bureau")
    stranger = shopping.principal_of(make_user(session, passwords, other, "owner"), other)
    with pytest.raises(NotFound) as missing:
        _buy(session, stranger, shop, line)
    assert missing.value.field == "budget_line_id"
    with pytest.raises(NotFound):
        budgets.amend(session, stranger, line, kind="increase", amount=cny("1.00"), reason="x")
    assert _fresh(session, line).committed_minor == 0


def test_warn_mode_allows_with_a_warning(app, session, passwords, shop, sign_in_as):
    org = make_org(session, "buyer", name="Port Authority")
    owner = shopping.principal_of(make_user(session, passwords, org, "owner"), org)
    _, line = _budget(session, owner, approved="1200.00", enforcement="warn")
    session.commit()
    client = sign_in_as(org, "finance")
    response = client.post("/api/v1/orders", headers={"X-CSRFToken": csrf_token(client)}, json={
        "items": [{"offer_id": shop["package"].id}], "payment_method": "bank_transfer",
        "budget_line_id": line.id, "purchase_order_number": "PO-7"})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["budget_line_id"] == line.id and body["purchase_order_number"] == "PO-7"
    assert body["warnings"] == [f"Line {YEAR}-DATA-01 has CNY 1,200.00 left; this order needs "
                                "CNY 10,388.00: short by CNY 9,188.00."]
    assert _fresh(session, line).committed_minor == TOTAL
    # Reading the order later carries no warnings.
    assert "warnings" not in client.get(f"/api/v1/orders/{body['id']}").get_json()


def test_thresholds_fire_once_ever(session, buying, shop):
    principal = buying["principal"]
    _, line = _budget(session, principal, approved="10388.00", enforcement="warn",
                      thresholds=(50, 80, 100))
    _buy(session, principal, shop, line)  # 0% -> 100%: crosses all three at once
    alerts = session.scalars(select(BudgetAlert).order_by(BudgetAlert.threshold)).all()
    assert [(a.threshold, a.used_minor, a.approved_minor) for a in alerts] == [
        (50, TOTAL, TOTAL), (80, TOTAL, TOTAL), (100, TOTAL, TOTAL)]
    assert alerts[0].detail["line_code"] == f"{YEAR}-DATA-01"
    assert alerts[0].detail["percent"] == 100

    _buy(session, principal, shop, line)  # 200%: nothing fires again
    assert session.scalar(select(func.count()).select_from(BudgetAlert)) == 3


# Subscriptions and renewals ---------------------------------------------------------------------

def test_a_subscription_commits_at_start_and_its_renewal_spends_on_its_line(
        session, passwords, buying, finance, settings, listed):
    principal = buying["principal"]
    _, line = _budget(session, principal)
    sub = subscriptions.subscribe(session, principal, listed["plans"]["basic"].id,
                                  payment_method="bank_transfer", settings=settings,
                                  budget_line_id=line.id)
    first = subscriptions.first_order(session, sub)
    assert first.budget_line_id == line.id
    assert _fresh(session, line).committed_minor == first.total_minor
    _pay(session, first, finance, settings)
    assert (_fresh(session, line).committed_minor, line.spent_minor) == (0, first.total_minor)
    outcome, renewal = subscriptions.renew_subscription(
        session, sub.id, day=sub.current_period_end, settings=settings)
    assert outcome == "renewed"
    _pay(session, renewal, finance, settings)
    assert renewal.budget_line_id == line.id
    assert _fresh(session, line).spent_minor == first.total_minor + renewal.total_minor


# Metered usage ----------------------------------------------------------------------------------

def _api_budget(session, principal, approved: str):
    budget = budgets.create_budget(session, principal, fiscal_year=YEAR, currency="CNY",
                                   name="Model services")
    return budgets.add_line(session, principal, budget, code=f"{YEAR}-API-01",
                            name="LLM data API", category="model_services",
                            approved=cny(approved), default_for_api=True)


def _call(client, shop, headers):
    return client.get(f"/api/v1/datasets/{shop['dataset'].id}/versions/1/records",
                      headers=headers, query_string={"limit": 3})


def test_the_metered_guard_answers_402_naming_the_line(client, session, buying, shop):
    org = buying["org"]
    line = _api_budget(session, buying["principal"], "0.01")
    session.add(CreditLine(organization_id=org.id, currency="CNY", limit_minor=10_000_000))
    _, secret = make_key(session, org, scopes=("data:read",))
    session.commit()
    refused = _call(client, shop, {"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 402, refused.get_json()
    assert f"{YEAR}-API-01" in refused.get_json()["detail"]
    assert _fresh(session, line).committed_minor == 0
    with pytest.raises(PaymentRequired):
        guards.commit_usage(session, org.id, shop["dataset"].id, cny("0.02"))


def test_postpaid_calls_are_committed_then_posted_daily_as_spent(client, session, buying, shop):
    org = buying["org"]
    line = _api_budget(session, buying["principal"], "100000.00")
    session.add(CreditLine(organization_id=org.id, currency="CNY", limit_minor=10_000_000))
    _, secret = make_key(session, org, scopes=("data:read",))
    session.commit()
    headers = {"Authorization": f"Bearer {secret}"}
    amounts = []
    for _ in range(2):
        response = _call(client, shop, headers)
        assert response.status_code == 200, response.get_json()
        amounts.append(Money.from_dict(response.get_json()["usage"]["amount"]).minor)
    used = sum(amounts)
    assert used > 0 and _fresh(session, line).committed_minor == used

    today = business_calendar(session).day_of(utcnow())
    assert budgets.post_usage_day(session, today) == {"posted": 1}
    assert budgets.post_usage_day(session, today) == {"already": 1}
    assert (_fresh(session, line).committed_minor, line.spent_minor) == (0, used)
    expenditure = session.scalar(select(BudgetRecord).where(BudgetRecord.kind == "expenditure"))
    assert expenditure.reference == f"usage:{org.id}:{shop['dataset'].id}:" \
                                    f"{today.isoformat()}:expenditure"
    assert expenditure.supplier_id == shop["supplier"].id
    assert "post-usage-to-budgets" in JOBS_BY_NAME


# The API ----------------------------------------------------------------------------------------

def test_the_budgets_api(app, session, passwords, shop, sign_in_as):
    org = make_org(session, "buyer", name="Water Bureau")
    session.commit()
    client = sign_in_as(org, "finance")
    headers = {"X-CSRFToken": csrf_token(client)}
    created = client.post("/api/v1/budgets", headers=headers, json={
        "fiscal_year": YEAR, "currency": "CNY", "name": "Data 2026",
        "require_purchase_order": True})
    assert created.status_code == 201, created.get_json()
    budget_id = created.get_json()["id"]
    assert client.post("/api/v1/budgets", headers=headers, json={
        "fiscal_year": YEAR, "currency": "EUR", "name": "Euros"}).get_json()["errors"] == {
        "currency": ["Your organization does not buy in EUR; a budget can be in CNY."]}
    line = client.post(f"/api/v1/budgets/{budget_id}/lines", headers=headers, json={
        "code": "D-1", "name": "Datasets", "category": "data_purchase",
        "approved": {"amount": "20000.00", "currency": "CNY"}})
    assert line.status_code == 201, line.get_json()
    line_id = line.get_json()["id"]
    negative = client.post(f"/api/v1/budgets/{budget_id}/lines", headers=headers, json={
        "code": "D-2", "name": "Datasets", "category": "data_purchase",
        "approved": {"amount": "-1.00", "currency": "CNY"}})
    assert negative.status_code == 422 and "approved" in negative.get_json()["errors"]

    no_po = client.post("/api/v1/orders", headers=headers, json={
        "items": [{"offer_id": shop["package"].id}], "payment_method": "bank_transfer",
        "budget_line_id": line_id})
    assert no_po.status_code == 422 and "purchase_order_number" in no_po.get_json()["errors"]
    ordered = client.post("/api/v1/orders", headers=headers, json={
        "items": [{"offer_id": shop["package"].id}], "payment_method": "bank_transfer",
        "budget_line_id": line_id, "purchase_order_number": "PO-1"})
    assert ordered.status_code == 201, ordered.get_json()

    amended = client.post(f"/api/v1/budget-lines/{line_id}/amendments", headers=headers, json={
        "kind": "decrease", "amount": {"amount": "10000.00", "currency": "CNY"},
        "reason": "cut"})
    assert amended.status_code == 422
    assert "short by CNY 388.00" in amended.get_json()["errors"]["amount"][0]
    amended = client.post(f"/api/v1/budget-lines/{line_id}/amendments", headers=headers, json={
        "kind": "increase", "amount": {"amount": "500.00", "currency": "CNY"},
        "reason": "more"})
    assert amended.status_code == 201, amended.get_json()
    assert amended.get_json()["line"]["approved"]["amount"] == "20500.00"

    budget = client.get(f"/api/v1/budgets/{budget_id}").get_json()
    assert budget["lines"][0]["committed"]["amount"] == "10388.00"
    assert budget["lines"][0]["remaining"]["amount"] == "10112.00"
    assert [b["id"] for b in client.get("/api/v1/budgets").get_json()["items"]] == [budget_id]
    records = client.get(f"/api/v1/budget-lines/{line_id}/records",
                         query_string={"kind": "commitment"}).get_json()["items"]
    assert [(r["kind"], r["amount"]["amount"], r["dataset_id"]) for r in records] == [
        ("commitment", "10388.00", shop["dataset"].id)]

    # Another organization sees none of it.
    other = make_org(session, "buyer", name="Elsewhere")
    session.commit()
    stranger = sign_in_as(other, "owner")
    stranger_headers = {"X-CSRFToken": csrf_token(stranger)}
    assert stranger.get(f"/api/v1/budgets/{budget_id}").status_code == 404
    assert stranger.get(f"/api/v1/budget-lines/{line_id}/records").status_code == 404
    assert stranger.post(f"/api/v1/budget-lines/{line_id}/amendments",
                         headers=stranger_headers, json={
                             "kind": "increase",
                             "amount": {"amount": "1.00", "currency": "CNY"},
                             "reason": "x"}).status_code == 404
    # A member may read budgets but not manage them.
    member = sign_in_as(org, "member")
    assert member.get(f"/api/v1/budgets/{budget_id}").status_code == 200
    assert member.post("/api/v1/budgets", headers={"X-CSRFToken": csrf_token(member)}, json={
        "fiscal_year": YEAR + 1, "currency": "CNY", "name": "x"}).status_code == 403


# The cart's checkout form -----------------------------------------------------------------------

def test_the_cart_charges_a_budget_line_with_a_po_number(app, session, passwords, shop,
                                                         sign_in_as):
    org = make_org(session, "buyer", name="Harbour Bureau")
    owner = shopping.principal_of(make_user(session, passwords, org, "owner"), org)
    _, line = _budget(session, owner, approved="1200.00", require_purchase_order=True)
    session.commit()
    client = sign_in_as(org, "member")

    def post(path, data):
        return client.post(path, data={**data, "csrf_token": csrf_token(client, "/cart")})

    assert post("/cart", {"offer_id": shop["package"].id, "quantity": 1}).status_code == 302
    page = client.get("/cart").get_data(as_text=True)
    assert f"{YEAR}-DATA-01 — Industry datasets (CNY 1,200.00 left)" in page
    missing = post("/cart/checkout", {"payment_method": "bank_transfer",
                                      "budget_line_id": str(line.id)})
    assert missing.status_code == 422
    assert "requires a purchase-order number" in missing.get_data(as_text=True)
    short = post("/cart/checkout", {"payment_method": "bank_transfer",
                                    "budget_line_id": str(line.id),
                                    "purchase_order_number": "PO-9"})
    assert short.status_code == 422
    assert "short by CNY 9,188.00" in short.get_data(as_text=True)

    budgets.amend(session, owner, _fresh(session, line), kind="increase",
                  amount=cny("9188.00"), reason="The harbour survey")
    session.commit()
    placed = post("/cart/checkout", {"payment_method": "bank_transfer",
                                     "budget_line_id": str(line.id),
                                     "purchase_order_number": "PO-9"})
    assert placed.status_code == 302, placed.get_data(as_text=True)
    order = session.scalar(select(Order).where(Order.organization_id == org.id))
    assert (order.budget_line_id, order.purchase_order_number) == (line.id, "PO-9")
    assert _fresh(session, line).remaining_minor == 0
