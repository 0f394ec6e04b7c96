"""The buying pages and the finance console, driven through the storefront's forms: cart →
checkout → bank-transfer invoice → receipt recorded by finance → download, certificate and its
public verification → holdings; and what each kind of person may not do."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import pytest
from sqlalchemy import func, select

from billing.models import BankReceipt, Invoice, Payment, Refund
from market.core.db import utcnow
from tests.billing.shop import buyer, listed_dataset, platform_finance
from tests.factories import make_org
from tests.fixtures import csrf_token

METERED = {"kind": "metered", "code": "api",
           "tiers": [{"from_tokens": 0, "up_to": None,
                      "price_per_million": {"amount": "12.50", "currency": "CNY"}}]}


@pytest.fixture()
def shop(session, passwords):
    return listed_dataset(session, passwords, package_price="9800.00", package_tokens=2_000_000,
                          licence_months=12, extra_offers=[METERED])


@pytest.fixture()
def buyer_client(session, passwords, sign_in_as):
    org, _, _ = buyer(session, passwords)
    session.commit()
    client = sign_in_as(org, "owner")
    client.org = org
    return client


@pytest.fixture()
def finance_client(session, passwords, sign_in_as):
    platform, _, _ = platform_finance(session, passwords)
    session.commit()
    return sign_in_as(platform, "finance")


def _post(client, path, data=None, page="/"):
    return client.post(path, data={**(data or {}), "csrf_token": csrf_token(client, page)})


def _text(response) -> str:
    return response.get_data(as_text=True)


def _place_order(client, shop, quantity=1) -> int:
    """Add the package to the cart and check out; the new order's id."""
    assert _post(client, "/cart", {"offer_id": shop["package"].id, "quantity": quantity}
                 ).status_code == 302
    response = _post(client, "/cart/checkout", {"payment_method": "bank_transfer",
                                                "note": "PO 2026-17"})
    assert response.status_code == 302, _text(response)
    return int(re.search(r"/orders/(\d+)$", response.location).group(1))


def _invoice_for(session, order_id) -> Invoice:
    session.expire_all()
    return session.scalar(select(Invoice).where(Invoice.order_id == order_id))


def _receipt_form(invoice, **changes):
    values = {"amount": "10388.00", "currency": "CNY", "received_on": utcnow().date().isoformat(),
              "bank_reference": "ICBC-20261120-01"} | changes
    return {f"invoice-{invoice.id}-{name}": value for name, value in values.items()}


def _pay_by_bank_transfer(buyer_client, finance_client, session, shop) -> tuple[int, Invoice]:
    order_id = _place_order(buyer_client, shop)
    assert _post(buyer_client, f"/orders/{order_id}/pay/bank-transfer").status_code == 302
    invoice = _invoice_for(session, order_id)
    response = _post(finance_client, f"/finance/invoices/{invoice.id}/receipts",
                     _receipt_form(invoice))
    assert response.status_code == 302, _text(response)
    return order_id, invoice


