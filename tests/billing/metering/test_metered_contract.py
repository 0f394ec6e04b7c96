"""The metered API's contract, as a model company integrating it relies on: a stable ``code``
for every refusal, with the tokens needed and available on a 402; the token and rate-limit
headers on every answer, refusals included, ``X-Tokens-Remaining`` being what the key may still
spend; ``max_tokens`` with ``has_more``; replays identical to the original; list values for
every payer; and the usage report by the period charged."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from billing import entitlements
from billing.budgets import lines as budgets
from billing.metering.charge import period_of
from billing.models import (
    CreditLine, Entitlement, Subscription, TokenWallet, UsageEvent,
)
from market.web import idempotency
from market.catalog.models import DatasetRecord
from market.core.db import business_calendar, utcnow
from pricing.money import Money
from tests.billing.metering.metered_calls import fund as _fund
from tests.billing.metering.metered_calls import records as _records
from tests.billing.metering.metered_calls import search as _search
from tests.billing.shop import buyer, listed_dataset
from tests.factories import make_key

# 3,000 CNY per million tokens: 0.3 fen a token, so a record of 20 tokens costs 6 fen.
METERED = {"kind": "metered", "code": "api", "mode": "graduated", "tiers": [
    {"from_tokens": 0, "up_to": None,
     "price_per_million": {"amount": "3000", "currency": "CNY"}}]}
PLAN = {"kind": "subscription", "code": "basic", "period": "month",
        "price": {"amount": "99.00", "currency": "CNY"}, "included_tokens": 1_000_000,
        "overage_per_million": {"amount": "10", "currency": "CNY"}, "rollover": False}
ROYALTY = {"kind": "royalty", "code": "royalty", "mode": "graduated", "tiers": [
    {"from_tokens": 0, "up_to": None, "price_per_million": {"amount": "30", "currency": "CNY"}}]}
RATE_HEADERS = tuple(f"x-ratelimit-{what}-{unit}" for what in ("limit", "remaining", "reset")
                     for unit in ("requests", "tokens"))


@pytest.fixture()
def shop(session, passwords):
    made = listed_dataset(session, passwords, extra_offers=[METERED, PLAN, ROYALTY])
    made["tokens"] = session.scalars(select(DatasetRecord.tokens).where(
        DatasetRecord.version_id == made["version"].id).order_by(DatasetRecord.seq)).all()
    made["seqs"] = session.scalars(select(DatasetRecord.seq).where(
        DatasetRecord.version_id == made["version"].id).order_by(DatasetRecord.seq)).all()
    return made


@pytest.fixture()
def model_co(session, passwords):
    org, user, principal = buyer(session, passwords)
    session.flush()
    org.principal = principal
    return org


def _key(session, org, **limits):
    key, secret = make_key(session, org, scopes=("data:read", "usage:read", "usage:write"),
                           **limits)
    session.commit()
    return key, {"Authorization": f"Bearer {secret}"}


def _credit(session, org, limit_minor=10_000_000):
    session.add(CreditLine(organization_id=org.id, currency="CNY", limit_minor=limit_minor))
    session.commit()


def _api_line(session, org, approved: str, enforcement="block"):
    year = business_calendar(session).year_of(utcnow())
    budget = budgets.create_budget(session, org.principal, fiscal_year=year, currency="CNY",
                                   name="Model services", enforcement=enforcement)
    line = budgets.add_line(session, org.principal, budget, code="API", name="LLM data API",
                            category="model_services", approved=Money(approved, "CNY"),
                            default_for_api=True)
    session.commit()
    return line


def _subscribe(session, org, shop, included=60):
    today = dt.date.today()
    plan = next(o for o in shop["dataset"].active_offers if o.kind == "subscription")
    sub = Subscription(organization_id=org.id, dataset_id=shop["dataset"].id,
                       offer_id=plan.id, status="active", payment_method="bank_transfer",
                       current_period_start=today, current_period_end=today + dt.timedelta(30),
                       included_tokens=included, rollover_tokens=0, tokens_used=0)
    session.add(sub)
    session.flush()
    session.add(Entitlement(organization_id=org.id, dataset_id=shop["dataset"].id,
                            kind="api", subscription_id=sub.id))
    session.commit()
    return sub


def _events(session):
    return session.scalar(select(func.count()).select_from(UsageEvent))


def _balance(session, org):
    return session.scalar(select(func.coalesce(func.sum(TokenWallet.balance_tokens), 0)).where(
        TokenWallet.organization_id == org.id))


def _assert_metered_headers(response, charged, remaining):
    assert response.headers["X-Tokens-Charged"] == str(charged)
    assert response.headers["X-Tokens-Remaining"] == str(remaining)
    for name in RATE_HEADERS:
        assert name in response.headers, name


def _most_tokens(fen: int) -> int:
    """The most tokens at 0.3 fen each, rounded half up once, that cost at most ``fen``."""
    return (10 * fen + 5 - 1) // 3


# Refusals: a stable code, what was needed and what is available, and the headers -----------

def _nothing(session, org, shop):
    pass


def _capped(session, org, shop):
    _fund(session, org, 1_000_000)
    return {"monthly_token_cap": 10}


def _limit_reached(session, org, shop):
    _credit(session, org, limit_minor=0)


def _budget_exhausted(session, org, shop):
    _credit(session, org)
    _api_line(session, org, "0.01")


@pytest.mark.parametrize("arrange, code, field, available", [
    (_nothing, "insufficient_tokens", "tokens", 0),
    (_capped, "monthly_cap_reached", "monthly_token_cap", 10),
    # Nothing left on the line, but one token costs 0.3 fen, rounded to nothing.
    (_limit_reached, "credit_limit_reached", "credit_line", _most_tokens(0)),
    # 0.01 CNY left on the line: four tokens (1.2 fen, rounded to 1).
    (_budget_exhausted, "budget_line_exhausted", "budget_line", _most_tokens(1)),
])
def test_a_402_names_its_cause_the_tokens_needed_and_available(
        client, session, shop, model_co, arrange, code, field, available):
    limits = arrange(session, model_co, shop) or {}
    _, headers = _key(session, model_co, **limits)
    balance = _balance(session, model_co)
    response = _records(client, shop, headers, limit=2)
    assert response.status_code == 402, response.get_json()
    problem = response.get_json()
    assert (problem["code"], problem["status"]) == (code, 402)
    assert field in problem["errors"]
    assert problem["tokens_needed"] == sum(shop["tokens"][:2])
    assert problem["tokens_available"] == available
    assert problem["type"].endswith(code) and problem["request_id"]
    _assert_metered_headers(response, 0, available)
    assert _events(session) == 0 and _balance(session, model_co) == balance


def test_a_dataset_without_a_pay_as_you_go_price_is_402_no_metered_price(
        client, session, passwords, model_co):
    plain = listed_dataset(session, passwords)  # no metered offer
    session.commit()
    # The supplier calls its own dataset: allowed, but nothing can price it.
    supplier_key, secret = make_key(session, plain["supplier"], scopes=("data:read",))
    session.commit()
    response = _records(client, plain, {"Authorization": f"Bearer {secret}"})
    assert response.status_code == 402
    assert response.get_json()["code"] == "no_metered_price"
    assert response.get_json()["tokens_available"] == 0
    _assert_metered_headers(response, 0, 0)
    # A buyer neither entitled nor able to pay as it goes: 403 not_entitled, headers too.
    _fund(session, model_co, 500)
    _, headers = _key(session, model_co)
    refused = _records(client, plain, headers)
    assert refused.status_code == 403
    assert (refused.get_json()["code"], list(refused.get_json()["errors"])) == (
        "not_entitled", ["dataset"])
    _assert_metered_headers(refused, 0, 500)


def test_a_429_carries_its_code_retry_after_and_the_token_headers(client, session, shop,
                                                                 model_co):
    _fund(session, model_co, 1_000)
    _, headers = _key(session, model_co, requests_per_minute=1)
    first = _records(client, shop, headers, limit=1)
    assert first.status_code == 200
    refused = _records(client, shop, headers, limit=1)
    assert refused.status_code == 429
    problem = refused.get_json()
    assert (problem["code"], list(problem["errors"])) == ("rate_limited",
                                                          ["requests_per_minute"])
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    _assert_metered_headers(refused, 0, 1_000 - shop["tokens"][0])
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"

    _, tight = _key(session, model_co, tokens_per_minute=5)
    refused = _records(client, shop, tight, limit=1)
    assert refused.status_code == 429 and refused.get_json()["code"] == "rate_limited"
    assert list(refused.get_json()["errors"]) == ["tokens_per_minute"]
    _assert_metered_headers(refused, 0, 1_000 - shop["tokens"][0])
    assert refused.headers["x-ratelimit-limit-tokens"] == "5"


# X-Tokens-Remaining: what the key may still spend -----------------------------------------

def test_under_a_key_cap_the_remaining_tokens_are_the_caps_not_the_wallets(
        client, session, shop, model_co):
    first = shop["tokens"][0]
    _fund(session, model_co, 700_024 + first)
    _, headers = _key(session, model_co, monthly_token_cap=first + 24)
    response = _records(client, shop, headers, limit=1)
    assert response.status_code == 200, response.get_json()
    assert _balance(session, model_co) == 700_024
    _assert_metered_headers(response, first, 24)
    # The next page needs more than 24: refused, telling the same 24.
    refused = _records(client, shop, headers, limit=2, cursor=shop["seqs"][0])
    assert refused.status_code == 402
    assert refused.get_json()["code"] == "monthly_cap_reached"
    assert refused.get_json()["tokens_available"] == 24
    _assert_metered_headers(refused, 0, 24)


def test_without_a_cap_the_remaining_tokens_are_the_allowance_and_every_wallet(
        client, session, shop, model_co):
    _subscribe(session, model_co, shop, included=100)
    _fund(session, model_co, 1_000, scope="platform")
    _fund(session, model_co, 300, scope=entitlements.wallet_scope(shop["dataset"].id))
    _, headers = _key(session, model_co)
    response = _records(client, shop, headers, limit=1)
    assert response.get_json()["usage"]["paid_by"] == "subscription"
    _assert_metered_headers(response, shop["tokens"][0], 1_400 - shop["tokens"][0])


def test_a_budget_line_bounds_what_the_credit_line_pays_in_tokens(client, session, shop,
                                                                  model_co):
    _credit(session, model_co, limit_minor=1_000_000)
    line = _api_line(session, model_co, "10.00")
    _fund(session, model_co, 5)  # too few for any page, counted all the same
    _, headers = _key(session, model_co)
    response = _records(client, shop, headers, limit=1)
    assert response.status_code == 200, response.get_json()
    usage = response.get_json()["usage"]
    assert usage["paid_by"] == "postpaid"
    charged = Money.from_dict(usage["amount"]).minor
    session.refresh(line)
    assert line.remaining_minor == 1_000 - charged
    # The month so far: `first` tokens rated `charged`; the line leaves 1,000 - charged more.
    more = _most_tokens(1_000) - shop["tokens"][0]
    _assert_metered_headers(response, shop["tokens"][0], 5 + more)
    # Asking for at most that many is served, from the credit line, within the line.
    rest = _records(client, shop, headers, cursor=shop["seqs"][0], max_tokens=5 + more)
    assert rest.status_code == 200 and rest.get_json()["usage"]["paid_by"] == "postpaid"


# max_tokens and has_more -------------------------------------------------------------------

def test_max_tokens_stops_the_page_before_the_record_that_would_pass_it(
        client, session, shop, model_co):
    _fund(session, model_co, 10_000)
    _, headers = _key(session, model_co)
    r1, r2, r3 = shop["tokens"]
    page = _records(client, shop, headers, limit=3, max_tokens=r1 + r2 + r3 - 1)
    body = page.get_json()
    assert page.status_code == 200 and len(body["records"]) == 2
    assert (body["has_more"], body["next_cursor"]) == (True, shop["seqs"][1])
    assert body["usage"]["tokens"] == r1 + r2 == int(page.headers["X-Tokens-Charged"])
    rest = _records(client, shop, headers, limit=3, max_tokens=r3,
                    cursor=body["next_cursor"]).get_json()
    assert len(rest["records"]) == 1 and (rest["has_more"], rest["next_cursor"]) == (False, None)
    whole = _records(client, shop, headers, limit=3).get_json()
    assert whole["has_more"] is False and whole["records"] == body["records"] + rest["records"]
    limited = _records(client, shop, headers, limit=1).get_json()
    assert (limited["has_more"], limited["next_cursor"]) == (True, shop["seqs"][0])


def test_a_first_record_larger_than_max_tokens_is_422_naming_its_size(client, session, shop,
                                                                      model_co):
    _fund(session, model_co, 10_000)
    _, headers = _key(session, model_co)
    response = _records(client, shop, headers, max_tokens=shop["tokens"][0] - 1)
    assert response.status_code == 422
    problem = response.get_json()
    assert (problem["code"], list(problem["errors"])) == ("max_tokens_too_small",
                                                          ["max_tokens"])
    assert problem["next_record_tokens"] == shop["tokens"][0]
    _assert_metered_headers(response, 0, 10_000)
    assert _events(session) == 0


@pytest.mark.parametrize("max_tokens", [0, -1, 2**31, "many"])
def test_max_tokens_is_bounded(client, session, shop, model_co, max_tokens):
    _, headers = _key(session, model_co)
    response = _records(client, shop, headers, max_tokens=max_tokens)
    assert response.status_code == 422 and "max_tokens" in response.get_json()["errors"]
    searched = _search(client, shop, headers, query="报告", max_tokens=max_tokens)
    assert searched.status_code == 422 and "max_tokens" in searched.get_json()["errors"]


def test_a_call_the_wallet_cannot_pay_whole_can_be_asked_for_at_most_what_it_holds(
        client, session, shop, model_co):
    held = shop["tokens"][0] + 1
    _fund(session, model_co, held)
    _, headers = _key(session, model_co)
    refused = _records(client, shop, headers, limit=3)
    assert refused.status_code == 402
    available = refused.get_json()["tokens_available"]
    assert available == held
    page = _records(client, shop, headers, limit=3, max_tokens=available)
    assert page.status_code == 200 and page.get_json()["has_more"] is True
    assert page.get_json()["usage"]["tokens"] == shop["tokens"][0]
    _assert_metered_headers(page, shop["tokens"][0], 1)
    searched = _search(client, shop, headers, query="报告", max_tokens=1)
    assert searched.status_code == 422  # the first match alone has more
    assert searched.get_json()["next_record_tokens"] == shop["tokens"][0]


def test_search_pages_say_has_more_and_stop_at_max_tokens(client, session, shop, model_co):
    _fund(session, model_co, 10_000)
    _, headers = _key(session, model_co)
    everything = _search(client, shop, headers, query="报告").get_json()
    assert len(everything["records"]) == 2 and everything["has_more"] is False
    first = _search(client, shop, headers, query="报告", max_tokens=shop["tokens"][0])
    body = first.get_json()
    assert len(body["records"]) == 1 and body["has_more"] is True
    assert body["next_cursor"] == shop["seqs"][0]
    rest = _search(client, shop, headers, query="报告", cursor=body["next_cursor"]).get_json()
    assert rest["records"] == everything["records"][1:] and rest["has_more"] is False


# Replays -----------------------------------------------------------------------------------

# Headers that differ between any two answers, replay or not.
PER_ANSWER = {"X-Request-Id", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
              "x-ratelimit-reset-tokens"}


def _headers(response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items()
            if name not in PER_ANSWER}


@pytest.mark.parametrize("call", ["records", "search"])
def test_a_replay_is_the_original_but_replayed_and_charged_nothing(
        client, session, shop, model_co, call):
    _fund(session, model_co, 10_000)
    _, headers = _key(session, model_co)
    retry = headers | {"Idempotency-Key": f"{call}-1"}

    def send():
        if call == "records":
            return _records(client, shop, retry, limit=2, max_tokens=1_000)
        return _search(client, shop, retry, query="报告", limit=1)

    original, replay = send(), send()
    assert original.status_code == replay.status_code == 200, replay.get_json()
    first, again = original.get_json(), replay.get_json()
    assert first["usage"]["replayed"] is False and again["usage"]["replayed"] is True
    assert again == first | {"usage": first["usage"] | {"replayed": True}}
    assert first["usage"]["request_id"] == again["usage"]["request_id"]
    # The body differs only in "replayed": true, one character shorter than false.
    expected = _headers(original) | {"Idempotent-Replayed": "true", "X-Tokens-Charged": "0",
                                     "Content-Length": str(len(original.data) - 1)}
    assert _headers(replay) == expected
    assert int(original.headers["X-Tokens-Charged"]) == first["usage"]["tokens"] > 0
    assert _events(session) == 1
    assert _balance(session, model_co) == 10_000 - first["usage"]["tokens"]


def test_a_stored_replay_of_another_post_repeats_its_status_body_and_headers(
        app, session, buyer_client):
    create = {"fiscal_year": business_calendar(session).year_of(utcnow()), "currency": "CNY",
              "name": "Data purchases"}
    headers = buyer_client.csrf | {"Idempotency-Key": "budget-1"}
    original = buyer_client.post("/api/v1/budgets", json=create, headers=headers)
    replay = buyer_client.post("/api/v1/budgets", json=create, headers=headers)
    assert original.status_code == replay.status_code == 201, original.get_json()
    assert replay.get_json() == original.get_json()
    assert _headers(replay) == _headers(original) | {"Idempotent-Replayed": "true"}
    assert replay.headers["Location"] == original.headers["Location"]


def test_a_stored_response_keeps_the_headers_its_view_set(session, model_co):
    idempotency.store(session, organization_id=model_co.id, principal="key:1", key="k",
                      request_hash="h", status=201, content_type="application/json",
                      body="{}", ttl=dt.timedelta(hours=1), headers={
                          "Content-Type": "application/json", "Content-Length": "2",
                          "Location": "/api/v1/things/1", "X-Tokens-Charged": "12"})
    session.flush()
    record = idempotency.find(session, organization_id=model_co.id, principal="key:1",
                              key="k", request_hash="h")
    assert idempotency.replayed_headers(record) == {"Location": "/api/v1/things/1",
                                                    "X-Tokens-Charged": "12"}


# List values and the usage report ----------------------------------------------------------

def _list(amount: dict) -> Decimal:
    assert amount["currency"] == "CNY"
    return Decimal(amount["amount"])


def test_every_payer_shows_the_list_value_of_its_tokens(client, session, shop, model_co):
    r1, r2, r3 = shop["tokens"]
    _subscribe(session, model_co, shop, included=r1)
    _, headers = _key(session, model_co)
    # The allowance pays the first record: worth it at the plan's overage rate, 10 CNY/M.
    paid = _records(client, shop, headers, limit=1).get_json()["usage"]
    assert (paid["paid_by"], paid["amount"]["amount"]) == ("subscription", "0.00")
    assert _list(paid["list_amount"]) == Decimal(r1) * Decimal("10") / 10**6
    # A wallet pays the second: a subscriber's list rate is still its plan's.
    _fund(session, model_co, r2)
    paid = _records(client, shop, headers, limit=1, cursor=shop["seqs"][0]).get_json()["usage"]
    assert paid["paid_by"] == "wallet"
    assert _list(paid["list_amount"]) == Decimal(r2) * Decimal("10") / 10**6

    # Not a subscriber: the rate card's price, 3,000 CNY/M, whatever pays.
    session.delete(session.scalar(select(Entitlement)))
    session.delete(session.scalar(select(Subscription)))
    session.commit()
    _fund(session, model_co, r1)
    paid = _records(client, shop, headers, limit=1).get_json()["usage"]
    assert (paid["paid_by"], paid["amount"]["amount"]) == ("wallet", "0.00")
    assert _list(paid["list_amount"]) == Decimal(r1) * Decimal("0.003")
    _credit(session, model_co)
    paid = _records(client, shop, headers, limit=1, cursor=shop["seqs"][1]).get_json()["usage"]
    assert paid["paid_by"] == "postpaid"
    assert _list(paid["list_amount"]) == Decimal(r3) * Decimal("0.003")
    assert Money.from_dict(paid["amount"]).minor == round(Decimal(r3) * Decimal("0.3"))

    # The usage report adds them up, beside what was charged.
    report = client.get("/api/v1/usage", headers=headers).get_json()
    by_payer = {row["paid_by"]: row for row in report["by_paid_by"]}
    assert _list(by_payer["subscription"]["list_amount"]) == Decimal(r1) * 10 / 10**6
    assert _list(by_payer["wallet"]["list_amount"]) == (
        Decimal(r2) * 10 / 10**6 + Decimal(r1) * Decimal("0.003"))
    assert by_payer["wallet"]["amount"]["amount"] == "0.00"
    assert _list(report["totals"][0]["list_amount"]) == sum(
        _list(row["list_amount"]) for row in report["by_paid_by"])
    events = session.scalars(select(UsageEvent.list_micros).order_by(UsageEvent.id)).all()
    assert events == [r1 * 1_000, r2 * 1_000, r1 * 300_000, r3 * 300_000]


def test_a_late_royalty_event_shows_in_the_month_it_was_charged_to(client, session, shop,
                                                                   model_co):
    _credit(session, model_co)
    _, headers = _key(session, model_co)
    calendar = business_calendar(session)
    now = utcnow()
    this_month = calendar.month_of(now)
    start_of_month = calendar.month_bounds(this_month)[0]
    late = start_of_month - dt.timedelta(days=2)
    last_month = calendar.month_of(late)
    reported = client.post("/api/v1/usage/events", headers=headers, json={"events": [
        {"id": "late", "dataset_id": shop["dataset"].id, "tokens": 100_000,
         "occurred_at": late.isoformat()},
        {"id": "now", "dataset_id": shop["dataset"].id, "tokens": 50_000,
         "occurred_at": (now - dt.timedelta(seconds=1)).isoformat()}]}).get_json()
    assert reported["accepted"] == 2
    assert period_of(session, now) == this_month

    today = calendar.day_of(now)
    report = client.get("/api/v1/usage", headers=headers, query_string={
        "group_by": "dataset", "from": today.replace(day=1).isoformat()}).get_json()
    rows = [(r["occurred_period"], r["charged_period"], r["tokens"]) for r in report["rows"]]
    assert rows == [(last_month, this_month, 100_000), (this_month, this_month, 50_000)]
    assert report["totals"][0]["tokens"] == 150_000
    # 30 CNY/M: 3.00 and 1.50 CNY, charged and at list price alike.
    assert [r["amount"]["amount"] for r in report["rows"]] == ["3.00", "1.50"]
    assert [r["list_amount"]["amount"] for r in report["rows"]] == ["3.00", "1.50"]
    by_day = client.get("/api/v1/usage", headers=headers, query_string={
        "from": today.isoformat(), "to": today.isoformat()}).get_json()
    assert [(r["day"], r["occurred_period"], r["tokens"]) for r in by_day["rows"]] == [
        (today.isoformat(), last_month, 100_000), (today.isoformat(), this_month, 50_000)]
    # The month it occurred in was closed before it was reported: not there.
    first_of_last = dt.date.fromisoformat(f"{last_month}-01")
    earlier = client.get("/api/v1/usage", headers=headers, query_string={
        "from": first_of_last.isoformat()}).get_json()
    assert earlier["rows"] == [] and earlier["totals"] == []


# Money turned into tokens ------------------------------------------------------------------

@pytest.mark.parametrize("tiers, mode", [
    ([("0.37", None)], "graduated"),
    ([("3000", None)], "graduated"),
    ([("30", 1_000_000), ("17", 5_000_000), ("7.5", None)], "graduated"),
    ([("30", 1_000_000), ("10", None)], "volume"),
])
@pytest.mark.parametrize("before_tokens, left", [(0, 0), (0, 1), (12_345, 999), (999_990, 301),
                                                 (4_999_000, 50_000), (0, 10**9)])
def test_the_tokens_a_sum_buys_are_the_most_that_fit(tiers, mode, before_tokens, left):
    from billing.metering.charge import _flat_tokens, affordable_tokens, card_rating
    from pricing.money import UnitPrice
    from pricing.offers import offer_from_dict

    card = offer_from_dict({"kind": "metered", "code": "api", "mode": mode, "tiers": [
        {"from_tokens": 0 if i == 0 else tiers[i - 1][1], "up_to": up_to,
         "price_per_million": {"amount": price, "currency": "CNY"}}
        for i, (price, up_to) in enumerate(tiers)]})
    rating = card_rating(card)
    before_minor = rating(before_tokens)
    breaks = tuple(up for _, up in tiers if up) if mode == "volume" else ()
    found = affordable_tokens(rating, before_tokens, before_minor, left, breaks)
    if len(tiers) == 1:
        flat = _flat_tokens(UnitPrice(Decimal(tiers[0][0]), "CNY"), before_tokens,
                            before_minor, left)
        assert flat >= found >= flat - (flat >> 20)  # the bisection may stop a millionth short
        found = flat

    def charged(n):
        return max(rating(before_tokens + n), before_minor) - before_minor

    assert charged(found) <= left
    assert all(charged(n) <= left for n in range(max(found - 50, 0), found))
    exact = len(tiers) == 1 or found < 2**20
    if exact:  # nothing more fits (the bisection is exact below a million)
        assert charged(found + 1) > left
