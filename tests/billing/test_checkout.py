"""The mall through the API on the embedded default (no card processor configured): cart →
order → bank-transfer invoice → receipts recorded by finance → split, entitlements, download,
certificate → refunds held to what remains."""

from __future__ import annotations

import hashlib

import pytest

from billing.settlement import ledger
from billing.settlement.ledger import LedgerAccount, Purpose
from billing.models import Entitlement, Order
from market.core.audit import AuditEntry
from sqlalchemy import func, select
from tests.billing.shop import listed_dataset


@pytest.fixture()
def shop(session, passwords):
    return listed_dataset(session, passwords, package_price="9800.00", package_tokens=2_000_000,
                          licence_months=12)



def _checkout(client, offer_id, quantity=1, **extra):
    return client.post("/api/v1/orders", headers=client.csrf, json={
        "items": [{"offer_id": offer_id, "quantity": quantity}],
        "payment_method": "bank_transfer", **extra})


def _balances(session):
    return {account.label: ledger.balance(session, account).minor
            for account in session.scalars(select(LedgerAccount))}


def _invoice(client, order_id):
    response = client.post(f"/api/v1/orders/{order_id}/pay", headers=client.csrf,
                           json={"method": "bank_transfer"})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["invoice"]


def _receipt(client, invoice_id, amount, reference):
    return client.post(f"/api/v1/invoices/{invoice_id}/receipts", headers=client.csrf, json={
        "amount": {"amount": amount, "currency": "CNY"}, "received_on": "2026-11-20",
        "bank_reference": reference})


def test_checkout_snapshots_price_tax_and_supply_chain(buyer_client, shop):
    response = _checkout(buyer_client, shop["package"].id, quantity=2)
    assert response.status_code == 201, response.get_json()
    order = response.get_json()
    assert response.headers["Location"].endswith(f"/orders/{order['id']}")
    assert order["status"] == "awaiting_payment"
    # 2 × 9,800.00 at 6% VAT, tax rounded on the line.
    assert order["subtotal"] == {"amount": "19600.00", "currency": "CNY"}
    assert order["tax"] == {"amount": "1176.00", "currency": "CNY"}
    assert order["total"] == {"amount": "20776.00", "currency": "CNY"}
    line = order["lines"][0]
    assert line["tokens"] == 4_000_000 and line["version_id"] == shop["version"].id
    assert [share[1] for share in line["shares"]] == [6_000, 4_000]


def test_bank_transfer_end_to_end(buyer_client, finance_client, shop, session):
    order = _checkout(buyer_client, shop["package"].id).get_json()
    invoice = _invoice(buyer_client, order["id"])
    assert invoice["status"] == "open" and len(invoice["payment_reference"]) == 10
    assert invoice["amount_due"]["amount"] == "10388.00"
    # Finance sees it in the queue of invoices awaiting money.
    queue = finance_client.get("/api/v1/finance/invoices").get_json()["items"]
    assert [i["id"] for i in queue] == [invoice["id"]]

    # An underpayment leaves the invoice partly paid and the order unpaid.
    under = _receipt(finance_client, invoice["id"], "10000.00", "ICBC-0001")
    assert under.status_code == 200, under.get_json()
    assert under.get_json()["status"] == "partially_paid"
    assert under.get_json()["outstanding"]["amount"] == "388.00"
    assert buyer_client.get(f"/api/v1/orders/{order['id']}").get_json()["status"] == \
        "awaiting_payment"
    # The same bank reference twice is refused; nothing more is recorded.
    assert _receipt(finance_client, invoice["id"], "388.00", "ICBC-0001").status_code == 409
    # The rest, and 12.00 too much: paid, and the excess stays as the buyer's credit.
    paid = _receipt(finance_client, invoice["id"], "400.00", "ICBC-0002")
    assert paid.get_json()["status"] == "paid"

    order = buyer_client.get(f"/api/v1/orders/{order['id']}").get_json()
    assert order["status"] == "paid" and order["paid"]["amount"] == "10388.00"
    payment = order["payments"][0]
    assert payment["method"] == "bank_transfer" and payment["status"] == "succeeded"
    # net 9,800.00: platform 5% = 490.00; the chain shares 9,310.00 as 60/40.
    assert payment["split"] == {"tax": "588.00", "platform": "490.00",
                                f"supplier:{shop['supplier'].id}": "5586.00",
                                f"processor:{shop['processor'].id}": "3724.00"}
    balances = _balances(session)
    org = buyer_client.org.id
    assert balances[f"buyer_prepaid:org {org}:CNY"] == -1200  # 12.00 of credit (a credit)
    assert balances[f"participant_payable:org {shop['supplier'].id}:CNY"] == -558600
    assert balances["platform_clearing:platform:CNY"] == 1040000
    assert ledger.trial_balance(session) == {"CNY": 0}
    assert ledger.unbalanced_transactions(session) == []

    holdings = buyer_client.get("/api/v1/holdings").get_json()
    kinds = sorted(e["kind"] for e in holdings["entitlements"])
    assert kinds == ["api", "download"]
    assert holdings["wallets"][0]["scope"] == f"dataset:{shop['dataset'].id}"
    assert holdings["wallets"][0]["balance_tokens"] == 2_000_000
    assert session.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == "order.paid")) == 1


