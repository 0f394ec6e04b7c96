"""The metered data API: what is served is what is charged, what pays for it and in which order,
402 when nothing does, the key's monthly cap, idempotent retries, and rate limits."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from billing.metering.charge import micros_at, unit_price
from billing.models import CreditLine, TokenWallet, UsageEvent
from market.catalog.models import DatasetRecord
from market.core.db import utcnow
from pricing.tokens import count_text
from tests.billing.metering.metered_calls import fund as _fund
from tests.billing.metering.metered_calls import records as _records
from tests.billing.shop import buyer, listed_dataset
from tests.factories import make_key

METERED = {"kind": "metered", "code": "api", "mode": "graduated", "tiers": [
    {"from_tokens": 0, "up_to": None, "price_per_million": {"amount": "30", "currency": "CNY"}}]}


@pytest.fixture()
def shop(session, passwords):
    return listed_dataset(session, passwords, extra_offers=[METERED])


@pytest.fixture()
def model_co(session, passwords):
    org, _, _ = buyer(session, passwords)
    session.flush()
    return org


def _key(session, org, **limits):
    key, secret = make_key(session, org, scopes=("data:read", "usage:read"), **limits)
    session.commit()
    return key, {"Authorization": f"Bearer {secret}"}


def test_tokens_charged_are_the_tokens_of_what_is_served(client, session, shop, model_co):
    _fund(session, model_co, 1_000_000)
    _, headers = _key(session, model_co)
    response = _records(client, shop, headers, limit=2)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    served = [json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
              for r in body["records"]]
    expected = sum(count_text(text, "o200k_base") for text in served)
    assert body["usage"]["tokens"] == expected == int(response.headers["X-Tokens-Charged"])
    assert body["usage"]["paid_by"] == "wallet"
    assert int(response.headers["X-Tokens-Remaining"]) == 1_000_000 - expected
    # The raw body carries the stored canonical bytes verbatim.
    stored = session.scalars(select(DatasetRecord.data).where(
        DatasetRecord.version_id == shop["version"].id).order_by(DatasetRecord.seq)).all()
    assert response.get_data(as_text=True).startswith('{"records":[' + ",".join(stored[:2]))
    for name in ("limit-requests", "remaining-requests", "reset-requests", "limit-tokens",
                 "remaining-tokens", "reset-tokens"):
        assert f"x-ratelimit-{name}" in response.headers
    event = session.scalar(select(UsageEvent))
    assert (event.tokens, event.paid_by, event.amount_minor) == (expected, "wallet", 0)
    assert event.supply_chain_revision_id is not None


def test_nothing_pays_is_402_and_writes_nothing(client, session, shop, model_co):
    _, headers = _key(session, model_co)
    response = _records(client, shop, headers)
    assert response.status_code == 402
    assert response.mimetype == "application/problem+json"
    assert "credit line" in response.get_json()["detail"]
    assert session.scalar(select(func.count()).select_from(UsageEvent)) == 0


def test_postpaid_is_priced_by_the_rate_card_and_held_to_the_credit_line(
        client, session, shop, model_co):
    session.add(CreditLine(organization_id=model_co.id, currency="CNY", limit_minor=1))
    session.commit()
    _, headers = _key(session, model_co)
    first = _records(client, shop, headers, limit=3)
    tokens = first.get_json()["usage"]["tokens"]
    # 30 per million: a few dozen tokens cost a fraction of a fen, rounded once on the month.
    assert first.status_code == 200 and first.get_json()["usage"]["paid_by"] == "postpaid"
    line = session.scalar(select(CreditLine))
    session.refresh(line)
    assert line.used_minor == round(tokens * 30 * 100 / 1_000_000)
    line.limit_minor = 0
    session.commit()
    more = _records(client, shop, headers, limit=3, cursor=-1)
    if more.status_code == 200:  # rounding may leave the next call free
        assert more.get_json()["usage"]["amount"]["amount"] == "0.00"
    else:
        assert more.status_code == 402 and "credit line" in more.get_json()["detail"]


def test_the_keys_monthly_cap_is_never_passed(client, session, shop, model_co):
    _fund(session, model_co, 1_000_000)
    key, headers = _key(session, model_co, monthly_token_cap=60)
    charged = 0
    statuses = []
    for _ in range(10):
        response = _records(client, shop, headers, limit=1)
        statuses.append(response.status_code)
        if response.status_code == 200:
            charged += response.get_json()["usage"]["tokens"]
        else:
            assert response.status_code == 402
            assert "monthly_token_cap" in response.get_json()["errors"]
    assert 402 in statuses and 0 < charged <= 60
    total = session.scalar(select(func.sum(UsageEvent.tokens)).where(
        UsageEvent.api_key_id == key.id))
    assert total == charged
    # The refused calls took nothing from the wallet either.
    assert session.scalar(select(func.sum(TokenWallet.balance_tokens)).where(
        TokenWallet.organization_id == model_co.id)) == 1_000_000 - charged


def test_a_retry_with_the_same_idempotency_key_charges_once(client, session, shop, model_co):
    _fund(session, model_co, 1_000_000)
    _, headers = _key(session, model_co)
    retry = headers | {"Idempotency-Key": "page-1"}
    first = _records(client, shop, retry, limit=2)
    second = _records(client, shop, retry, limit=2)
    assert first.get_json()["records"] == second.get_json()["records"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json()["usage"]["replayed"] is True
    assert session.scalar(select(func.count()).select_from(UsageEvent)) == 1
    other = _records(client, shop, retry, limit=1)  # the same key for another request
    assert other.status_code == 422 and "Idempotency-Key" in other.get_json()["errors"]


def test_rate_limit_answers_429_with_retry_after_and_the_headers(client, session, shop,
                                                                model_co):
    _fund(session, model_co, 1_000_000)
    _, headers = _key(session, model_co, requests_per_minute=2)
    assert _records(client, shop, headers, limit=1).status_code == 200
    second = _records(client, shop, headers, limit=1)
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    third = _records(client, shop, headers, limit=1)
    assert third.status_code == 429
    assert 1 <= int(third.headers["Retry-After"]) <= 60
    assert third.headers["x-ratelimit-limit-requests"] == "2"
    assert session.scalar(select(func.count()).select_from(UsageEvent)) == 2


def test_tokens_per_minute_limit(client, session, shop, model_co):
    _fund(session, model_co, 1_000_000)
    _, headers = _key(session, model_co, tokens_per_minute=1)
    response = _records(client, shop, headers, limit=3)
    assert response.status_code == 429
    assert "tokens_per_minute" in response.get_json()["errors"]
    assert response.headers["x-ratelimit-limit-tokens"] == "1"
    assert session.scalar(select(func.count()).select_from(UsageEvent)) == 0


def test_search_is_metered_too(client, session, shop, model_co):
    _fund(session, model_co, 1_000_000)
    _, headers = _key(session, model_co)
    response = client.post(f"/api/v1/datasets/{shop['dataset'].id}/versions/1/search",
                           headers=headers, json={"query": "mri"})
    assert response.status_code == 200
    body = response.get_json()
    assert len(body["records"]) == 1 and body["usage"]["tokens"] > 0


def test_token_counting_is_free(client, session, model_co):
    _, headers = _key(session, model_co)
    response = client.post("/api/v1/tokens/count", headers=headers,
                           json={"record": {"b": "数据", "a": 1}})
    body = response.get_json()
    assert body["canonical"] == '{"a":1,"b":"数据"}'
    assert body["tokens"] == count_text('{"a":1,"b":"数据"}', "o200k_base")
    bad = client.post("/api/v1/tokens/count", headers=headers, json={})
    assert bad.status_code == 422 and "text" in bad.get_json()["errors"]


@pytest.mark.parametrize("body, status, field", [
    ({"text": " " * 1_000_000}, 422, "text"),               # tiktoken panics on it
    ({"record": {"text": "x" * 1_000_000}}, 422, "record"),  # longer than a text may be
    ('{"record": ' + "[" * 100_000 + "]" * 100_000 + "}", 422, "_body"),  # nested too deep
])
def test_a_text_that_cannot_be_counted_is_refused_naming_the_field(client, session, model_co,
                                                                   body, status, field):
    _, headers = _key(session, model_co)
    response = client.post("/api/v1/tokens/count", headers=headers, **(
        {"data": body, "content_type": "application/json"} if isinstance(body, str)
        else {"json": body}))
    assert response.status_code == status, response.get_data()[:300]
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]
    fine = client.post("/api/v1/tokens/count", headers=headers, json={"text": "hello world"})
    assert fine.get_json()["tokens"] == 2


@pytest.mark.parametrize("query, field", [({"limit": 0}, "limit"), ({"limit": 5000}, "limit"),
                                          ({"cursor": "x"}, "cursor")])
def test_bad_paging_is_422(client, session, shop, model_co, query, field):
    _, headers = _key(session, model_co)
    response = _records(client, shop, headers, **query)
    assert response.status_code == 422 and field in response.get_json()["errors"]


def test_unknown_version_and_unentitled_dataset(client, session, shop, model_co, passwords):
    _fund(session, model_co, 1_000_000)
    _, headers = _key(session, model_co)
    missing = client.get(f"/api/v1/datasets/{shop['dataset'].id}/versions/9/records",
                         headers=headers)
    assert missing.status_code == 404 and "version" in missing.get_json()["errors"]
    other = listed_dataset(session, passwords)  # no metered offer, nothing bought
    session.commit()
    response = client.get(f"/api/v1/datasets/{other['dataset'].id}/versions/1/records",
                          headers=headers)
    assert response.status_code == 403 and "entitled" in response.get_json()["detail"]


def test_unknown_dataset_revoked_key_and_missing_scope_name_their_field(
        client, session, shop, model_co):
    _fund(session, model_co, 1_000_000)
    key, headers = _key(session, model_co)
    unknown = client.get("/api/v1/datasets/987654/versions/1/records", headers=headers)
    assert unknown.status_code == 404 and "dataset" in unknown.get_json()["errors"]
    _, secret = make_key(session, model_co, scopes=("usage:read",))
    session.commit()
    unscoped = _records(client, shop, {"Authorization": f"Bearer {secret}"})
    assert unscoped.status_code == 403 and "scopes" in unscoped.get_json()["errors"]
    assert "data:read" in unscoped.get_json()["detail"]
    key.revoked_at = utcnow()
    session.commit()
    revoked = _records(client, shop, headers)
    assert revoked.status_code == 401 and "Authorization" in revoked.get_json()["errors"]
    assert "revoked" in revoked.get_json()["detail"]
    assert session.scalar(select(func.count()).select_from(UsageEvent)) == 0


def test_a_subscriptions_allowance_pays_first_then_the_wallet(client, session, shop, model_co):
    import datetime as dt

    from billing.models import Entitlement, Subscription

    today = dt.date.today()
    plan = next(o for o in shop["dataset"].active_offers if o.kind == "metered")
    sub = Subscription(organization_id=model_co.id, dataset_id=shop["dataset"].id,
                       offer_id=plan.id, status="active", payment_method="bank_transfer",
                       current_period_start=today, current_period_end=today + dt.timedelta(30),
                       included_tokens=60, rollover_tokens=0, tokens_used=0)
    session.add(sub)
    session.flush()
    session.add(Entitlement(organization_id=model_co.id, dataset_id=shop["dataset"].id,
                            kind="api", subscription_id=sub.id))
    _fund(session, model_co, 1_000_000)
    _, headers = _key(session, model_co)
    paid_by = [_records(client, shop, headers, limit=1).get_json()["usage"]["paid_by"]
               for _ in range(6)]
    assert paid_by[0] == "subscription" and paid_by[-1] == "wallet"
    assert paid_by == sorted(paid_by, key=lambda who: who != "subscription")
    session.refresh(sub)
    assert 0 < sub.tokens_used <= 60


def test_a_unit_price_exactly_half_way_rounds_half_up_like_every_amount():
    # 0.01 CNY over 1,280,000 tokens is 0.0078125 a million: half to even would say 0.007812.
    assert unit_price(1, 2, 1_280_000) == "0.007813"
    assert unit_price(-1, 2, 1_280_000) == "-0.007813"  # a credit mirrors its charge
    assert unit_price(1, 2, 1_280_001) == "0.007812"
    # 5 tokens at 0.5 millionths of a fen each: 2.5, kept as 3.
    assert micros_at(5, (1, 2)) == 3