def test_buying_a_package_by_bank_transfer_end_to_end(buyer_client, finance_client, client,
                                                      session, shop):
    dataset_page = _text(buyer_client.get(f"/datasets/{shop['dataset'].id}"))
    assert "Add to cart" in dataset_page and "Buy tokens" in dataset_page

    assert _post(buyer_client, "/cart", {"offer_id": shop["package"].id, "quantity": 1}
                 ).location.endswith("/cart")
    cart = _text(buyer_client.get("/cart"))
    # 9,800.00 and 6% VAT: the indicative price the checkout will charge.
    assert "CNY 9,800.00" in cart and "CNY 588.00" in cart and "CNY 10,388.00" in cart

    response = _post(buyer_client, "/cart/checkout", {"payment_method": "bank_transfer",
                                                      "note": "PO 2026-17"})
    assert response.status_code == 302
    order_id = int(re.search(r"/orders/(\d+)$", response.location).group(1))
    assert "Your cart is empty" in _text(buyer_client.get("/cart"))
    page = _text(buyer_client.get(f"/orders/{order_id}"))
    assert "awaiting payment" in page and "Pay by bank transfer" in page
    assert "PO 2026-17" in page and "CNY 10,388.00" in page

    assert _post(buyer_client, f"/orders/{order_id}/pay/bank-transfer").status_code == 302
    invoice = _invoice_for(session, order_id)
    page = _text(buyer_client.get(f"/orders/{order_id}"))
    assert invoice.payment_reference in page and invoice.number in page
    assert "Pay by bank transfer" not in page

    # Finance finds it in the queue and by its reference, and records the money.
    console = _text(finance_client.get("/finance"))
    assert invoice.number in console and invoice.payment_reference in console
    assert "City Health Commission" in console
    found = finance_client.get("/finance", query_string={
        "payment_reference": invoice.payment_reference.lower()})
    assert found.status_code == 200 and f"/finance/orders/{order_id}" in _text(found)
    response = _post(finance_client, f"/finance/invoices/{invoice.id}/receipts",
                     _receipt_form(invoice))
    assert response.status_code == 302, _text(response)
    console = _text(finance_client.get("/finance"))
    assert f"invoice {invoice.number} is paid" in console
    assert f'id="invoice-{invoice.id}"' not in console

    page = _text(buyer_client.get(f"/orders/{order_id}"))
    assert ">paid<" in page
    download = re.search(r'href="(/api/v1/orders/\d+/lines/\d+/download)"', page).group(1)
    response = buyer_client.get(download)
    assert response.status_code == 200
    assert hashlib.sha256(response.get_data()).hexdigest() == \
        response.headers["X-Content-SHA256"] == shop["version"].content_sha256

    certificate_path = re.search(r'href="(/orders/\d+/lines/\d+/certificate)"', page).group(1)
    certificate = _text(buyer_client.get(certificate_path))
    assert shop["version"].content_sha256 in certificate and "City Health Commission" in certificate
    verify = re.search(r'href="http://localhost(/certificates/verify\?[^"]+)"',
                       certificate).group(1).replace("&amp;", "&")
    verdict = _text(client.get(verify))  # anyone, signed in or not
    assert "Genuine" in verdict and "Not genuine" not in verdict
    assert shop["version"].content_sha256 in verdict

    holdings = _text(buyer_client.get("/holdings"))
    assert "Grid load series" in holdings and "download" in holdings and "API use" in holdings
    assert "2,000,000" in holdings


def test_verification_refuses_unknown_and_altered_certificates(client):
    assert "Not genuine" in _text(client.get("/certificates/verify",
                                             query_string={"number": "TC-NOPE"}))
    page = client.get("/certificates/verify")
    assert page.status_code == 200 and "Genuine" not in _text(page)


def test_altered_digest_is_not_genuine(buyer_client, finance_client, client, session, shop):
    order_id, _ = _pay_by_bank_transfer(buyer_client, finance_client, session, shop)
    page = _text(buyer_client.get(f"/orders/{order_id}"))
    certificate_path = re.search(r'href="(/orders/\d+/lines/\d+/certificate)"', page).group(1)
    number = re.search(r"<code>(TC-[^<]+)</code>",
                       _text(buyer_client.get(certificate_path))).group(1)
    verdict = _text(client.get("/certificates/verify",
                               query_string={"number": number, "digest": "0" * 64}))
    assert "Not genuine" in verdict and "altered" in verdict