def test_download_and_certificate(buyer_client, finance_client, shop, client):
    order = _checkout(buyer_client, shop["package"].id).get_json()
    line_id = order["lines"][0]["id"]
    path = f"/api/v1/orders/{order['id']}/lines/{line_id}/download"
    assert buyer_client.get(path).status_code == 403  # not paid yet: no entitlement
    invoice = _invoice(buyer_client, order["id"])
    _receipt(finance_client, invoice["id"], "10388.00", "BOC-1")

    response = buyer_client.get(path)
    assert response.status_code == 200
    body = response.get_data()
    assert hashlib.sha256(body).hexdigest() == response.headers["X-Content-SHA256"] == \
        shop["version"].content_sha256

    certificate = buyer_client.get(
        f"/api/v1/orders/{order['id']}/lines/{line_id}/certificate").get_json()
    payload = certificate["payload"]
    assert payload["version"]["content_sha256"] == shop["version"].content_sha256
    assert payload["buyer"]["id"] == buyer_client.org.id
    assert payload["amount"] == {"amount": "10388.00", "currency": "CNY"}
    # Anyone can verify it, anonymously; an altered copy's digest does not verify.
    check = client.get(f"/api/v1/certificates/{certificate['number']}",
                       query_string={"digest": certificate["digest"]}).get_json()
    assert check["valid"] is True
    # A stranger sees what proves the purchase, not who took part nor what was bought.
    shown = check["certificate"]
    assert shown["disclosure"] == "public" and shown["signature"] == certificate["signature"]
    assert shown["payload"] == {
        "number": certificate["number"], "issued_at": payload["issued_at"],
        "paid_at": payload["paid_at"], "amount": {"amount": "10388.00", "currency": "CNY"},
        "version": {"content_sha256": shop["version"].content_sha256}}
    # The buyer, signed in or by key, sees all of it.
    mine = buyer_client.get(f"/api/v1/certificates/{certificate['number']}").get_json()
    assert mine["certificate"]["disclosure"] == "party"
    assert mine["certificate"]["payload"] == payload
    forged = client.get(f"/api/v1/certificates/{certificate['number']}",
                        query_string={"digest": "0" * 64}).get_json()
    assert forged["valid"] is False
    assert client.get("/api/v1/certificates/TC-NOPE").get_json()["valid"] is False


def test_refunds_never_exceed_what_remains(buyer_client, finance_client, shop, session):
    order = _checkout(buyer_client, shop["package"].id).get_json()
    invoice = _invoice(buyer_client, order["id"])
    _receipt(finance_client, invoice["id"], "10388.00", "CCB-7")
    payment_id = buyer_client.get(f"/api/v1/orders/{order['id']}").get_json()["payments"][0]["id"]
    refund_path = f"/api/v1/payments/{payment_id}/refunds"

    too_much = finance_client.post(refund_path, headers=finance_client.csrf, json={
        "amount": {"amount": "10388.01", "currency": "CNY"}, "bank_reference": "OUT-0"})
    assert too_much.status_code == 422
    assert "amount" in too_much.get_json()["errors"]
    partial = finance_client.post(refund_path, headers=finance_client.csrf, json={
        "amount": {"amount": "1000.00", "currency": "CNY"}, "reason": "late delivery",
        "bank_reference": "OUT-1"})
    assert partial.status_code == 201, partial.get_json()
    parts = partial.get_json()["parts"]
    assert sum(int(v.replace(".", "")) for v in parts.values()) == 100000
    rest = finance_client.post(refund_path, headers=finance_client.csrf, json={
        "bank_reference": "OUT-2"})
    assert rest.get_json()["amount"]["amount"] == "9388.00"
    again = finance_client.post(refund_path, headers=finance_client.csrf, json={
        "amount": {"amount": "0.01", "currency": "CNY"}, "bank_reference": "OUT-3"})
    assert again.status_code == 422

    order = buyer_client.get(f"/api/v1/orders/{order['id']}").get_json()
    assert order["status"] == "refunded" and order["refunded"]["amount"] == "10388.00"
    # The split is mirrored to zero: every payable back where it started.
    balances = _balances(session)
    for org in (shop["supplier"], shop["processor"]):
        assert balances[f"participant_payable:org {org.id}:CNY"] == 0
    assert balances["platform_revenue:platform:CNY"] == 0
    assert balances["tax_payable:platform:CNY"] == 0
    assert ledger.trial_balance(session) == {"CNY": 0}
    # What the order granted is taken back: no live entitlement, no tokens left.
    entitlements = session.scalars(select(Entitlement).where(
        Entitlement.organization_id == buyer_client.org.id)).all()
    assert entitlements and all(e.revoked_at is not None for e in entitlements)
    holdings = buyer_client.get("/api/v1/holdings").get_json()
    assert holdings["wallets"][0]["balance_tokens"] == 0
    line_id = order["lines"][0]["id"]
    assert buyer_client.get(
        f"/api/v1/orders/{order['id']}/lines/{line_id}/download").status_code == 403


