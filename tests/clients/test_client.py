"""The client's retry rule, its Idempotency-Keys, pagination and page parsing, against a real
HTTP server on a loopback port that answers from a script (tests/clients/scripted_server.py).

Only the clock is the test's: the client is given a ``sleep`` that records each wait instead of
waiting, so a ``Retry-After: 30`` costs nothing and its honouring can be read back.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import socket
from decimal import Decimal

import pytest

from market_client import (
    Amount, APIConnectionError, Conflict, MarketClient, RateLimited, RecordPage,
    ServiceUnavailable,
)
from market_client.client import BACKOFF_FIRST
from tests.clients.scripted_server import Answer

PAGE = {"records": [{"a": 1}], "next_cursor": None,
        "usage": {"tokens": 7, "amount": {"amount": "0.00", "currency": "CNY"},
                  "paid_by": "wallet", "request_id": "key:1:k", "replayed": False}}


@pytest.fixture()
def waits() -> list[float]:
    return []


@pytest.fixture()
def market(server, waits):
    with MarketClient("dmk_test_secret", server.url, sleep=waits.append) as client:
        yield client


def _rate_limited(retry_after: str | None = None) -> Answer:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Answer.problem(429, "rate_limited", headers=headers)


def test_a_429_is_retried_after_the_seconds_retry_after_says(server, market, waits):
    server.script(_rate_limited("3"), Answer(200, {"organization": {"id": 1}}))
    assert market.me() == {"organization": {"id": 1}}
    assert waits == [3.0]
    assert [seen.path for seen in server.seen] == ["/api/v1/me"] * 2
    assert server.seen[0].headers["Authorization"] == "Bearer dmk_test_secret"


def test_retry_after_may_be_an_http_date(server, market, waits):
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=20)
    server.script(_rate_limited(email.utils.format_datetime(later, usegmt=True)), Answer())
    market.me()
    assert len(waits) == 1 and 15 <= waits[0] <= 20


def test_a_post_keeps_one_idempotency_key_across_its_retries(server, market, waits):
    server.script(Answer.problem(503, "service_unavailable"),
                  Answer.problem(409, "idempotency_key_in_use", headers={"Retry-After": "1"}),
                  Answer(201, {"id": 5, "secret": "dmk_test_new"}))
    assert market.create_key("model", ["data:read"])["secret"] == "dmk_test_new"
    keys = {seen.headers["Idempotency-Key"] for seen in server.seen}
    assert len(server.seen) == 3 and len(keys) == 1 and keys.pop().startswith("mc-")
    # 503 without Retry-After: the first backoff, less at most a quarter; then Retry-After.
    assert BACKOFF_FIRST * 0.75 <= waits[0] <= BACKOFF_FIRST and waits[1] == 1.0
    # Only what was set is sent; the marketplace fills in its defaults.
    assert server.seen[0].body == {"name": "model", "scopes": ["data:read"]}


def test_each_logical_call_has_its_own_key_and_a_callers_own_is_kept(server, market):
    server.script(Answer(201), Answer(201), _rate_limited("0"), Answer(201))
    market.create_key("a", ["data:read"])
    market.create_key("b", ["data:read"])
    market.create_key("c", ["data:read"], idempotency_key="order-7-key")
    first, second, *third = [seen.headers["Idempotency-Key"] for seen in server.seen]
    assert first != second
    assert third == ["order-7-key", "order-7-key"]


def test_a_metered_get_carries_a_key_and_is_sent_again_after_a_lost_answer(server, market,
                                                                             waits):
    server.script(Answer(drop=True), Answer(200, PAGE))
    page = market.records(3, 1, limit=1, max_tokens=50)
    assert page.records == [{"a": 1}]
    first, again = server.seen
    assert first.headers["Idempotency-Key"] == again.headers["Idempotency-Key"]
    assert first.path == "/api/v1/datasets/3/versions/1/records"
    assert first.query == {"limit": "1", "max_tokens": "50"}
    assert len(waits) == 1


def test_a_lost_answer_to_a_patch_is_not_sent_again(server, market, waits):
    server.script(Answer(drop=True), Answer(200))
    with pytest.raises(APIConnectionError):
        market.request("PATCH", "/keys/1", json_body={"name": "renamed"})
    assert len(server.seen) == 1 and waits == []


def test_answers_that_ask_for_a_retry_are_retried_even_for_a_patch(server, market, waits):
    server.script(_rate_limited("2"), Answer(200, {"id": 1}))
    assert market.request("PATCH", "/keys/1", json_body={"name": "x"}).json() == {"id": 1}
    assert waits == [2.0]


def test_retries_are_bounded(server, market, waits):
    server.script(*[_rate_limited("1")] * 5)
    with pytest.raises(RateLimited) as raised:
        market.me()
    assert len(server.seen) == 1 + market.max_retries and waits == [1.0] * market.max_retries
    assert raised.value.retry_after == 1.0


def test_a_retry_after_beyond_the_cap_is_raised_at_once(server, market, waits):
    server.script(_rate_limited("3600"))
    with pytest.raises(RateLimited) as raised:
        market.me()
    assert raised.value.retry_after == 3600.0 and waits == [] and len(server.seen) == 1


def test_503_without_retry_after_backs_off_exponentially(server, market, waits):
    server.script(*[Answer.problem(503, "service_unavailable")] * 3)
    with pytest.raises(ServiceUnavailable):
        market.me()
    assert BACKOFF_FIRST * 0.75 <= waits[0] <= BACKOFF_FIRST
    assert 2 * BACKOFF_FIRST * 0.75 <= waits[1] <= 2 * BACKOFF_FIRST


def test_a_conflict_of_another_kind_is_not_retried(server, market, waits):
    server.script(Answer.problem(409, "conflict", headers={"Retry-After": "1"}))
    with pytest.raises(Conflict) as raised:
        market.pay_order(4)
    assert raised.value.code == "conflict" and waits == [] and len(server.seen) == 1


def test_no_server_is_a_connection_error_after_the_retries(waits):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens here once the probe is closed
    with MarketClient("dmk_test_secret", f"http://127.0.0.1:{port}", sleep=waits.append) as c:
        with pytest.raises(APIConnectionError) as raised:
            c.search(1, 1, "x")
    assert len(waits) == c.max_retries
    assert raised.value.idempotency_key.startswith("mc-")  # to send the same call again later


def test_a_callers_request_id_is_sent(server, market):
    server.script(Answer())
    market.request("GET", "/me", request_id="trace-42")
    assert server.seen[0].headers["X-Request-Id"] == "trace-42"


def test_pages_are_followed_by_their_cursor_until_none(server, market):
    server.script(Answer(200, {"items": [{"id": 1}, {"id": 2}], "next_cursor": "opaque=="}),
                  Answer(200, {"items": [{"id": 3}], "next_cursor": None}))
    assert [key["id"] for key in market.iter_keys(limit=2)] == [1, 2, 3]
    assert [seen.query for seen in server.seen] == [{"limit": "2"},
                                                    {"limit": "2", "cursor": "opaque=="}]


def test_record_pages_are_followed_until_nothing_is_left(server, market):
    more = {**PAGE, "next_cursor": "c1", "has_more": True}
    server.script(Answer(200, more), Answer(200, PAGE))
    pages = list(market.iter_record_pages(3, 1, limit=1, max_tokens=10))
    assert [page.has_more for page in pages] == [True, False]
    assert server.seen[1].query == {"cursor": "c1", "limit": "1", "max_tokens": "10"}


def test_a_record_page_reads_body_and_headers_exactly(server, market):
    body = {**PAGE, "next_cursor": "c9", "has_more": True,
            "usage": {**PAGE["usage"], "amount": {"amount": "0.42", "currency": "CNY"},
                      "list_amount": {"amount": "0.42", "currency": "CNY"}}}
    server.script(Answer(200, body, {
        "X-Tokens-Charged": "0", "X-Tokens-Remaining": "993", "Idempotent-Replayed": "true",
        "x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "599",
        "x-ratelimit-reset-requests": "1m30s", "x-ratelimit-limit-tokens": "5000000",
        "x-ratelimit-remaining-tokens": "4999993", "x-ratelimit-reset-tokens": "250ms"}))
    page = market.search(3, 1, "mri", max_tokens=100)
    assert isinstance(page, RecordPage)
    assert (page.next_cursor, page.has_more, page.tokens_charged, page.tokens_remaining,
            page.replayed, page.request_id) == ("c9", True, 0, 993, True, "req_header")
    assert page.usage.amount == Amount(Decimal("0.42"), "CNY") == page.usage.list_amount
    assert (page.rate_limits.reset_requests, page.rate_limits.reset_tokens) == (90.0, 0.25)
    assert page.rate_limits.remaining_tokens == 4_999_993
    assert server.seen[0].body == {"query": "mri", "max_tokens": 100}


def test_without_has_more_a_page_has_more_when_it_names_a_next_cursor(server, market):
    server.script(Answer(200, {**PAGE, "next_cursor": 4}))
    assert market.records(3, 1).has_more is True


def test_dates_and_times_are_sent_as_iso_8601(server, market):
    server.script(Answer(200, {}), Answer(200, {}))
    market.usage(dt.date(2026, 3, 1), dt.date(2026, 3, 31), group_by="key")
    moment = dt.datetime(2026, 3, 2, 8, 30, tzinfo=dt.timezone.utc)
    market.report_usage([{"id": "e1", "dataset_id": 3, "tokens": 10, "occurred_at": moment}])
    assert server.seen[0].query == {"from": "2026-03-01", "to": "2026-03-31", "group_by": "key"}
    assert server.seen[1].body["events"][0]["occurred_at"] == "2026-03-02T08:30:00+00:00"
