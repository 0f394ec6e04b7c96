"""A model company's whole journey, driven over HTTP by the Python client against the live app.

The company's owner has an admin key (made in the storefront, arranged here); with the client it
makes a key for its model service, buys a dataset's token pack and pays it by bank transfer
(platform finance records the transfer, arranged here), reads records within a ``max_tokens``
budget, searches, retries a call whose answer was lost without paying twice, reads its usage,
reports royalty usage, and reads a 402 by its ``code``. One test per step, in that order; each
step stands on the module's fixtures alone, so any of them runs by itself.
"""

from __future__ import annotations

import datetime as dt

import pytest

from billing.payments import bank_transfer
from billing.models import Invoice
from market.core.db import business_calendar, utcnow
from market_client import MarketClient, PaymentRequired
from pricing.money import Money
from tests.billing.shop import RECORDS, buyer, listed_dataset, platform_finance
from tests.factories import make_key
from tests.lossy_proxy import LossyProxy

METERED = {"kind": "metered", "code": "api", "mode": "graduated", "tiers": [
    {"from_tokens": 0, "up_to": None, "price_per_million": {"amount": "30", "currency": "CNY"}}]}
SERVICE_SCOPES = ["catalog:read", "data:read", "usage:read", "usage:write", "billing:read",
                  "billing:write"]


@pytest.fixture(scope="module")
def market(live_app) -> dict:
    """What other parties set up, committed: a supplier's two listed datasets with a metered
    price, the model company with its owner's admin key, and the platform's finance person."""
    passwords = live_app.app.extensions["market.passwords"]
    with live_app.session() as session, session.begin():
        bought = listed_dataset(session, passwords, extra_offers=[METERED])
        other = listed_dataset(session, passwords, extra_offers=[METERED])
        company, _, _ = buyer(session, passwords)
        _, admin_secret = make_key(session, company)  # every scope, keys:manage among them
        _, _, finance = platform_finance(session, passwords)
        return {"dataset": bought["dataset"].id, "other_dataset": other["dataset"].id,
                "company": company.id, "admin_secret": admin_secret, "finance": finance}


@pytest.fixture(scope="module")
def admin(live_app, market):
    with live_app.client(market["admin_secret"]) as client:
        yield client


@pytest.fixture(scope="module")
def service_key(admin) -> dict:
    """The key the model service calls with, made through the API; its secret shown once."""
    return admin.create_key("model service", SERVICE_SCOPES, requests_per_minute=600,
                            expires_at=_in_a_month())


@pytest.fixture(scope="module")
def service(live_app, service_key):
    with live_app.client(service_key["secret"]) as client:
        yield client


@pytest.fixture(scope="module")
def wallet(live_app, market, service) -> dict:
    """A million tokens of the bought dataset, bought and paid by bank transfer; the paid order."""
    order = service.buy_token_pack(1, dataset_id=market["dataset"])
    paying = service.pay_order(order["id"], "bank_transfer")
    _finance_records_the_transfer(live_app, market["finance"], paying["invoice"])
    return service.get_order(order["id"])


def _finance_records_the_transfer(live_app, finance, invoice: dict) -> None:
    due = invoice["amount_due"]
    with live_app.session() as session, session.begin():
        bank_transfer.record_bank_receipt(
            session, finance, session.get(Invoice, invoice["id"]),
            amount=Money(str(due["amount"]), due["currency"]),
            received_on=business_calendar(session).day_of(utcnow()),
            bank_reference=f"BANK-{invoice['payment_reference']}",
            settings=live_app.app.extensions["market.billing"])


def _in_a_month() -> dt.datetime:
    # A key made by a key must expire (a machine mints temporary credentials).
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)


def _balance(client: MarketClient, dataset_id: int) -> int:
    return sum(w["balance_tokens"] for w in client.holdings()["wallets"]
               if w["dataset_id"] == dataset_id)


def _tokens(client: MarketClient, record: dict) -> int:
    return client.count_tokens(record=record)["tokens"]


def test_a_key_made_with_the_client_acts_for_the_company(admin, service, service_key, market):
    me = service.me()
    assert me["organization"]["id"] == market["company"]
    assert me["api_key_prefix"] == service_key["prefix"]
    assert sorted(me["scopes"]) == sorted(SERVICE_SCOPES)
    assert service_key["prefix"] in {key["prefix"] for key in admin.iter_keys()}


def test_a_token_pack_paid_by_bank_transfer_fills_the_datasets_wallet(service, market, wallet):
    assert wallet["status"] == "paid"
    assert wallet["total"] == {"amount": "31.80", "currency": "CNY"}  # 30.00 and 6% VAT
    assert _balance(service, market["dataset"]) == 1_000_000


def test_the_catalogue_and_a_version_are_read_free(service, market, wallet):
    found = {item["dataset"]["id"] for item in service.iter_datasets(q="Grid", limit=1)}
    assert {market["dataset"], market["other_dataset"]} <= found
    before = _balance(service, market["dataset"])
    version = service.get_version(market["dataset"], 1)
    assert version["records"] == len(RECORDS)
    assert _balance(service, market["dataset"]) == before