@pytest.mark.parametrize("items, field", [
    ([{"offer_id": 0, "quantity": 0}], "items"),
    ([{"offer_id": 0, "quantity": -1}], "items"),
    ([], "items"),
])
def test_bad_carts_are_422_naming_the_field(buyer_client, shop, session, items, field):
    for item in items:
        item["offer_id"] = shop["package"].id
    response = buyer_client.post("/api/v1/orders", headers=buyer_client.csrf,
                                 json={"items": items, "payment_method": "bank_transfer"})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]
    assert session.scalar(select(func.count()).select_from(Order)) == 0


def test_unknown_field_is_rejected(buyer_client, shop):
    response = buyer_client.post("/api/v1/orders", headers=buyer_client.csrf, json={
        "items": [{"offer_id": shop["package"].id}], "payment_method": "bank_transfer",
        "total": {"amount": "0.01", "currency": "CNY"}})
    assert response.status_code == 422 and "total" in response.get_json()["errors"]


def test_suspended_or_retired_offers_cannot_be_bought(buyer_client, shop, session):
    from market.catalog import offers

    offers.retire_offer(session, shop["owner"], shop["package"])
    session.commit()
    assert _checkout(buyer_client, shop["package"].id).status_code == 409
    fresh = offers.add_offer(session, shop["owner"], shop["dataset"], {
        "kind": "mall_package", "code": "pack2",
        "price": {"amount": "100.00", "currency": "CNY"}})
    shop["listing"].status = "suspended"
    session.commit()
    response = _checkout(buyer_client, fresh.id)
    assert response.status_code == 404  # a suspended listing is not visible to buyers


def test_paying_twice_and_cancelling(buyer_client, finance_client, shop):
    order = _checkout(buyer_client, shop["package"].id).get_json()
    invoice = _invoice(buyer_client, order["id"])
    again = _invoice(buyer_client, order["id"])  # the same invoice, not a second one
    assert again["id"] == invoice["id"]
    _receipt(finance_client, invoice["id"], "10388.00", "ABC-1")
    paid_again = buyer_client.post(f"/api/v1/orders/{order['id']}/pay",
                                   headers=buyer_client.csrf, json={"method": "bank_transfer"})
    assert paid_again.status_code == 409
    assert buyer_client.post(f"/api/v1/orders/{order['id']}/cancel",
                             headers=buyer_client.csrf).status_code == 409
    other = _checkout(buyer_client, shop["package"].id).get_json()
    cancelled = buyer_client.post(f"/api/v1/orders/{other['id']}/cancel",
                                  headers=buyer_client.csrf)
    assert cancelled.get_json()["status"] == "cancelled"
    assert buyer_client.post(f"/api/v1/orders/{other['id']}/pay", headers=buyer_client.csrf,
                             json={"method": "bank_transfer"}).status_code == 409


def test_card_payments_need_a_processor(buyer_client, shop):
    order = _checkout(buyer_client, shop["package"].id).get_json()
    response = buyer_client.post(f"/api/v1/orders/{order['id']}/pay",
                                 headers=buyer_client.csrf, json={"method": "card"})
    assert response.status_code == 409
    assert "bank transfer" in response.get_json()["detail"]


def test_platform_token_pack(buyer_client, finance_client, session):
    response = buyer_client.post("/api/v1/token-packs", headers=buyer_client.csrf,
                                 json={"millions": 5, "payment_method": "bank_transfer"})
    assert response.status_code == 201, response.get_json()
    order = response.get_json()
    assert order["subtotal"]["amount"] == "100.00"  # 5 × 20.00 per million
    invoice = _invoice(buyer_client, order["id"])
    _receipt(finance_client, invoice["id"], order["total"]["amount"], "TOK-1")
    wallets = buyer_client.get("/api/v1/holdings").get_json()["wallets"]
    assert wallets == [pytest.approx(wallets[0])] and wallets[0]["scope"] == "platform"
    assert wallets[0]["balance_tokens"] == 5_000_000
    # Held as the buyer's prepaid credit until the tokens are used.
    account = ledger.get_account(session, Purpose.BUYER_PREPAID, "CNY", buyer_client.org.id)
    assert ledger.balance(session, account).minor == -10000
