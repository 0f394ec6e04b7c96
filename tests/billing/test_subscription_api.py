"""Subscriptions through the API: subscribe, pay the first period by bank transfer, see the
tokens and access it grants, then cancel at the period's end and resume."""

from __future__ import annotations

import pytest

from tests.billing.shop import buyer, listed_dataset, platform_finance
from tests.fixtures import csrf_token

PLAN = {"kind": "subscription", "code": "monthly", "period": "month",
        "price": {"amount": "2000.00", "currency": "CNY"}, "included_tokens": 5_000_000,
        "overage_per_million": {"amount": "3.00", "currency": "CNY"}}


@pytest.fixture()
def clients(session, passwords, sign_in_as):
    shop = listed_dataset(session, passwords, extra_offers=[PLAN])
    org, _, _ = buyer(session, passwords)
    platform, _, _ = platform_finance(session, passwords)
    session.commit()
    buying, finance = sign_in_as(org, "owner"), sign_in_as(platform, "finance")
    for client in (buying, finance):
        client.csrf = {"X-CSRFToken": csrf_token(client)}
    return shop, buying, finance


def test_subscribe_pay_cancel_resume(clients):
    shop, buying, finance = clients
    plan_id = shop["offers"][0].id
    started = buying.post("/api/v1/subscriptions", headers=buying.csrf, json={
        "offer_id": plan_id, "payment_method": "bank_transfer"})
    assert started.status_code == 201, started.get_json()
    sub, order = started.get_json()["subscription"], started.get_json()["order"]
    assert sub["status"] == "incomplete" and order["total"]["amount"] == "2120.00"
    # A second live subscription to the same dataset is refused.
    assert buying.post("/api/v1/subscriptions", headers=buying.csrf, json={
        "offer_id": plan_id, "payment_method": "bank_transfer"}).status_code == 409

    invoice = buying.post(f"/api/v1/orders/{order['id']}/pay", headers=buying.csrf,
                          json={"method": "bank_transfer"}).get_json()["invoice"]
    receipt = finance.post(f"/api/v1/invoices/{invoice['id']}/receipts", headers=finance.csrf,
                           json={"amount": {"amount": "2120.00", "currency": "CNY"},
                                 "received_on": "2026-11-20", "bank_reference": "SUB-1"})
    assert receipt.status_code == 200, receipt.get_json()
    sub = buying.get(f"/api/v1/subscriptions/{sub['id']}").get_json()
    assert sub["status"] == "active" and sub["tokens_remaining"] == 5_000_000
    holdings = buying.get("/api/v1/holdings").get_json()
    assert sorted(e["kind"] for e in holdings["entitlements"]
                  if e["subscription_id"] == sub["id"]) == ["api", "download"]

    cancelled = buying.post(f"/api/v1/subscriptions/{sub['id']}/cancel", headers=buying.csrf)
    assert cancelled.get_json()["cancel_at_period_end"] is True
    assert cancelled.get_json()["status"] == "active"  # access until the period ends
    resumed = buying.post(f"/api/v1/subscriptions/{sub['id']}/resume", headers=buying.csrf)
    assert resumed.get_json()["cancel_at_period_end"] is False


def test_subscribing_to_a_package_offer_is_422(clients):
    shop, buying, _ = clients
    response = buying.post("/api/v1/subscriptions", headers=buying.csrf, json={
        "offer_id": shop["package"].id, "payment_method": "bank_transfer"})
    assert response.status_code == 422 and "offer_id" in response.get_json()["errors"]


def test_a_budgeted_organization_charges_its_subscription_to_a_line(clients, session):
    import datetime as dt

    from billing.budgets import lines as budgets
    from billing.models import BudgetLine
    from market.accounts import services as accounts
    from pricing.money import Money

    shop, buying, _ = clients
    owner = accounts.principal_for_user(buying.user, buying.user.memberships[0].organization_id)
    budget = budgets.create_budget(session, owner, fiscal_year=dt.date.today().year,
                                   currency="CNY", name="Data purchases",
                                   require_purchase_order=True)
    line = budgets.add_line(session, owner, budget, code="DATA-01", name="Datasets",
                            category="data_purchase", approved=Money("10000.00", "CNY"))
    session.commit()
    plan_id = shop["offers"][0].id
    missing = buying.post("/api/v1/subscriptions", headers=buying.csrf, json={
        "offer_id": plan_id, "payment_method": "bank_transfer"})
    assert missing.status_code == 422 and "budget_line_id" in missing.get_json()["errors"]
    started = buying.post("/api/v1/subscriptions", headers=buying.csrf, json={
        "offer_id": plan_id, "payment_method": "bank_transfer", "budget_line_id": line.id,
        "purchase_order_number": "PO-2026-17"})
    assert started.status_code == 201, started.get_json()
    session.refresh(line)
    assert line.committed_minor == 212_000  # 2,000.00 + 6% VAT, committed on the line
    assert session.get(BudgetLine, line.id).remaining_minor == 1_000_000 - 212_000