def test_verification_names_the_parties_only_to_the_parties(buyer_client, finance_client,
                                                            client, session, shop, sign_in_as):
    """Finding 13: anyone with the number read the buyer's name and registration number."""
    buyer_client.org.registration_number = "91110000MA01ABCD2X"
    session.commit()
    order_id, _ = _pay_by_bank_transfer(buyer_client, finance_client, session, shop)
    page = _text(buyer_client.get(f"/orders/{order_id}"))
    certificate_path = re.search(r'href="(/orders/\d+/lines/\d+/certificate)"', page).group(1)
    number = re.search(r"<code>(TC-[^<]+)</code>",
                       _text(buyer_client.get(certificate_path))).group(1)
    stranger = sign_in_as(make_org(session, "buyer", name="Curious Bureau"), "owner")
    seller = sign_in_as(shop["supplier"], "member")
    for viewer in (client, stranger):
        verdict = _text(viewer.get("/certificates/verify", query_string={"number": number}))
        assert "Genuine" in verdict and "Not genuine" not in verdict
        assert number in verdict and shop["version"].content_sha256 in verdict
        assert "CNY 10,388.00" in verdict
        for hidden in ("City Health Commission", "91110000MA01ABCD2X", "Grid Data Co",
                       "Grid load series"):
            assert hidden not in verdict
        assert "shown only to the buyer and the seller" in verdict
    for party in (buyer_client, seller):
        verdict = _text(party.get("/certificates/verify", query_string={"number": number}))
        assert "Genuine" in verdict
        assert "City Health Commission" in verdict and "91110000MA01ABCD2X" in verdict
        assert "Grid Data Co" in verdict


@pytest.mark.parametrize("changes, field, message", [
    ({"received_on": (utcnow().date() + dt.timedelta(days=2)).isoformat()}, "received_on",
     "future"),
    ({"currency": "USD"}, "currency", "The invoice is in CNY"),
    ({"bank_reference": "  "}, "bank_reference", "bank&#39;s reference"),
    ({"amount": "0"}, "amount", "more than zero"),
])
def test_a_bad_receipt_is_shown_next_to_its_field_and_records_nothing(
        buyer_client, finance_client, session, shop, changes, field, message):
    order_id = _place_order(buyer_client, shop)
    _post(buyer_client, f"/orders/{order_id}/pay/bank-transfer")
    invoice = _invoice_for(session, order_id)
    response = _post(finance_client, f"/finance/invoices/{invoice.id}/receipts",
                     _receipt_form(invoice, **changes))
    assert response.status_code == 422
    page = _text(response)
    assert f'id="invoice-{invoice.id}-{field}-errors"' in page and message in page
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(BankReceipt)) == 0
    assert session.get(Invoice, invoice.id).status == "open"


def test_finance_refunds_a_bank_transfer_in_part(buyer_client, finance_client, session, shop):
    order_id, _ = _pay_by_bank_transfer(buyer_client, finance_client, session, shop)
    page = _text(finance_client.get(f"/finance/orders/{order_id}"))
    payment_id = int(re.search(r"/finance/payments/(\d+)/refunds", page).group(1))
    prefix = f"payment-{payment_id}-"
    missing = _post(finance_client, f"/finance/payments/{payment_id}/refunds",
                    {prefix + "amount": "100.00", prefix + "reason": "goodwill"})
    assert missing.status_code == 422 and "bank reference" in _text(missing)
    too_much = _post(finance_client, f"/finance/payments/{payment_id}/refunds",
                     {prefix + "amount": "99999.00", prefix + "reason": "goodwill",
                      prefix + "bank_reference": "OUT-1"})
    assert too_much.status_code == 422
    response = _post(finance_client, f"/finance/payments/{payment_id}/refunds",
                     {prefix + "amount": "100.00", prefix + "reason": "goodwill",
                      prefix + "bank_reference": "OUT-2"})
    assert response.status_code == 302, _text(response)
    session.expire_all()
    (refund,) = session.scalars(select(Refund)).all()
    assert refund.amount_minor == 10_000 and refund.status == "succeeded"
    page = _text(finance_client.get(f"/finance/orders/{order_id}"))
    assert "Refund of CNY 100.00 made." in page
    assert 'class="badge refund-succeeded">refunded<' in page
    # A partial refund leaves the purchase in place: the buyer can still download it.
    page = _text(buyer_client.get(f"/orders/{order_id}"))
    assert "partially refunded" in page and "/download" in page


