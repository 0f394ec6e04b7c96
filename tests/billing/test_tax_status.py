"""Tax from the record, not the request: a buyer's tax status is set by platform finance (API and
CLI, audited) and checkout prices by it; a tax status sent by the client is refused."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from billing import orders
from billing.models import Order
from market.core.audit import AuditEntry
from pricing.money import Money, UnitPrice
from pricing.rating import LineItem
from tests.billing.shop import listed_dataset
from tests.factories import make_org, make_user
from tests.fixtures import csrf_token


@pytest.fixture()
def shop(session, passwords):
    return listed_dataset(session, passwords, package_price="9800.00")


def _checkout(client, offer_id, **extra):
    return client.post("/api/v1/orders", headers=client.csrf, json={
        "items": [{"offer_id": offer_id}], "payment_method": "bank_transfer", **extra})


def _set_status(client, org_id, status, evidence="Exemption certificate 免税证明 2026-118"):
    return client.put(f"/api/v1/organizations/{org_id}/tax-status", headers=client.csrf,
                      json={"status": status, "evidence": evidence})


def _orders(session):
    return session.scalar(select(func.count()).select_from(Order))


@pytest.mark.parametrize("path, body", [
    ("/api/v1/orders", {"items": [{"offer_id": "{offer}"}], "payment_method": "bank_transfer"}),
    ("/api/v1/token-packs", {"millions": 1, "payment_method": "bank_transfer"}),
    ("/api/v1/subscriptions", {"offer_id": "{offer}", "payment_method": "bank_transfer"}),
])
@pytest.mark.parametrize("claimed", ["exempt", "standard", "small_scale", None])
def test_a_client_supplied_tax_status_is_refused(buyer_client, shop, session, path, body,
                                                 claimed):
    payload = {key: ([{"offer_id": shop["package"].id}] if key == "items" else
                     shop["package"].id if value == "{offer}" else value)
               for key, value in body.items()}
    response = buyer_client.post(path, headers=buyer_client.csrf,
                                 json=payload | {"buyer_tax_status": claimed})
    assert response.status_code == 422, response.get_json()
    assert response.mimetype == "application/problem+json"
    errors = response.get_json()["errors"]
    assert list(errors) == ["buyer_tax_status"]
    assert "verified profile" in errors["buyer_tax_status"][0]
    assert _orders(session) == 0  # nothing half-written


def test_finance_sets_the_exempt_profile_and_checkout_charges_no_tax(
        buyer_client, finance_client, shop, session):
    standard = _checkout(buyer_client, shop["package"].id).get_json()
    assert standard["tax"]["amount"] == "588.00"

    response = _set_status(finance_client, buyer_client.org.id, "exempt")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["tax_status"] == "exempt"
    entry = session.scalars(select(AuditEntry).where(
        AuditEntry.action == "organization.tax_status_set")).one()
    assert entry.organization_id == buyer_client.org.id
    assert entry.actor_user_id == finance_client.user.id
    assert entry.data["status"] == "exempt" and entry.data["status_before"] == "general"
    assert entry.data["evidence"].startswith("Exemption certificate")

    exempt = _checkout(buyer_client, shop["package"].id)
    assert exempt.status_code == 201, exempt.get_json()
    order = exempt.get_json()
    assert order["tax"] == {"amount": "0.00", "currency": "CNY"}
    assert order["total"] == order["subtotal"] == {"amount": "9800.00", "currency": "CNY"}
    # The buyer sees its verified profile, and cannot change it.
    mine = buyer_client.get(f"/api/v1/organizations/{buyer_client.org.id}").get_json()
    assert mine["tax_status"] == "exempt" and mine["tax_status_verified_at"]
    assert _set_status(buyer_client, buyer_client.org.id, "general").status_code == 403


def test_a_small_scale_taxpayer_is_charged_vat(buyer_client, finance_client, shop):
    assert _set_status(finance_client, buyer_client.org.id, "small_scale").status_code == 200
    order = _checkout(buyer_client, shop["package"].id).get_json()
    assert order["tax"]["amount"] == "588.00"


@pytest.mark.parametrize("status, evidence, field", [
    ("vip", "certificate", "status"),
    ("exempt", "", "evidence"),
])
def test_a_bad_tax_status_is_named(finance_client, buyer_client, session, status, evidence,
                                   field):
    response = _set_status(finance_client, buyer_client.org.id, status, evidence)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]
    session.refresh(buyer_client.org)
    assert buyer_client.org.tax_status == "general"


def test_an_exchange_finance_person_cannot_set_a_tax_status(session, passwords, sign_in_as,
                                                           buyer_client):
    exchange = make_org(session, "exchange")
    client = sign_in_as(exchange, "finance")
    response = client.put(f"/api/v1/organizations/{buyer_client.org.id}/tax-status",
                          headers={"X-CSRFToken": csrf_token(client)},
                          json={"status": "exempt", "evidence": "x"})
    assert response.status_code == 403


def test_every_kind_of_order_line_follows_the_profile(session, passwords, runner):
    """Usage, deal and subscription lines are priced by ``priced_line``: by default it reads the
    organization's status too, so an exempt buyer's postpaid usage carries no VAT."""
    platform = make_org(session, "platform")
    finance = make_user(session, passwords, platform, "finance")
    buyer = make_org(session, "buyer")
    session.commit()
    result = runner.invoke(args=["finance", "tax-status", buyer.slug, "exempt",
                                 "--evidence", "Certificate 88", "--by", finance.email])
    assert result.exit_code == 0, result.output
    session.refresh(buyer)
    assert buyer.tax_status == "exempt" and buyer.tax_status_verified_by_id == finance.id
    order = orders.new_order(session, organization_id=buyer.id, kind="usage", currency="CNY",
                             payment_method="bank_transfer")
    line = orders.priced_line(session, order, kind="usage", description="usage",
                              items=[LineItem("usage", "usage", 1,
                                              UnitPrice.of(Money("100.00", "CNY")))],
                              tax_rate="0.06", chain=False)
    assert line.tax_minor == 0 and order.total_minor == 10_000


def test_the_cli_refuses_someone_not_of_platform_finance(session, passwords, runner):
    buyer = make_org(session, "buyer")
    owner = make_user(session, passwords, buyer, "owner")
    session.commit()
    result = runner.invoke(args=["finance", "tax-status", str(buyer.id), "exempt",
                                 "--evidence", "self-declared", "--by", owner.email])
    assert result.exit_code != 0 and "not a finance person" in result.output
    session.refresh(buyer)
    assert buyer.tax_status == "general"
