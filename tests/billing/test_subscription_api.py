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