def test_cart_quantities_removal_and_cancelling(buyer_client, session, shop):
    package = shop["package"].id
    _post(buyer_client, "/cart", {"offer_id": package, "quantity": 1})
    _post(buyer_client, f"/cart/{package}/quantity", {"offer_id": package, "quantity": 3})
    assert "CNY 29,400.00" in _text(buyer_client.get("/cart"))
    bad = _post(buyer_client, f"/cart/{package}/quantity", {"offer_id": package, "quantity": 0})
    assert bad.status_code == 302 and "CNY 29,400.00" in _text(buyer_client.get("/cart"))
    _post(buyer_client, f"/cart/{package}/remove")
    assert "Your cart is empty" in _text(buyer_client.get("/cart"))
    empty = _post(buyer_client, "/cart/checkout", {"payment_method": "bank_transfer"})
    assert empty.status_code == 422 and "The cart is empty" in _text(empty)

    order_id = _place_order(buyer_client, shop)
    assert _post(buyer_client, f"/orders/{order_id}/cancel").status_code == 302
    assert ">cancelled<" in _text(buyer_client.get(f"/orders/{order_id}"))
    assert _post(buyer_client, f"/orders/{order_id}/cancel").status_code == 409


def test_card_is_offered_only_with_a_processor(buyer_client, shop):
    page = _text(buyer_client.get("/cart"))
    assert 'value="card"' not in page
    card = _post(buyer_client, "/cart/checkout", {"payment_method": "card"})
    assert card.status_code == 422  # not a choice without a processor
    order_id = _place_order(buyer_client, shop)
    assert "Pay by card" not in _text(buyer_client.get(f"/orders/{order_id}"))
    assert buyer_client.get(f"/orders/{order_id}/pay/card").status_code == 409


def test_card_page_loads_stripe_js_under_its_own_policy(app, buyer_client, shop, monkeypatch):
    order_id = _place_order(buyer_client, shop)
    monkeypatch.setitem(app.extensions, "market.gateway", object())
    response = buyer_client.get(f"/orders/{order_id}/pay/card")
    assert response.status_code == 200
    page = _text(response)
    assert '<script src="https://js.stripe.com/v3/"></script>' in page
    assert "/static/card-payment.js" in page and "<script>" not in page
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self' 'wasm-unsafe-eval' https://js.stripe.com" in policy
    assert "frame-src 'self' https://js.stripe.com" in policy
    # Every other page keeps the site's policy.
    assert "js.stripe.com" not in buyer_client.get("/cart").headers["Content-Security-Policy"]


def test_buying_a_token_pack_from_holdings_and_the_dataset_page(buyer_client, session, shop):
    response = _post(buyer_client, "/holdings/token-packs",
                     {"millions": 3, "dataset_id": "", "payment_method": "bank_transfer"})
    assert response.status_code == 302, _text(response)
    page = _text(buyer_client.get(response.location))
    assert "3M tokens, any dataset" in page and "CNY 63.60" in page  # 3 × 20.00 + 6%
    response = _post(buyer_client, "/holdings/token-packs",
                     {"millions": 2, "dataset_id": shop["dataset"].id,
                      "payment_method": "bank_transfer"})
    assert response.status_code == 302
    assert "CNY 26.50" in _text(buyer_client.get(response.location))  # 2 × 12.50 + 6%
    bad = _post(buyer_client, "/holdings/token-packs",
                {"millions": 0, "dataset_id": "", "payment_method": "bank_transfer"})
    assert bad.status_code == 422 and 'id="millions-errors"' in _text(bad)


def test_a_buyer_cannot_open_the_finance_console(buyer_client, shop):
    assert buyer_client.get("/finance").status_code == 403
    assert buyer_client.get(f"/finance/orders/{1}").status_code == 403
    assert "/finance" not in _text(buyer_client.get("/orders"))


