"""The subscription and custom-data pages, driven through the storefront's forms: subscribe from
the dataset page → the first order's page → paid → the subscriptions list, cancel and resume;
a buyer posts a demand, a supplier quotes on it, the buyer accepts, the deal page shows the
milestones; every page in English and Chinese."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from billing import deals
from billing.models import Deal, DealQuote, Demand, Invoice, Subscription
from market.core.db import utcnow
from tests.billing.shop import buyer, listed_dataset, platform_finance
from tests.fixtures import csrf_token

PLAN = {"kind": "subscription", "code": "monthly", "period": "month",
        "price": {"amount": "2000.00", "currency": "CNY"}, "included_tokens": 5_000_000,
        "overage_per_million": {"amount": "3.00", "currency": "CNY"}}
DEADLINE = (dt.date.today() + dt.timedelta(days=60)).isoformat()


@pytest.fixture()
def shop(session, passwords):
    return listed_dataset(session, passwords, extra_offers=[PLAN])


@pytest.fixture()
def buyer_client(session, passwords, sign_in_as, shop):
    org, _, _ = buyer(session, passwords)
    session.commit()
    client = sign_in_as(org, "owner")
    client.org = org
    return client


@pytest.fixture()
def supplier_client(sign_in_as, shop):
    return sign_in_as(shop["supplier"], "owner")


@pytest.fixture()
def finance_client(session, passwords, sign_in_as):
    platform, _, _ = platform_finance(session, passwords)
    session.commit()
    return sign_in_as(platform, "finance")


def _post(client, path, data=None, page="/"):
    return client.post(path, data={**(data or {}), "csrf_token": csrf_token(client, page)})


def _text(response) -> str:
    return response.get_data(as_text=True)


def _subscribe(client, shop) -> int:
    """Subscribe through the dataset page's form; the first order's id."""
    page = f"/datasets/{shop['dataset'].id}"
    assert 'action="/subscriptions"' in _text(client.get(page))
    response = _post(client, "/subscriptions", {"offer_id": shop["offers"][0].id,
                                                "payment_method": "bank_transfer"}, page)
    assert response.status_code == 302, _text(response)
    match = re.search(r"/orders/(\d+)$", response.location)
    assert match, response.location
    return int(match.group(1))


def _pay(buyer_client, finance_client, session, order_id) -> None:
    assert _post(buyer_client, f"/orders/{order_id}/pay/bank-transfer").status_code == 302
    session.expire_all()
    invoice = session.scalar(select(Invoice).where(Invoice.order_id == order_id))
    amount = f"{invoice.amount_due_minor / 100:.2f}"
    form = {"amount": amount, "currency": invoice.currency,
            "received_on": utcnow().date().isoformat(), "bank_reference": "SUB-1"}
    response = _post(finance_client, f"/finance/invoices/{invoice.id}/receipts",
                     {f"invoice-{invoice.id}-{k}": v for k, v in form.items()})
    assert response.status_code == 302, _text(response)


def test_subscribe_from_the_dataset_page_pay_cancel_and_resume(buyer_client, finance_client,
                                                               session, shop):
    order_id = _subscribe(buyer_client, shop)
    order_page = _text(buyer_client.get(f"/orders/{order_id}"))
    assert "CNY 2,120.00" in order_page
    listing = _text(buyer_client.get("/subscriptions"))
    assert "Grid load series" in listing and "monthly" in listing
    assert "awaiting first payment" in listing

    _pay(buyer_client, finance_client, session, order_id)
    listing = _text(buyer_client.get("/subscriptions"))
    assert "5,000,000" in listing and ">active<" in listing
    sub_id = session.scalar(select(Subscription.id).where(
        Subscription.organization_id == buyer_client.org.id))

    assert _post(buyer_client, f"/subscriptions/{sub_id}/cancel").status_code == 302
    session.expire_all()
    sub = session.get(Subscription, sub_id)
    assert sub.cancel_at_period_end and sub.status == "active"
    assert "Resume" in _text(buyer_client.get("/subscriptions"))

    assert _post(buyer_client, f"/subscriptions/{sub_id}/resume").status_code == 302
    session.expire_all()
    assert not session.get(Subscription, sub_id).cancel_at_period_end
    # Resuming what is not set to cancel shows the service's message.
    response = _post(buyer_client, f"/subscriptions/{sub_id}/resume")
    assert response.status_code == 409 and "not set to cancel" in _text(response)


def test_a_second_subscription_is_refused_on_the_page(buyer_client, session, shop):
    _subscribe(buyer_client, shop)
    page = f"/datasets/{shop['dataset'].id}"
    response = _post(buyer_client, "/subscriptions", {"offer_id": shop["offers"][0].id,
                                                      "payment_method": "bank_transfer"}, page)
    assert response.status_code == 302
    assert "already has a subscription" in _text(buyer_client.get(response.location))


def test_cancelling_an_unpaid_subscription_ends_it(buyer_client, session, shop):
    _subscribe(buyer_client, shop)
    sub_id = session.scalar(select(Subscription.id).where(
        Subscription.organization_id == buyer_client.org.id))
    assert _post(buyer_client, f"/subscriptions/{sub_id}/cancel").status_code == 302
    session.expire_all()
    assert session.get(Subscription, sub_id).status == "cancelled"


def _demand_form(**changes):
    return {"title": "Hospital discharge notes", "description": "De-identified, Chinese.",
            "sector": "healthcare", "modality": "text", "volume": "50,000 records",
            "budget_amount": "10000.00", "currency": "CNY", "deadline": DEADLINE,
            "threshold_structural_integrity": "50"} | changes


def _post_demand(client, session) -> Demand:
    response = _post(client, "/demands", _demand_form(), "/demands")
    assert response.status_code == 302, _text(response)
    demand_id = int(re.search(r"/demands/(\d+)$", response.location).group(1))
    session.expire_all()
    return session.get(Demand, demand_id)


def _quote(client, demand, shop, **changes):
    prefix = f"demand-{demand.id}-"
    values = {"dataset_id": str(shop["dataset"].id), "deposit": "3000.00",
              "delivery": "4000.00", "acceptance": "2000.00",
              "criterion_content_diversity": "40", "note": "8 weeks"} | changes
    return _post(client, f"/demands/{demand.id}/quotes",
                 {prefix + k: v for k, v in values.items()}, "/demands/open")


def _deal(buyer_client, supplier_client, session, shop, **quote_changes) -> Deal:
    demand = _post_demand(buyer_client, session)
    assert _quote(supplier_client, demand, shop, **quote_changes).status_code == 302
    session.expire_all()
    quote = session.scalar(select(DealQuote).where(DealQuote.demand_id == demand.id))
    response = _post(buyer_client, f"/quotes/{quote.id}/accept",
                     {f"quote-{quote.id}-payment_method": "bank_transfer"},
                     f"/demands/{demand.id}")
    assert response.status_code == 302, _text(response)
    deal_id = int(re.search(r"/deals/(\d+)$", response.location).group(1))
    session.expire_all()
    return session.get(Deal, deal_id)


def test_demand_quote_accept_and_the_deal_page(buyer_client, supplier_client, session, shop):
    demand = _post_demand(buyer_client, session)
    assert demand.thresholds == {"structural_integrity": 50}
    assert demand.budget_minor == 1_000_000 and demand.status == "open"
    assert "Hospital discharge notes" in _text(buyer_client.get("/demands"))

    open_page = _text(supplier_client.get("/demands/open"))
    assert "Hospital discharge notes" in open_page and "Send quote" in open_page
    response = _quote(supplier_client, demand, shop)
    assert response.status_code == 302, _text(response)
    assert "has quoted on this demand" in _text(supplier_client.get("/demands/open"))

    page = _text(buyer_client.get(f"/demands/{demand.id}"))
    assert "CNY 9,540.00" in page and "Accept" in page  # 9,000 + 6% VAT
    session.expire_all()
    quote = session.scalar(select(DealQuote).where(DealQuote.demand_id == demand.id))
    assert quote.criteria == {"content_diversity": 40, "structural_integrity": 50}
    response = _post(buyer_client, f"/quotes/{quote.id}/accept",
                     {f"quote-{quote.id}-payment_method": "bank_transfer"},
                     f"/demands/{demand.id}")
    assert response.status_code == 302, _text(response)
    deal_page = _text(buyer_client.get(response.location))
    assert "Deposit" in deal_page and "On delivery" in deal_page
    assert "On acceptance" in deal_page and "awaiting payment" in deal_page
    assert "scheduled" in deal_page and re.search(r'href="/orders/\d+"', deal_page)
    assert "Dispute" in deal_page

    # A second accept is refused on the page with the service's message.
    again = _post(buyer_client, f"/quotes/{quote.id}/accept",
                  {f"quote-{quote.id}-payment_method": "bank_transfer"}, "/demands")
    assert again.status_code == 409 and "already been accepted" in _text(again)

    # The supplier sees the deal too, with the delivery form and no order links.
    deal_id = int(re.search(r"/deals/(\d+)$", response.location).group(1))
    supplier_page = _text(supplier_client.get(f"/deals/{deal_id}"))
    assert "Deliver this version" in supplier_page
    assert not re.search(r'href="/orders/\d+"', supplier_page)
    # Delivering before the deposit is paid shows the service's message.
    response = _post(supplier_client, f"/deals/{deal_id}/deliver", {"version": "1"},
                     f"/deals/{deal_id}")
    assert response.status_code == 422 and "deposit is not paid" in _text(response)


def _quote_on(session, demand) -> DealQuote:
    session.expire_all()
    return session.scalar(select(DealQuote).where(DealQuote.demand_id == demand.id))


def test_the_buyer_cancels_an_open_demand_on_its_page(buyer_client, supplier_client, session,
                                                      shop):
    demand = _post_demand(buyer_client, session)
    assert _quote(supplier_client, demand, shop).status_code == 302
    quote = _quote_on(session, demand)
    page, cancel = f"/demands/{demand.id}", f"/demands/{demand.id}/cancel"
    assert "Cancel demand" in _text(buyer_client.get(page))
    assert "Cancel demand" not in _text(supplier_client.get(page))

    # Without a reason the form says so next to the field, and nothing changes.
    response = _post(buyer_client, cancel, {"cancel-reason": "  "}, page)
    assert response.status_code == 422
    assert 'id="cancel-reason-errors"' in _text(response)
    session.expire_all()
    assert session.get(Demand, demand.id).status == "open"
    # A supplier cannot cancel the buyer's demand.
    assert _post(supplier_client, cancel, {"cancel-reason": "x"}, page).status_code == 403

    response = _post(buyer_client, cancel, {"cancel-reason": "The project was stopped."}, page)
    assert response.status_code == 302 and response.location.endswith(page)
    shown = _text(buyer_client.get(page))
    assert "Demand cancelled" in shown and ">cancelled<" in shown and ">declined<" in shown
    assert "Cancel demand" not in shown and 'action="/quotes/' not in shown
    session.expire_all()
    assert session.get(Demand, demand.id).status == "cancelled"
    assert session.get(DealQuote, quote.id).status == "declined"
    # The supplier sees how its quote ended; the demand is no longer open to quote on.
    assert ">declined<" in _text(supplier_client.get(page))
    assert "Hospital discharge notes" not in _text(supplier_client.get("/demands/open"))
    # A second cancel, or accepting the declined quote, shows the service's message.
    response = _post(buyer_client, cancel, {"cancel-reason": "Again"}, page)
    assert response.status_code == 409 and "only an open demand" in _text(response)
    response = _post(buyer_client, f"/quotes/{quote.id}/accept",
                     {f"quote-{quote.id}-payment_method": "bank_transfer"}, page)
    assert response.status_code == 409 and "declined; it cannot be accepted" in _text(response)


def test_the_supplier_withdraws_its_quote_on_the_demand_page(buyer_client, supplier_client,
                                                             session, shop):
    demand = _post_demand(buyer_client, session)
    assert _quote(supplier_client, demand, shop).status_code == 302
    quote = _quote_on(session, demand)
    page, withdraw = f"/demands/{demand.id}", f"/quotes/{quote.id}/withdraw"
    assert "Withdraw quote" in _text(supplier_client.get(page))
    assert "Withdraw quote" not in _text(buyer_client.get(page))

    response = _post(supplier_client, withdraw, {"withdraw-reason": "x" * 2_001}, page)
    assert response.status_code == 422 and 'id="withdraw-reason-errors"' in _text(response)
    assert _post(buyer_client, withdraw, {}, page).status_code == 403  # the buyer supplies not
    session.expire_all()
    assert session.get(DealQuote, quote.id).status == "submitted"

    response = _post(supplier_client, withdraw, {}, page)  # the reason is optional
    assert response.status_code == 302 and response.location.endswith(page)
    shown = _text(supplier_client.get(page))
    assert "Quote withdrawn" in shown and ">withdrawn<" in shown
    assert "Withdraw quote" not in shown
    session.expire_all()
    assert session.get(DealQuote, quote.id).status == "withdrawn"
    assert session.get(Demand, demand.id).status == "open"
    # The buyer sees it withdrawn with nothing to accept; accepting it anyway is refused.
    buyer_page = _text(buyer_client.get(page))
    assert ">withdrawn<" in buyer_page and 'action="/quotes/' not in buyer_page
    response = _post(buyer_client, f"/quotes/{quote.id}/accept",
                     {f"quote-{quote.id}-payment_method": "bank_transfer"}, page)
    assert response.status_code == 409 and "withdrawn; it cannot be accepted" in _text(response)
    response = _post(supplier_client, withdraw, {}, page)
    assert response.status_code == 409 and "only a quote awaiting" in _text(response)


def test_cancelling_and_withdrawing_speak_chinese(buyer_client, supplier_client, session, shop):
    for client in (buyer_client, supplier_client):
        client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN"
    first, second = _post_demand(buyer_client, session), _post_demand(buyer_client, session)
    for demand in (first, second):
        assert _quote(supplier_client, demand, shop).status_code == 302
    quote = _quote_on(session, first)
    page = f"/demands/{first.id}"
    assert "取消需求" in _text(buyer_client.get(page)) and "取消原因" in _text(buyer_client.get(page))
    assert "撤回报价" in _text(supplier_client.get(page))

    response = _post(supplier_client, f"/quotes/{quote.id}/withdraw",
                     {"withdraw-reason": "产能不足"}, page)
    assert response.status_code == 302
    shown = _text(supplier_client.get(page))
    assert "报价已撤回" in shown and ">已撤回<" in shown
    response = _post(buyer_client, f"/demands/{second.id}/cancel",
                     {"cancel-reason": "项目已终止"}, f"/demands/{second.id}")
    assert response.status_code == 302
    shown = _text(buyer_client.get(f"/demands/{second.id}"))
    assert "需求已取消" in shown and ">已取消<" in shown and ">已拒绝<" in shown


def test_form_errors_are_shown_on_the_page(buyer_client, supplier_client, session, shop):
    past = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    response = _post(buyer_client, "/demands", _demand_form(deadline=past), "/demands")
    assert response.status_code == 422 and "must be in the future" in _text(response)
    demand = _post_demand(buyer_client, session)
    response = _quote(supplier_client, demand, shop, criterion_structural_integrity="10")
    assert response.status_code == 422 and "asks for at least 50" in _text(response)


def test_the_buyer_disputes_on_the_deal_page(buyer_client, supplier_client, session, shop):
    deal = _deal(buyer_client, supplier_client, session, shop)
    response = _post(buyer_client, f"/deals/{deal.id}/dispute", {"reason": "Late"},
                     f"/deals/{deal.id}")
    assert response.status_code == 302, _text(response)
    session.expire_all()
    assert session.get(Deal, deal.id).status == "disputed"
    assert "Late" in _text(buyer_client.get(f"/deals/{deal.id}"))


def test_pages_need_sign_in_and_open_demands_need_a_supplier(client, buyer_client):
    for path in ("/subscriptions", "/demands", "/demands/open"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.location
    assert buyer_client.get("/demands/open").status_code == 403


@pytest.mark.parametrize("language, words", [
    ("en", ("Subscriptions", "Custom data")),
    ("zh-CN", ("电网负荷数据",)),
])
def test_every_page_renders_in_english_and_chinese(buyer_client, supplier_client,
                                                   session, shop, language, words):
    _subscribe(buyer_client, shop)
    deal = _deal(buyer_client, supplier_client, session, shop)
    for client in (buyer_client, supplier_client):
        client.environ_base["HTTP_ACCEPT_LANGUAGE"] = language
    pages = [(buyer_client, path) for path in (
        "/subscriptions", "/demands", f"/demands/{deal.demand_id}", f"/deals/{deal.id}",
        f"/datasets/{shop['dataset'].id}")]
    pages += [(supplier_client, path) for path in (
        "/demands/open", f"/demands/{deal.demand_id}", f"/deals/{deal.id}")]
    for client, path in pages:
        assert client.get(path).status_code == 200, path
    listing = _text(buyer_client.get("/subscriptions"))
    for word in words:
        assert word in listing


def test_delivery_the_acceptance_check_and_a_waiver(buyer_client, supplier_client,
                                                    finance_client, session, shop):
    # Annotation accuracy is not assessed without expert labels: that criterion fails.
    deal = _deal(buyer_client, supplier_client, session, shop,
                 criterion_annotation_accuracy="10")
    deposit = next(o for o in deals.milestone_orders(session, deal) if o.milestone == "deposit")
    _pay(buyer_client, finance_client, session, deposit.id)
    response = _post(supplier_client, f"/deals/{deal.id}/deliver", {"version": "1"},
                     f"/deals/{deal.id}")
    assert response.status_code == 302, _text(response)
    session.expire_all()
    deal = session.get(Deal, deal.id)
    page = _text(buyer_client.get(f"/deals/{deal.id}"))
    assert "v1" in page and "Accept delivery" in page
    for name, check in deal.acceptance.items():
        assert (">pass<" if check["passed"] else ">fail<") in page
    assert not deal.acceptance["annotation_accuracy"]["passed"]
    assert "not assessed" in page and "reason for waiving" in page
    response = _post(buyer_client, f"/deals/{deal.id}/accept", {"waiver_reason": ""},
                     f"/deals/{deal.id}")
    assert response.status_code == 422 and "waive the failures" in _text(response)
    response = _post(buyer_client, f"/deals/{deal.id}/accept",
                     {"waiver_reason": "Good enough for a pilot"}, f"/deals/{deal.id}")
    assert response.status_code == 302, _text(response)
    session.expire_all()
    assert session.get(Deal, deal.id).status == "accepted"
    assert "Good enough for a pilot" in _text(buyer_client.get(f"/deals/{deal.id}"))
