"""API: the metered data API, priced in tokens.

A call is authenticated by an API key with ``data:read``; what it serves is charged in tokens
(see ``billing.metering``) and the response says what was charged, in the body's ``usage`` and in
headers: ``X-Tokens-Charged``, ``X-Tokens-Remaining`` and the rate-limit headers model companies
already parse (``x-ratelimit-limit-requests`` ...). Records are served as their canonical JSON —
the very bytes whose tokens were counted.
"""

from __future__ import annotations

import json
import uuid
from flask import Response, current_app, g, request
from marshmallow import Schema, fields, validate

from billing import metering
from billing.metering import Charge
from market import idempotency
from market.accounts.authz import Principal
from market.api.blueprint import api
from market.catalog import records as catalog_records
from market.db import utcnow
from market.errors import InvalidInput, TooManyRequests
from market.ratelimit import RateLimiter, Window
from market.web import db_session
from pricing.tokens import canonical_json, count_record, count_text

DATA = ["Metered data API"]


class RecordsQuerySchema(Schema):
    cursor = fields.Integer(load_default=-1, validate=validate.Range(min=-1),
                            metadata={"description": "next_cursor of the previous page."})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class SearchSchema(Schema):
    query = fields.String(required=True, validate=validate.Length(min=1, max=200))
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=1000))
    cursor = fields.Integer(load_default=-1, validate=validate.Range(min=-1))


class UsageObjectSchema(Schema):
    tokens = fields.Integer()
    amount = fields.Dict(metadata={"description": '{"amount": "0.42", "currency": "CNY"}'})
    paid_by = fields.String(metadata={"description": "subscription, wallet, postpaid or free"})
    request_id = fields.String()
    replayed = fields.Boolean()


class RecordPageSchema(Schema):
    records = fields.List(fields.Dict(), metadata={"description": "Each record as its "
                                                                  "canonical JSON."})
    next_cursor = fields.Integer(allow_none=True)
    usage = fields.Nested(UsageObjectSchema)


COUNT_MAX_CHARS = 1_000_000


class CountSchema(Schema):
    text = fields.String(load_default=None, validate=validate.Length(max=COUNT_MAX_CHARS))
    record = fields.Raw(load_default=None, metadata={"description": "Any JSON value: counted "
                                                                    "as its canonical JSON."})
    encoding = fields.String(load_default=None, validate=validate.OneOf(
        ["o200k_base", "cl100k_base"]))


class CountResultSchema(Schema):
    tokens = fields.Integer()
    encoding = fields.String()
    canonical = fields.String(allow_none=True,
                              metadata={"description": "What was counted, for a record."})


def _limiter() -> RateLimiter:
    return current_app.extensions["market.ratelimiter"]


def _limits(key) -> tuple[int, int]:
    config = current_app.config
    return (key.requests_per_minute or config["DEFAULT_REQUESTS_PER_MINUTE"],
            key.tokens_per_minute or config["DEFAULT_TOKENS_PER_MINUTE"])


def _rate_headers(requests_window: Window, tokens_window: Window) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(requests_window.limit),
        "x-ratelimit-remaining-requests": str(requests_window.remaining),
        "x-ratelimit-reset-requests": f"{requests_window.reset_seconds}s",
        "x-ratelimit-limit-tokens": str(tokens_window.limit),
        "x-ratelimit-remaining-tokens": str(tokens_window.remaining),
        "x-ratelimit-reset-tokens": f"{tokens_window.reset_seconds}s",
    }


class RateLimited(TooManyRequests):
    def __init__(self, detail: str, *, retry_after: int, field: str,
                 headers: dict[str, str]) -> None:
        super().__init__(detail, retry_after=retry_after, field=field)
        self.headers = headers