def test_records_stop_before_max_tokens_and_say_there_is_more(service, market, wallet):
    """Needs ``max_tokens`` and ``has_more`` on the records endpoint."""
    first, second, third = (_tokens(service, record) for record in RECORDS)
    before = _balance(service, market["dataset"])
    page = service.records(market["dataset"], 1, limit=3, max_tokens=first + second - 1)
    assert page.records == RECORDS[:1]
    assert page.has_more and page.next_cursor is not None
    assert page.usage.tokens == page.tokens_charged == first
    assert page.usage.paid_by == "wallet"
    rest = service.records(market["dataset"], 1, cursor=page.next_cursor, limit=3)
    assert rest.records == RECORDS[1:] and not rest.has_more and rest.next_cursor is None
    assert _balance(service, market["dataset"]) == before - first - second - third
    # Page after page within a budget each: every record once, in order.
    pages = list(service.iter_record_pages(market["dataset"], 1, limit=3,
                                           max_tokens=max(first, second, third)))
    assert [record for p in pages for record in p.records] == RECORDS
    assert all(p.usage.tokens <= max(first, second, third) for p in pages)


def test_search_is_charged_the_tokens_it_serves(service, market, wallet):
    before = _balance(service, market["dataset"])
    page = service.search(market["dataset"], 1, "mri")
    assert page.records == [RECORDS[1]]
    assert page.usage.tokens == page.tokens_charged == _tokens(service, RECORDS[1])
    assert page.usage.paid_by == "wallet" and not page.replayed
    assert page.tokens_remaining is not None and page.rate_limits.limit_requests == 600
    assert page.request_id and page.request_id.startswith("req_")
    assert _balance(service, market["dataset"]) == before - page.usage.tokens


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_call_whose_answer_was_lost_is_retried_and_charged_once(live_app, service_key, market,
                                                                  service, wallet, method):
    version = f"/api/v1/datasets/{market['dataset']}/versions/1"
    proxy = LossyProxy(live_app.url)
    try:
        with live_app.client(service_key["secret"], proxy.url) as through:
            before = _balance(service, market["dataset"])
            if method == "GET":
                proxy.lose_answer("GET", f"{version}/records")
                page = through.records(market["dataset"], 1, limit=2)
            else:
                proxy.lose_answer("POST", f"{version}/search")
                page = through.search(market["dataset"], 1, "report")
    finally:
        proxy.close()
    assert [what for _, _, what in proxy.seen] == ["answer lost", "200"]
    assert page.replayed and page.records
    assert _balance(service, market["dataset"]) == before - page.usage.tokens


def test_a_replay_is_the_first_answer_and_says_it_charged_nothing(service, market, wallet):
    """Needs replays that send ``X-Tokens-Charged: 0``."""
    before = _balance(service, market["dataset"])
    first = service.records(market["dataset"], 1, limit=2, idempotency_key="journey-replay-1")
    again = service.records(market["dataset"], 1, limit=2, idempotency_key="journey-replay-1")
    assert not first.replayed and again.replayed
    assert again.records == first.records and again.usage.tokens == first.usage.tokens
    assert (first.tokens_charged, again.tokens_charged) == (first.usage.tokens, 0)
    assert _balance(service, market["dataset"]) == before - first.usage.tokens


def test_usage_adds_up_every_call_of_a_key(live_app, admin, market, wallet):
    key = admin.create_key("usage reader", ["data:read", "usage:read"],
                           expires_at=_in_a_month())
    with live_app.client(key["secret"]) as client:
        calls = [client.records(market["dataset"], 1, limit=1),
                 client.search(market["dataset"], 1, "report")]
        report = client.usage(group_by="key")
    mine = [row for row in report["rows"] if row["key_prefix"] == key["prefix"]]
    assert sum(row["tokens"] for row in mine) == sum(c.usage.tokens for c in calls)
    assert sum(row["calls"] for row in mine) == 2
    assert {row["paid_by"] for row in report["by_paid_by"]} >= {"wallet"}


def test_royalty_reports_get_one_outcome_each(service, market):
    now = dt.datetime.now(dt.timezone.utc)
    events = [{"id": "journey-royalty-1", "dataset_id": market["dataset"], "tokens": 1_000,
               "occurred_at": now, "model": "model-7b"},
              {"id": "journey-royalty-2", "dataset_id": 2_000_000_000, "tokens": 10,
               "occurred_at": now}]
    result = service.report_usage(events)
    assert [r["id"] for r in result["results"]] == ["journey-royalty-1", "journey-royalty-2"]
    assert [r["error"]["code"] for r in result["results"]] == ["no_royalty_price", "not_found"]
    assert result["rejected"] == 2


def test_a_call_nothing_pays_for_is_a_402_read_by_its_code(service, market, wallet):
    """Needs the 402's ``code`` insufficient_tokens and its ``tokens_needed``/``_available``.
    The wallet holds the bought dataset's tokens only; the other dataset has nothing to pay."""
    with pytest.raises(PaymentRequired) as refused:
        service.records(market["other_dataset"], 1, limit=3)
    error = refused.value
    assert error.status == 402 and error.code == "insufficient_tokens"
    assert error.tokens_needed == sum(_tokens(service, record) for record in RECORDS)
    assert error.tokens_available is not None and error.tokens_available < error.tokens_needed
    assert error.request_id and error.request_id == error.headers.get("X-Request-Id")


def test_a_keys_monthly_cap_is_a_402_of_its_own_code(live_app, admin, market, wallet):
    """Needs the 402's ``code`` monthly_cap_reached."""
    key = admin.create_key("capped", ["data:read"], monthly_token_cap=1,
                           expires_at=_in_a_month())
    with live_app.client(key["secret"]) as client, pytest.raises(PaymentRequired) as refused:
        client.records(market["dataset"], 1, limit=1)
    assert refused.value.code == "monthly_cap_reached"
    assert "monthly_token_cap" in refused.value.errors
