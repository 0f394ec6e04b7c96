"""API: the metered data API, priced in tokens.

A call is authenticated by an API key with ``data:read``; what it serves is charged in tokens
(see ``billing.metering.charge``) and every answer of a data call whose key and parameters are valid —
200, 402, 403, 404, 409, 422 and 429 alike — says where the key stands, in headers model
companies already parse:

- ``X-Tokens-Charged``: the tokens this answer charged (0 when refused or replayed);
- ``X-Tokens-Remaining``: what the key can still spend on the dataset — the least of its
  monthly cap left and what could pay: the subscription's allowance left and the wallets, plus
  what the credit line (within a "block" budget line for API usage) could still pay, turned
  into tokens at the month's rating (``billing.metering.charge.tokens_available``);
- ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``.

A 200's body has the records (their canonical JSON, the very bytes whose tokens were counted),
``next_cursor``, ``has_more`` and ``usage``: ``tokens``, ``amount`` (what was charged),
``list_amount`` (what the tokens are worth at list price, whatever paid; exact to a millionth of
the minor unit), ``paid_by``, ``request_id``, ``replayed``. A refusal is problem+json with a
stable ``code`` (``billing.metering.charge``'s table, ``rate_limited`` for 429,
``idempotency_key_in_use`` for 409); every 402 adds ``tokens_needed`` (the call's tokens) and
``tokens_available`` (``X-Tokens-Remaining``).

``max_tokens`` (records: query; search: body) bounds the call: the page stops before the
record that would pass it, says ``has_more: true`` and its ``next_cursor`` continues from there.
When the next record alone has more tokens than ``max_tokens`` the call is refused 422
``max_tokens_too_small`` naming ``max_tokens``, with ``next_record_tokens``: an empty page with
``has_more`` would loop a client forever.

``Idempotency-Key``: a retry of the same request (within the key's life) answers what the first
did — the same body, with ``usage.replayed: true``, and the same headers, with
``Idempotent-Replayed: true`` and ``X-Tokens-Charged: 0`` (the remaining and rate-limit figures
are those of the moment); nothing is charged again. A retry racing the first one, before it has
committed, gets 409 ``idempotency_key_in_use`` with ``Retry-After``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Callable

from flask import Response, current_app, g, request
from marshmallow import Schema, fields, validate
from sqlalchemy.exc import IntegrityError

from billing.metering import charge as metering
from billing.errors import PaymentRequired
from billing.metering.charge import Charge
from billing.models import UsageEvent
from market.catalog import files as catalog_files
from market.catalog.manifest import MAX_PATH_BYTES
from market.catalog.models import VersionFile
from market.core.objects import CHUNK_SIZE, DEFAULT_URL_SECONDS, RangeNotSatisfiable
from market.web import idempotency
from market.accounts.authz import Principal
from market.web.api.blueprint import api
from market.catalog import records as catalog_records
from market.catalog.models import DatasetRecord, DatasetVersion
from market.catalog.records import RecordPage
from market.core.db import breaks_unique, utcnow
from market.core.errors import IdempotencyKeyInUse, InvalidInput, MarketError, TooManyRequests
from market.core.inputs import INT32_MAX
from market.web.ratelimit import RateLimiter, Window
from market.web.http import db_session
from pricing.tokens import canonical_json, count_record, count_text

DATA = ["Metered data API"]

_MAX_TOKENS_FIELD = {
    "validate": validate.Range(min=1, max=INT32_MAX),
    "metadata": {"description": "The most tokens this call may serve: the page stops before "
                                "the record that would pass it (has_more, next_cursor). 422 "
                                "max_tokens_too_small when the next record alone is larger."}}


class RecordsQuerySchema(Schema):
    cursor = fields.Integer(load_default=-1, validate=validate.Range(min=-1),
                            metadata={"description": "next_cursor of the previous page."})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    max_tokens = fields.Integer(load_default=None, **_MAX_TOKENS_FIELD)


class SearchSchema(Schema):
    query = fields.String(required=True, validate=validate.Length(min=1, max=200))
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=1000))
    cursor = fields.Integer(load_default=-1, validate=validate.Range(min=-1))
    max_tokens = fields.Integer(load_default=None, allow_none=True, strict=True,
                                **_MAX_TOKENS_FIELD)


class UsageObjectSchema(Schema):
    tokens = fields.Integer()
    amount = fields.Dict(metadata={"description": 'What was charged, {"amount": "0.42", '
                                                  '"currency": "CNY"}.'})
    list_amount = fields.Dict(metadata={
        "description": "What the tokens are worth at list price whatever paid (a subscriber's "
                       "overage rate, else the rate card's first tier), exact to a millionth "
                       'of the minor unit: {"amount": "0.0015", "currency": "CNY"}.'})
    paid_by = fields.String(metadata={"description": "subscription, wallet, postpaid or free"})
    request_id = fields.String()
    replayed = fields.Boolean()


class RecordPageSchema(Schema):
    records = fields.List(fields.Dict(), metadata={"description": "Each record as its "
                                                                  "canonical JSON."})
    next_cursor = fields.Integer(allow_none=True)
    has_more = fields.Boolean(metadata={"description": "Whether records follow next_cursor."})
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


class MaxTokensTooSmall(InvalidInput):
    def __init__(self, max_tokens: int, next_tokens: int) -> None:
        super().__init__(f"The next record alone has {next_tokens:,} tokens, more than "
                         f"max_tokens ({max_tokens:,}); ask for at least {next_tokens:,}.",
                         field="max_tokens", code="max_tokens_too_small",
                         extensions={"next_record_tokens": next_tokens})


@dataclass
class _Served:
    """What a call serves: records with their tokens, after ``max_tokens``."""

    records: list[DatasetRecord]
    tokens: int
    next_cursor: int | None


def _serve(page: RecordPage, version: DatasetVersion, max_tokens: int | None) -> _Served:
    """The page's records up to the one that would pass ``max_tokens`` (the module notes)."""
    encoding = current_app.config["TOKEN_ENCODING"]
    if version.encoding == encoding:
        counts = [record.tokens for record in page.records]
    else:  # counted at import with another encoding: count what is served, as served
        counts = [count_text(record.data, encoding) for record in page.records]
    if max_tokens is None or sum(counts) <= max_tokens:
        return _Served(page.records, sum(counts), page.next_cursor)
    taken = total = 0
    while total + counts[taken] <= max_tokens:
        total += counts[taken]
        taken += 1
    if not taken:
        raise MaxTokensTooSmall(max_tokens, counts[0])
    return _Served(page.records[:taken], total, page.records[taken - 1].seq)


