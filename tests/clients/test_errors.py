"""Every error answer becomes the exception of its status, carrying what the problem said:
status, code, detail, the field errors and the request id (against a scripted loopback server)."""

from __future__ import annotations

import pytest

import market_client as mc
from tests.clients.scripted_server import Answer


@pytest.fixture()
def market(server):
    with mc.MarketClient("dmk_test_secret", server.url, max_retries=0) as client:
        yield client


@pytest.mark.parametrize(("status", "code", "cls"), [
    (400, "malformed_request", mc.BadRequest),
    (401, "unauthenticated", mc.AuthenticationError),
    (402, "insufficient_tokens", mc.PaymentRequired),
    (402, "monthly_cap_reached", mc.PaymentRequired),
    (402, "budget_line_exhausted", mc.PaymentRequired),
    (402, "credit_limit_reached", mc.PaymentRequired),
    (403, "not_entitled", mc.PermissionDenied),
    (403, "forbidden", mc.PermissionDenied),
    (404, "not_found", mc.NotFound),
    (409, "conflict", mc.Conflict),
    (409, "idempotency_key_in_use", mc.Conflict),
    (415, "unsupported_media_type", mc.APIError),
    (422, "invalid_input", mc.InvalidInput),
    (429, "rate_limited", mc.RateLimited),
    (500, "internal_error", mc.ServerError),
    (503, "service_unavailable", mc.ServiceUnavailable),
])
def test_each_status_has_its_class_and_the_problem_is_kept(server, market, status, code, cls):
    server.script(Answer.problem(status, code, errors={"limit": ["Must be at most 200."]}))
    with pytest.raises(cls) as raised:
        market.records(1, 1, limit=500)
    error = raised.value
    assert type(error) is cls and isinstance(error, mc.APIError)
    assert (error.status, error.code, error.detail) == (status, code, f"A {code} problem.")
    assert error.errors == {"limit": ["Must be at most 200."]}
    assert error.request_id == f"req_{code}"
    assert code in str(error) and f"req_{code}" in str(error) and "limit" in str(error)


def test_a_402_says_the_tokens_needed_and_available(server, market):
    server.script(Answer.problem(402, "insufficient_tokens", tokens_needed=120,
                                 tokens_available=35))
    with pytest.raises(mc.PaymentRequired) as raised:
        market.search(1, 1, "report")
    assert (raised.value.tokens_needed, raised.value.tokens_available) == (120, 35)


def test_a_429_says_when_to_come_back(server, market):
    server.script(Answer.problem(429, "rate_limited", headers={"Retry-After": "17"}))
    with pytest.raises(mc.RateLimited) as raised:
        market.me()
    assert raised.value.retry_after == 17.0


def test_an_answer_that_is_not_a_problem_is_still_an_error_with_its_status(server, market):
    server.script(Answer(414, "<html><h1>Request-URI Too Long</h1></html>"))
    with pytest.raises(mc.APIError) as raised:
        market.me()
    error = raised.value
    assert (error.status, error.code, error.title) == (414, None, "Request-URI Too Long")
    assert "Request-URI Too Long" in error.detail
    assert error.request_id == "req_header"  # from the X-Request-Id header