def _metered(principal: Principal, dataset_id: int, number: int,
             fetch) -> Response:
    """Rate-limit, read, count, charge, respond: the steps every data call shares."""
    key = g.api_key
    rpm, tpm = _limits(key)
    limiter = _limiter()
    allowed, requests_window = limiter.hit_request(key.prefix, rpm)
    if not allowed:
        window = limiter.tokens_window(key.prefix, tpm)
        raise RateLimited(f"This key may make {rpm} requests a minute.",
                          retry_after=requests_window.reset_seconds, field="requests_per_minute",
                          headers=_rate_headers(requests_window, window))
    session = db_session()
    dataset, version, subscribed = metering.callable_version(
        session, key.organization_id, dataset_id, number)
    page = fetch(session, version)
    encoding = current_app.config["TOKEN_ENCODING"]
    if version.encoding == encoding:
        tokens = sum(record.tokens for record in page.records)
    else:  # counted at import with another encoding: count what is served, as served
        tokens = sum(count_text(record.data, encoding) for record in page.records)

    presented = request.headers.get("Idempotency-Key")
    request_id = (f"key:{key.id}:{idempotency.check_key(presented)}" if presented
                  else f"key:{key.id}:{uuid.uuid4().hex}")
    request_hash = idempotency.request_fingerprint(request.method, request.path,
                                                   request.query_string,
                                                   request.get_data(cache=True))
    charge: Charge | None = None
    if presented:
        replay = metering.find_replay(session, request_id, request_hash)
        if replay is not None:
            charge = metering._replayed(session, replay)
    if charge is None:
        taken, tokens_window = limiter.take_tokens(key.prefix, tokens, tpm)
        if not taken:
            raise RateLimited(f"This key may be served {tpm:,} tokens a minute; this call "
                              f"would serve {tokens:,}.", retry_after=tokens_window.reset_seconds,
                              field="tokens_per_minute",
                              headers=_rate_headers(requests_window, tokens_window))
        try:
            charge = metering.charge_call(session, key=key, dataset=dataset, version=version,
                                          tokens=tokens, request_id=request_id,
                                          request_hash=request_hash, subscribed=subscribed)
        except Exception:
            limiter.take_tokens(key.prefix, -tokens, tpm)  # nothing was charged: give them back
            raise
    else:
        tokens_window = limiter.tokens_window(key.prefix, tpm)
    remaining = charge.remaining
    if remaining is None:
        remaining = metering.tokens_remaining(session, key.organization_id, dataset.id,
                                              utcnow().date()) or 0
    usage = {"tokens": charge.tokens, "amount": charge.amount.to_dict(),
             "paid_by": charge.paid_by, "request_id": request_id, "replayed": charge.replayed}
    # The records go out as the exact canonical bytes that were counted.
    body = ('{"records":[' + ",".join(record.data for record in page.records) + "],"
            f'"next_cursor":{json.dumps(page.next_cursor)},"usage":{json.dumps(usage)}}}')
    response = Response(body, mimetype="application/json")
    response.headers["X-Tokens-Charged"] = str(charge.tokens)
    response.headers["X-Tokens-Remaining"] = str(remaining)
    for name, value in _rate_headers(requests_window, tokens_window).items():
        response.headers[name] = value
    if charge.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@api.operation("/datasets/<int:dataset_id>/versions/<int:number>/records", "GET",
               summary="A page of records (metered)", permission="data:read",
               query=RecordsQuerySchema, response=RecordPageSchema, tags=DATA,
               errors=(402, 403, 404, 429))
def get_records(principal: Principal, dataset_id: int, number: int, query: dict):
    """Charged the tokens of the records returned. Send ``Idempotency-Key`` to make a retry
    return the same page without charging again."""
    return _metered(principal, dataset_id, number, lambda session, version:
                    catalog_records.page_records(session, version, after=query["cursor"],
                                                 limit=query["limit"]))


@api.operation("/datasets/<int:dataset_id>/versions/<int:number>/search", "POST",
               summary="Search records (metered)", permission="data:read", body=SearchSchema,
               response=RecordPageSchema, tags=DATA, errors=(402, 403, 404, 429))
def search_records(principal: Principal, dataset_id: int, number: int, body: dict):
    """Records whose canonical JSON contains the query (any case); charged the tokens of
    the records returned."""
    return _metered(principal, dataset_id, number, lambda session, version:
                    catalog_records.search_records(session, version, body["query"],
                                                   after=body["cursor"], limit=body["limit"]))


@api.operation("/tokens/count", "POST", summary="Count tokens (free)", permission="self:read",
               body=CountSchema, response=CountResultSchema, tags=DATA, errors=(422,))
def count_tokens(principal: Principal, body: dict):
    """A text, or a record (counted as its canonical JSON: sorted keys, UTF-8, compact) —
    the same counting every charge uses."""
    if (body["text"] is None) == (body["record"] is None):
        raise InvalidInput("Send either a text or a record.", field="text")
    encoding = body["encoding"] or current_app.config["TOKEN_ENCODING"]
    if body["text"] is not None:
        return {"tokens": count_text(body["text"], encoding), "encoding": encoding,
                "canonical": None}  # a text tiktoken gives up on: 422 naming "text"
    canonical = canonical_json(body["record"])
    if len(canonical) > COUNT_MAX_CHARS:
        raise InvalidInput(f"A record's canonical JSON may hold {COUNT_MAX_CHARS:,} characters, "
                           f"not {len(canonical):,}.", field="record")
    return {"tokens": count_record(body["record"], encoding), "encoding": encoding,
            "canonical": canonical}