# What a data call serves once it is charged: its response, given the call's usage object.
Answer = Callable[[dict], Response]


def _metered(dataset_id: int | None, locate: Callable, serve: Callable) -> Response:
    """Rate-limit, locate, count, charge, respond: the steps every data call shares. Every
    answer, refusals included, carries the token and rate-limit headers.

    ``locate(session, organization_id)``: the callable (dataset, version, subscribed), as
    ``billing.metering.charge.callable_version``; ``serve(session, version)``: the tokens the
    call is charged and the ``Answer`` it gives once charged. Whatever either refuses is
    refused before anything is charged, and nothing is served unless the charge held.
    ``dataset_id``: the dataset a refusal before ``locate`` found one reports the standing on
    (None: the platform-wide wallet's)."""
    key = g.api_key
    rpm, tpm = _limits(key)
    limiter = _limiter()
    session = db_session()
    now = utcnow()
    allowed, requests_window = limiter.hit_request(key.prefix, rpm)
    tokens_window: Window | None = None
    tokens = 0
    try:
        if not allowed:
            raise TooManyRequests(f"This key may make {rpm} requests a minute.",
                                  retry_after=requests_window.reset_seconds,
                                  field="requests_per_minute")
        dataset, version, subscribed = locate(session, key.organization_id)
        dataset_id = dataset.id
        tokens, answer = serve(session, version)
        presented = request.headers.get("Idempotency-Key")
        request_id = (f"key:{key.id}:{idempotency.check_key(presented)}" if presented
                      else f"key:{key.id}:{uuid.uuid4().hex}")
        request_hash = idempotency.request_fingerprint(request.method, request.path,
                                                       request.query_string,
                                                       request.get_data(cache=True))
        replay = metering.find_replay(session, request_id, request_hash) if presented else None
        if replay is not None:
            charge = metering.replayed_charge(replay)
            tokens_window = limiter.tokens_window(key.prefix, tpm)
        else:
            taken, tokens_window = limiter.take_tokens(key.prefix, tokens, tpm)
            if not taken:
                raise TooManyRequests(f"This key may be served {tpm:,} tokens a minute; this "
                                      f"call would serve {tokens:,}.",
                                      retry_after=tokens_window.reset_seconds,
                                      field="tokens_per_minute")
            try:
                charge = _charge(session, key, dataset, version, tokens, request_id,
                                 request_hash, now, subscribed)
            except BaseException:
                # Nothing was charged: give the tokens back.
                _, tokens_window = limiter.take_tokens(key.prefix, -tokens, tpm)
                raise
    except MarketError as refusal:
        session.rollback()  # a refused charge may have written before it was refused
        remaining = metering.tokens_available(session, key, dataset_id, now)
        if isinstance(refusal, PaymentRequired):
            refusal.extensions.update(tokens_needed=tokens, tokens_available=remaining)
        refusal.headers = {**(getattr(refusal, "headers", None) or {}),
                           **_metered_headers(0, remaining, requests_window, tokens_window
                                              or limiter.tokens_window(key.prefix, tpm))}
        raise
    remaining = charge.remaining
    if remaining is None:
        remaining = metering.tokens_available(session, key, dataset.id, now)
    usage = {"tokens": charge.tokens, "amount": charge.amount.to_dict(),
             "list_amount": metering.micros_to_dict(charge.list_micros, charge.amount.currency),
             "paid_by": charge.paid_by, "request_id": request_id, "replayed": charge.replayed}
    response = answer(usage)
    response.headers.update(_metered_headers(0 if charge.replayed else charge.tokens,
                                             remaining, requests_window, tokens_window))
    if charge.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _record_call(dataset_id: int, number: int, fetch, max_tokens: int | None) -> Response:
    """A call that serves a page of records, charged their tokens."""
    def serve(session, version: DatasetVersion) -> tuple[int, Answer]:
        served = _serve(fetch(session, version), version, max_tokens)
        # The records go out as the exact canonical bytes that were counted.
        return served.tokens, lambda usage: Response(
            '{"records":[' + ",".join(record.data for record in served.records) + "],"
            f'"next_cursor":{json.dumps(served.next_cursor)},'
            f'"has_more":{json.dumps(served.next_cursor is not None)},'
            f'"usage":{json.dumps(usage)}}}', mimetype="application/json")

    return _metered(dataset_id, lambda session, organization_id: metering.callable_version(
        session, organization_id, dataset_id, number), serve)


