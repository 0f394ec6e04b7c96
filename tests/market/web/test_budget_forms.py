"""The budget forms and every purchase form charging a budget line, driven through the
storefront: a budget and its line set up on the pages, amended (an increase, then a decrease
refused with its shortfall); a subscription through its confirmation page with a line and a
purchase-order number; a token pack charged to a line; what people who do not manage budgets
may not do; the pages in English and Chinese."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from billing.models import Budget, BudgetLine, Order, Subscription
from market.core.db import utcnow
from tests.billing.shop import buyer, listed_dataset
from tests.fixtures import csrf_token

PLAN = {"kind": "subscription", "code": "monthly", "period": "month",
        "price": {"amount": "2000.00", "currency": "CNY"}, "included_tokens": 5_000_000,
        "overage_per_million": {"amount": "3.00", "currency": "CNY"}}
METERED = {"kind": "metered", "code": "api",
           "tiers": [{"from_tokens": 0, "up_to": None,
                      "price_per_million": {"amount": "12.50", "currency": "CNY"}}]}
YEAR = utcnow().year


@pytest.fixture()
def shop(session, passwords):
    return listed_dataset(session, passwords, extra_offers=[PLAN, METERED])


@pytest.fixture()
def buyer_org(session, passwords, shop):
    org, _, _ = buyer(session, passwords)
    session.commit()
    return org


@pytest.fixture()
def owner_client(sign_in_as, buyer_org):
    return sign_in_as(buyer_org, "owner")


@pytest.fixture()
def plan(shop):
    return next(o for o in shop["offers"] if o.kind == "subscription")


def _post(client, path, data=None, page="/"):
    return client.post(path, data={**(data or {}), "csrf_token": csrf_token(client, page)})


def _text(response) -> str:
    return response.get_data(as_text=True)


def _create_budget(client, **changes) -> int:
    form = {"fiscal_year": YEAR, "currency": "CNY", "name": "Data budget",
            "enforcement": "block", "thresholds": "50, 80, 90, 100",
            "alert_email": "budget@example.org", "webhook_url": "", **changes}
    response = _post(client, "/budgets", form, "/budgets")
    assert response.status_code == 302, _text(response)
    return int(re.search(r"/budgets/(\d+)$", response.location).group(1))


def _add_line(client, budget_id, **changes) -> BudgetLine:
    form = {"code": "L01", "name": "Grid data", "category": "data_purchase",
            "project": "Load forecasting", "sector": "smart_energy", "approved": "10000.00",
            **changes}
    response = _post(client, f"/budgets/{budget_id}/lines", form, f"/budgets/{budget_id}")
    assert response.status_code == 302, _text(response)
    return form


def _line(session, budget_id, code="L01") -> BudgetLine:
    session.expire_all()
    return session.scalar(select(BudgetLine).where(BudgetLine.budget_id == budget_id,
                                                   BudgetLine.code == code))


def _amend(client, budget_id, line_id, **form):
    prefixed = {f"line-{line_id}-{name}": value for name, value in form.items()}
    return _post(client, f"/budgets/{budget_id}/lines/{line_id}/amendments", prefixed,
                 f"/budgets/{budget_id}")


def _subscribe(client, session, plan, line_id, po="PO-2026-001") -> Order:
    """Subscribe through the confirmation page, charging the line; the first order."""
    response = _post(client, "/subscriptions",
                     {"offer_id": plan.id, "confirmed": "1", "payment_method": "bank_transfer",
                      "budget_line_id": line_id, "purchase_order_number": po},
                     f"/subscriptions/new?offer_id={plan.id}")
    assert response.status_code == 302, _text(response)
    order_id = int(re.search(r"/orders/(\d+)$", response.location).group(1))
    session.expire_all()
    return session.get(Order, order_id)


def test_a_budget_and_its_line_set_up_and_amended_on_the_pages(owner_client, session,
                                                              buyer_org, plan):
    page = _text(owner_client.get("/budgets"))
    assert 'action="/budgets"' in page
    assert re.search(rf'name="fiscal_year"[^>]*value="{YEAR}"', page)
    assert 'value="CNY"' in page and 'value="50, 80, 90, 100"' in page

    budget_id = _create_budget(owner_client, require_purchase_order="y")
    budget = session.get(Budget, budget_id)
    assert (budget.organization_id, budget.fiscal_year, budget.currency) == (
        buyer_org.id, YEAR, "CNY")
    assert budget.thresholds == [50, 80, 90, 100] and budget.require_purchase_order
    assert budget.alert_email == "budget@example.org"

    detail = _text(owner_client.get(f"/budgets/{budget_id}"))
    assert f'action="/budgets/{budget_id}/lines"' in detail and "Smart energy" in detail
    _add_line(owner_client, budget_id, default_for_api="y")
    line = _line(session, budget_id)
    assert line.approved_minor == 1_000_000 and line.sector == "smart_energy"
    assert line.project == "Load forecasting" and line.default_for_api

    response = _amend(owner_client, budget_id, line.id, kind="increase", amount="5000.00",
                      reason="Second project approved")
    assert response.status_code == 302, _text(response)
    assert _line(session, budget_id).approved_minor == 1_500_000

    order = _subscribe(owner_client, session, plan, line.id)
    assert order.total_minor == 212_000
    # Taking 14,000 off 15,000 would leave 1,000 for the 2,120 committed.
    response = _amend(owner_client, budget_id, line.id, kind="decrease", amount="14000.00",
                      reason="Cut")
    assert response.status_code == 422
    text = _text(response)
    assert f'id="line-{line.id}-amount-errors"' in text
    assert "would leave it short by CNY 1,120.00" in text
    assert _line(session, budget_id).approved_minor == 1_500_000


def test_a_transfer_moves_approved_money_to_another_line(owner_client, session):
    budget_id = _create_budget(owner_client)
    _add_line(owner_client, budget_id)
    _add_line(owner_client, budget_id, code="L02", name="Compute", category="compute",
              sector="", approved="0")
    source, target = _line(session, budget_id), _line(session, budget_id, "L02")
    # A transfer names its receiving line.
    response = _amend(owner_client, budget_id, source.id, kind="transfer", amount="100.00",
                      reason="Moved")
    assert response.status_code == 422 and f'id="line-{source.id}-to_line_id-errors"' in \
        _text(response)
    response = _amend(owner_client, budget_id, source.id, kind="transfer", amount="100.00",
                      to_line_id=target.id, reason="Moved")
    assert response.status_code == 302, _text(response)
    assert _line(session, budget_id).approved_minor == 990_000
    assert _line(session, budget_id, "L02").approved_minor == 10_000


def test_the_services_refusals_are_shown_at_their_fields(owner_client, session):
    bad = _post(owner_client, "/budgets", {"fiscal_year": YEAR, "currency": "CNY",
                                           "name": "B", "enforcement": "block",
                                           "thresholds": "50, 120"}, "/budgets")
    assert bad.status_code == 422 and 'id="thresholds-errors"' in _text(bad)
    bad = _post(owner_client, "/budgets", {"fiscal_year": YEAR, "currency": "USD",
                                           "name": "B", "enforcement": "block",
                                           "thresholds": "50"}, "/budgets")
    assert bad.status_code == 422 and 'id="currency-errors"' in _text(bad)
    assert "does not buy in USD" in _text(bad)
    budget_id = _create_budget(owner_client)
    again = _post(owner_client, "/budgets", {"fiscal_year": YEAR, "currency": "CNY",
                                             "name": "Again", "enforcement": "warn",
                                             "thresholds": "100"}, "/budgets")
    assert again.status_code == 422 and 'id="fiscal_year-errors"' in _text(again)
    assert "already has a" in _text(again)
    _add_line(owner_client, budget_id)
    duplicate = _post(owner_client, f"/budgets/{budget_id}/lines",
                      {"code": "L01", "name": "Again", "category": "other",
                       "approved": "1.00"}, f"/budgets/{budget_id}")
    assert duplicate.status_code == 422 and 'id="code-errors"' in _text(duplicate)
    session.expire_all()
    assert len(session.scalars(select(Budget)).all()) == 1


def test_the_dataset_pages_subscribe_leads_to_the_confirmation_page(owner_client, session,
                                                                    buyer_org, shop, plan):
    budget_id = _create_budget(owner_client)
    _add_line(owner_client, budget_id)
    line = _line(session, budget_id)
    dataset_page = f"/datasets/{shop['dataset'].id}"
    response = _post(owner_client, "/subscriptions",
                     {"offer_id": plan.id, "payment_method": "bank_transfer"}, dataset_page)
    assert response.status_code == 302
    assert f"/subscriptions/new?offer_id={plan.id}" in response.location
    session.expire_all()
    assert session.scalar(select(Subscription.id)) is None

    page = _text(owner_client.get(response.location))
    assert "Grid load series" in page and "monthly" in page
    assert "CNY 2,000.00" in page and "CNY 120.00" in page and "CNY 2,120.00" in page
    assert "5,000,000" in page and "6%" in page.replace(" %", "%")
    assert f'<option value="{line.id}">L01 — Grid data (CNY 10,000.00 left)</option>' in page

    order = _subscribe(owner_client, session, plan, line.id, po="PO-77")
    assert order.budget_line_id == line.id and order.purchase_order_number == "PO-77"
    assert _line(session, budget_id).committed_minor == order.total_minor == 212_000
    assert "CNY 7,880.00 left" in _text(owner_client.get(f"/subscriptions/new?offer_id="
                                                         f"{plan.id}"))


def test_a_refusal_is_shown_on_the_confirmation_page(owner_client, session, plan):
    budget_id = _create_budget(owner_client, require_purchase_order="y")
    _add_line(owner_client, budget_id, approved="1000.00")
    line = _line(session, budget_id)
    page = f"/subscriptions/new?offer_id={plan.id}"
    form = {"offer_id": plan.id, "confirmed": "1", "payment_method": "bank_transfer"}
    response = _post(owner_client, "/subscriptions", form, page)
    assert response.status_code == 422 and 'id="budget_line_id-errors"' in _text(response)
    response = _post(owner_client, "/subscriptions", {**form, "budget_line_id": line.id}, page)
    assert response.status_code == 422
    assert 'id="purchase_order_number-errors"' in _text(response)
    response = _post(owner_client, "/subscriptions",
                     {**form, "budget_line_id": line.id, "purchase_order_number": "PO-1"}, page)
    assert response.status_code == 422 and "short by CNY 1,120.00" in _text(response)
    session.expire_all()
    assert session.scalar(select(Subscription.id)) is None
    assert _line(session, budget_id).committed_minor == 0


def test_an_organization_without_a_budget_subscribes_at_once(owner_client, session, shop,
                                                             plan):
    response = _post(owner_client, "/subscriptions",
                     {"offer_id": plan.id, "payment_method": "bank_transfer"},
                     f"/datasets/{shop['dataset'].id}")
    assert response.status_code == 302 and re.search(r"/orders/\d+$", response.location)


def test_a_token_pack_is_charged_to_a_budget_line(owner_client, session, shop):
    budget_id = _create_budget(owner_client)
    _add_line(owner_client, budget_id)
    line = _line(session, budget_id)
    holdings = _text(owner_client.get("/holdings"))
    assert 'name="budget_line_id"' in holdings and 'name="purchase_order_number"' in holdings
    form = {"millions": 2, "dataset_id": shop["dataset"].id, "payment_method": "bank_transfer"}
    refused = _post(owner_client, "/holdings/token-packs", form, "/holdings")
    assert refused.status_code == 422 and 'id="budget_line_id-errors"' in _text(refused)
    response = _post(owner_client, "/holdings/token-packs",
                     {**form, "budget_line_id": line.id, "purchase_order_number": "PO-9"},
                     "/holdings")
    assert response.status_code == 302, _text(response)
    session.expire_all()
    order = session.get(Order, int(response.location.rsplit("/", 1)[1]))
    assert order.budget_line_id == line.id and order.purchase_order_number == "PO-9"
    assert order.total_minor == 2_650  # 2 × 12.50 + 6%
    assert _line(session, budget_id).committed_minor == 2_650


@pytest.mark.parametrize("role", ["member", "reviewer"])
def test_people_who_do_not_manage_budgets_see_no_forms(sign_in_as, owner_client, session,
                                                       buyer_org, role):
    budget_id = _create_budget(owner_client)
    _add_line(owner_client, budget_id)
    line = _line(session, budget_id)
    reader = sign_in_as(buyer_org, role)
    listing, detail = reader.get("/budgets"), reader.get(f"/budgets/{budget_id}")
    assert listing.status_code == detail.status_code == 200
    assert "Data budget" in _text(listing) and 'action="/budgets"' not in _text(listing)
    assert "L01" in _text(detail) and "/amendments" not in _text(detail)
    assert f'action="/budgets/{budget_id}/lines"' not in _text(detail)
    assert _post(reader, "/budgets", {"fiscal_year": YEAR + 1, "currency": "CNY",
                                      "name": "Mine", "enforcement": "block",
                                      "thresholds": "50"}).status_code == 403
    assert _post(reader, f"/budgets/{budget_id}/lines",
                 {"code": "X", "name": "X", "category": "other",
                  "approved": "1.00"}).status_code == 403
    assert _amend(reader, budget_id, line.id, kind="increase", amount="1.00",
                  reason="x").status_code == 403
    assert _line(session, budget_id).approved_minor == 1_000_000


def test_finance_manages_budgets_too(sign_in_as, buyer_org):
    finance = sign_in_as(buyer_org, "finance")
    assert 'action="/budgets"' in _text(finance.get("/budgets"))
    assert _create_budget(finance)


def test_another_organizations_budget_is_not_found(owner_client, sign_in_as, session,
                                                   passwords):
    budget_id = _create_budget(owner_client)
    _add_line(owner_client, budget_id)
    line = _line(session, budget_id)
    other, _, _ = buyer(session, passwords)
    session.commit()
    stranger = sign_in_as(other, "owner")
    assert stranger.get(f"/budgets/{budget_id}").status_code == 404
    assert _post(stranger, f"/budgets/{budget_id}/lines",
                 {"code": "X", "name": "X", "category": "other",
                  "approved": "1.00"}).status_code == 404
    assert _amend(stranger, budget_id, line.id, kind="increase", amount="1.00",
                  reason="x").status_code == 404


@pytest.mark.parametrize("language, words", [
    ("en", ("Set up a budget", "Add a line", "Smart energy", "Grid load series")),
    ("zh-CN", ("智慧能源", "电网负荷数据")),
])
def test_the_pages_render_in_english_and_chinese(owner_client, session, plan, language,
                                                 words):
    budget_id = _create_budget(owner_client)
    _add_line(owner_client, budget_id)
    owner_client.environ_base["HTTP_ACCEPT_LANGUAGE"] = language
    pages = {path: owner_client.get(path) for path in (
        "/budgets", f"/budgets/{budget_id}", f"/subscriptions/new?offer_id={plan.id}",
        "/holdings")}
    for path, response in pages.items():
        assert response.status_code == 200, path
    text = "".join(_text(response) for response in pages.values())
    for word in words:
        assert word in text