def test_another_organizations_order_is_not_found(buyer_client, session, passwords, sign_in_as,
                                                  shop):
    order_id = _place_order(buyer_client, shop)
    other, _, _ = buyer(session, passwords)
    session.commit()
    stranger = sign_in_as(other, "owner")
    assert stranger.get(f"/orders/{order_id}").status_code == 404
    assert _post(stranger, f"/orders/{order_id}/cancel").status_code == 404
    assert _post(stranger, f"/orders/{order_id}/pay/bank-transfer").status_code == 404


def test_pages_need_sign_in(client):
    for path in ("/cart", "/orders", "/holdings", "/finance"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.location


@pytest.mark.parametrize("language, title, due_date", [
    ("en", "Grid load series", r"[A-Z][a-z]+ \d{1,2}, \d{4}"),
    ("zh-CN", "电网负荷数据", r"\d{4}年\d{1,2}月\d{1,2}日"),
])
def test_every_page_renders_in_english_and_chinese(buyer_client, finance_client, session, shop,
                                                   language, title, due_date):
    order_id, _ = _pay_by_bank_transfer(buyer_client, finance_client, session, shop)
    page = _text(buyer_client.get(f"/orders/{order_id}"))
    certificate_path = re.search(r'href="(/orders/\d+/lines/\d+/certificate)"', page).group(1)
    _post(buyer_client, "/cart", {"offer_id": shop["package"].id, "quantity": 1})
    for client in (buyer_client, finance_client):
        client.environ_base["HTTP_ACCEPT_LANGUAGE"] = language
    pages = [(buyer_client, path) for path in (
        "/cart", "/orders", f"/orders/{order_id}", certificate_path, "/holdings",
        f"/datasets/{shop['dataset'].id}", "/certificates/verify?number=TC-NOPE")]
    pages += [(finance_client, path) for path in ("/finance", f"/finance/orders/{order_id}")]
    for client, path in pages:
        assert client.get(path).status_code == 200, path
    for path in ("/cart", "/holdings", certificate_path):
        assert title in _text(buyer_client.get(path)), path
    # Dates in the page's locale: the invoice's due date.
    assert re.search(due_date, _text(buyer_client.get(f"/orders/{order_id}")))


def test_a_supplier_cannot_put_its_own_package_in_the_cart(sign_in_as, shop):
    supplier = sign_in_as(shop["supplier"], "owner")
    assert "Add to cart" not in _text(supplier.get(f"/datasets/{shop['dataset'].id}"))
    response = _post(supplier, "/cart", {"offer_id": shop["package"].id, "quantity": 1})
    assert response.status_code == 302
    page = _text(supplier.get("/cart"))
    assert "cannot buy its own dataset" in page and "Your cart is empty" in page


@pytest.mark.parametrize("status", ["created", "processing", "requires_action"])
def test_no_invoice_while_a_card_payment_of_the_order_is_in_flight(session, shop, buyer_client,
                                                                   status):
    order_id = _place_order(buyer_client, shop)
    session.add(Payment(order_id=order_id, organization_id=buyer_client.org.id, method="card",
                        status=status, amount_minor=1_038_800, currency="CNY",
                        idempotency_key=f"in-flight-{order_id}"))
    session.commit()
    page = _post(buyer_client, f"/orders/{order_id}/pay/bank-transfer")
    assert page.status_code == 409
    assert "A card payment for this order is in progress." in _text(page)
    api = buyer_client.post(f"/api/v1/orders/{order_id}/pay", json={"method": "bank_transfer"},
                            headers={"X-CSRFToken": csrf_token(buyer_client)})
    assert api.status_code == 409 and api.get_json()["errors"] == {
        "order": ["A card payment for this order is in progress."]}
    assert _invoice_for(session, order_id) is None