def _charge(session, key, dataset, version, tokens: int, request_id: str, request_hash: str,
            now, subscribed: bool) -> Charge:
    try:
        return metering.charge_call(session, key=key, dataset=dataset, version=version,
                                    tokens=tokens, request_id=request_id,
                                    request_hash=request_hash, now=now, subscribed=subscribed)
    except IntegrityError as exc:
        # The same Idempotency-Key's call committed while this one was charging.
        if breaks_unique(exc, UsageEvent.__table__, "request_id"):
            raise IdempotencyKeyInUse() from None
        raise


def _metered_headers(charged: int, remaining: int, requests_window: Window,
                     tokens_window: Window) -> dict[str, str]:
    return {"X-Tokens-Charged": str(charged), "X-Tokens-Remaining": str(remaining),
            **_rate_headers(requests_window, tokens_window)}


@api.operation("/datasets/<int:dataset_id>/versions/<int:number>/records", "GET",
               summary="A page of records (metered)", permission="data:read",
               query=RecordsQuerySchema, response=RecordPageSchema, tags=DATA,
               errors=(402, 403, 404, 409, 422, 429), metered=True)
def get_records(principal: Principal, dataset_id: int, number: int, query: dict):
    """Charged the tokens of the records returned, at most ``max_tokens`` (the page then stops
    before the record that would pass it: ``has_more``, ``next_cursor``). Every answer carries
    ``X-Tokens-Charged``, ``X-Tokens-Remaining`` (what the key can still spend: the least of its
    monthly cap left and the allowance, wallets and credit line — within its budget line —
    turned into tokens) and ``x-ratelimit-*``; a 402's ``code`` says why (insufficient_tokens,
    no_metered_price, monthly_cap_reached, credit_limit_reached, budget_line_exhausted) with
    ``tokens_needed`` and ``tokens_available``. Send ``Idempotency-Key`` to make a retry return
    the same page without charging again (409 idempotency_key_in_use while the first is still
    being answered)."""
    return _record_call(dataset_id, number, lambda session, version:
                        catalog_records.page_records(session, version, after=query["cursor"],
                                                     limit=query["limit"]),
                        query["max_tokens"])


@api.operation("/datasets/<int:dataset_id>/versions/<int:number>/search", "POST",
               summary="Search records (metered)", permission="data:read", body=SearchSchema,
               response=RecordPageSchema, tags=DATA, errors=(402, 403, 404, 409, 422, 429),
               metered=True)
def search_records(principal: Principal, dataset_id: int, number: int, body: dict):
    """Records whose canonical JSON contains the query (any case); charged, paged and
    answered as the records are (``max_tokens``, ``has_more``, the token headers, the 402
    codes, ``Idempotency-Key``)."""
    return _record_call(dataset_id, number, lambda session, version:
                        catalog_records.search_records(session, version, body["query"],
                                                       after=body["cursor"],
                                                       limit=body["limit"]),
                        body["max_tokens"])


class FileQuerySchema(Schema):
    path = fields.String(required=True, validate=validate.Length(min=1, max=MAX_PATH_BYTES),
                         metadata={"description": "The file's path, as the manifest has it."})


def _byte_span(size: int) -> tuple[int, int] | None:
    """The half-open span a ``Range: bytes=a-b`` asks of a file of ``size`` bytes; None for the
    whole file (no Range, or one this API does not serve: several ranges, a malformed one, which
    HTTP lets a server ignore). A range wholly past the end is refused 416, before any charge."""
    asked = request.range
    if asked is None or asked.units != "bytes" or len(asked.ranges) != 1:
        return None
    span = asked.range_for_length(size)
    if span is None:
        refusal = RangeNotSatisfiable(f"The file has {size:,} bytes; the range asks for none "
                                      "of them.", field="Range")
        refusal.headers = {"Content-Range": f"bytes */{size}"}
        raise refusal
    return span


def _file_answer(file: VersionFile, span: tuple[int, int] | None) -> Answer:
    """The file once charged: streamed through the app from a local store (206 with
    Content-Range for a range), or a 302 to a presigned URL on S3."""
    store = current_app.extensions["market.objects"]

    def answer(usage: dict) -> Response:
        url = store.presigned_url(file.object_key, DEFAULT_URL_SECONDS)
        if url is not None:
            response = Response(json.dumps({"url": url, "expires": DEFAULT_URL_SECONDS,
                                            "sha256": file.sha256, "size": file.size,
                                            "usage": usage}),
                                status=302, mimetype="application/json")
            response.headers["Location"] = url
            return response
        start, stop = span or (0, file.size)
        stream = store.open(file.object_key, start, stop)
        response = Response(_read(stream), status=200 if span is None else 206,
                            content_type=file.media_type, direct_passthrough=True)
        response.headers.update({"Content-Length": str(stop - start), "Accept-Ranges": "bytes",
                                 "ETag": f'"{file.sha256}"',
                                 "X-Usage-Request-Id": usage["request_id"]})
        if span is not None:
            response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{file.size}"
        return response

    return answer


def _read(stream):
    with stream:
        while chunk := stream.read(CHUNK_SIZE):
            yield chunk


@api.operation("/versions/<int:version_id>/files/content", "GET",
               summary="One file of a version of files (metered)", permission="data:read",
               query=FileQuerySchema, tags=DATA, errors=(402, 403, 404, 409, 416, 422, 429),
               raw_response="application/octet-stream", metered=True,
               answers={206: "A byte range of the file (Content-Range)",
                        302: "On an S3 store: the file at a presigned URL (Location and the "
                             "body's url, for `expires` seconds)"})
def get_file_content(principal: Principal, version_id: int, query: dict):
    """Charged the file's tokens (as counted at upload by its token profile), through the same
    sources, caps, headers, 402 codes and ``Idempotency-Key`` as records; entitlement is the
    records' too. Then the bytes: from a local store streamed in the answer, its media type and
    ``ETag`` its SHA-256; from an S3 store a 302 to a presigned URL good for a few minutes (the
    JSON body repeats it with ``usage``). ``Range: bytes=a-b`` (one range) answers 206 with
    ``Content-Range``, and 416 when no byte of the file is in it; on S3 the client sends its
    Range on to the URL. A range is charged the whole file's tokens: a file's tokens count the
    file as a whole (an image's tiles, a recording's seconds), which a share of its bytes does
    not divide. A refused call (402, 403, 404, 416, 429) serves no byte."""
    def serve(session, version):
        file = catalog_files.version_file(session, version, query["path"])
        return file.tokens, _file_answer(file, _byte_span(file.size))

    return _metered(None, lambda session, organization_id: metering.callable_version_by_id(
        session, organization_id, version_id), serve)


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
