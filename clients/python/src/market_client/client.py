"""The client: one method per operation a model company uses, and the retry rule they share.

A logical call is retried, at most ``max_retries`` more times, when

- the answer asks for it: 429 and 503 (the marketplace did nothing), and 409
  ``idempotency_key_in_use`` (the same call is still being answered). The wait is the answer's
  ``Retry-After``; one longer than ``max_retry_wait`` is not waited for: the error is raised at
  once, carrying ``retry_after``. Without the header the wait is the backoff below.
- no answer came (refused, reset, timed out) and sending it again cannot act twice: a GET, PUT
  or DELETE, or a call carrying an ``Idempotency-Key``. The wait is an exponential backoff
  (0.5 s doubling up to 8 s) less a random quarter, so many clients do not come back together.

Every POST and every metered call carries an ``Idempotency-Key``, generated once per logical
call and sent unchanged on each of its retries (or the caller's own, to span its own retries):
the marketplace answers a repeat from the first call and charges tokens once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import requests

from market_client.endpoints import ENDPOINTS
from market_client.errors import APIConnectionError, APIError, error_for
from market_client.models import Cursor, RecordPage

__version__ = "0.1.0"

API_PREFIX = "/api/v1"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
# Sending these again changes nothing more than sending them once (RFC 9110, 9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 8.0
# Refused, reset, timed out, or cut off in the middle of the answer.
_NO_ANSWER = (requests.ConnectionError, requests.Timeout,
              requests.exceptions.ChunkedEncodingError)

Json = dict[str, Any]


def new_idempotency_key() -> str:
    return f"mc-{uuid.uuid4().hex}"


class MarketClient:
    """``MarketClient(api_key, base_url)``; both default to ``MARKET_API_KEY`` and
    ``MARKET_BASE_URL``. Use it as a context manager, or ``close()`` it, to free its
    connections."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *,
                 timeout: float = 60.0, max_retries: int = 2, max_retry_wait: float = 60.0,
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        api_key = api_key or os.environ.get("MARKET_API_KEY")
        if not api_key:
            raise ValueError("Pass api_key or set MARKET_API_KEY.")
        self.base_url = (base_url or os.environ.get("MARKET_BASE_URL")
                         or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self._sleep = sleep
        self._session = session or requests.Session()
        self._session.headers.update({"Authorization": f"Bearer {api_key}",
                                      "User-Agent": f"market-client/{__version__}",
                                      "Accept": "application/json"})

    def __enter__(self) -> MarketClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    # Any operation ------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json_body: Any = None, idempotency_key: str | None = None,
                request_id: str | None = None) -> requests.Response:
        """Send one logical call to ``path`` (under ``/api/v1``), retried as the module says;
        the successful response, or raises ``APIError`` / ``APIConnectionError``."""
        method = method.upper()
        if idempotency_key is None and method == "POST":
            idempotency_key = new_idempotency_key()
        headers = {}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        data = None
        if json_body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(json_body, default=_encode, ensure_ascii=False).encode()
        resendable = method in IDEMPOTENT_METHODS or idempotency_key is not None
        url = self.base_url + API_PREFIX + path
        attempt = 0
        while True:
            try:
                response = self._session.request(method, url, params=_query(params), data=data,
                                                 headers=headers, timeout=self.timeout)
            except _NO_ANSWER as exc:
                if not resendable or attempt >= self.max_retries:
                    raise APIConnectionError(f"{method} {path}: no answer ({exc})",
                                             idempotency_key=idempotency_key) from exc
                wait = self._backoff(attempt)
            else:
                if response.status_code < 400:
                    return response
                error = error_for(response)
                wait = self._retry_wait(error, attempt)
                if wait is None:
                    raise error
            self._sleep(wait)
            attempt += 1

    def paginate(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Json]:
        """Every item of a list endpoint, page after page, following ``next_cursor``."""
        query = dict(params or {})
        while True:
            page = self.request("GET", path, params=query).json(parse_float=Decimal)
            yield from page["items"]
            if page.get("next_cursor") is None:
                return
            query["cursor"] = page["next_cursor"]

    def _retry_wait(self, error: APIError, attempt: int) -> float | None:
        asked = error.status in (429, 503) or (
            error.status == 409 and error.code == "idempotency_key_in_use")
        if not asked or attempt >= self.max_retries:
            return None
        if error.retry_after is None:
            return self._backoff(attempt)
        return error.retry_after if error.retry_after <= self.max_retry_wait else None

    @staticmethod
    def _backoff(attempt: int) -> float:
        return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** attempt) * (1 - 0.25 * random.random())

    def _call(self, name: str, path_args: Mapping[str, Any] | None = None, *,
              query: Mapping[str, Any] | None = None, body: Mapping[str, Any] | None = None,
              idempotency_key: str | None = None) -> requests.Response:
        endpoint = ENDPOINTS[name]
        if endpoint.metered and idempotency_key is None:
            idempotency_key = new_idempotency_key()
        return self.request(endpoint.method, endpoint.path.format(**(path_args or {})),
                            params=query, json_body=_present(body) if body is not None else None,
                            idempotency_key=idempotency_key)

    def _json(self, name: str, path_args: Mapping[str, Any] | None = None, **kwargs: Any) -> Json:
        return self._call(name, path_args, **kwargs).json(parse_float=Decimal)

    def _pages(self, name: str, query: Mapping[str, Any]) -> Iterator[Json]:
        return self.paginate(ENDPOINTS[name].path, query)

    # Who is calling, and its keys ---------------------------------------------------------------

    def me(self) -> Json:
        """The organization the key acts for, the key's prefix and its scopes."""
        return self._json("me")

    def iter_keys(self, *, limit: int | None = None) -> Iterator[Json]:
        return self._pages("iter_keys", {"limit": limit})

    def create_key(self, name: str, scopes: Sequence[str], *,
                   requests_per_minute: int | None = None, tokens_per_minute: int | None = None,
                   monthly_token_cap: int | None = None, expires_at: dt.datetime | None = None,
                   idempotency_key: str | None = None) -> Json:
        """A new key (needs ``keys:manage``); its ``secret`` is in this answer only."""
        return self._json("create_key", body={
            "name": name, "scopes": list(scopes), "requests_per_minute": requests_per_minute,
            "tokens_per_minute": tokens_per_minute, "monthly_token_cap": monthly_token_cap,
            "expires_at": expires_at}, idempotency_key=idempotency_key)

    def get_key(self, key_id: int) -> Json:
        return self._json("get_key", {"key_id": key_id})

    def revoke_key(self, key_id: int) -> Json:
        return self._json("revoke_key", {"key_id": key_id})

    # The catalogue ------------------------------------------------------------------------------

    def iter_datasets(self, q: str | None = None, *, sector: str | None = None,
                      modality: str | None = None, ai_stage: str | None = None,
                      licence: str | None = None, grade: str | None = None,
                      model: str | None = None, sort: str | None = None,
                      limit: int | None = None) -> Iterator[Json]:
        """Listed datasets matching the search: each ``{"dataset", "version", "relevance"}``."""
        return self._pages("iter_datasets", {
            "q": q, "sector": sector, "modality": modality, "ai_stage": ai_stage,
            "licence": licence, "grade": grade, "model": model, "sort": sort, "limit": limit})

    def get_dataset(self, dataset_id: int) -> Json:
        return self._json("get_dataset", {"dataset_id": dataset_id})

    def get_version(self, dataset_id: int, number: int) -> Json:
        """A version's counts, schema, quality report and samples (free)."""
        return self._json("get_version", {"dataset_id": dataset_id, "number": number})

    # Metered data -------------------------------------------------------------------------------

    def records(self, dataset_id: int, number: int, *, cursor: Cursor | None = None,
                limit: int | None = None, max_tokens: int | None = None,
                idempotency_key: str | None = None) -> RecordPage:
        """A page of a version's records, charged their tokens. ``max_tokens``: serve fewer
        records rather than pass it (``has_more`` and ``next_cursor`` say what is left)."""
        return RecordPage.from_response(self._call(
            "records", {"dataset_id": dataset_id, "number": number},
            query={"cursor": cursor, "limit": limit, "max_tokens": max_tokens},
            idempotency_key=idempotency_key))

    def iter_record_pages(self, dataset_id: int, number: int, *, limit: int | None = None,
                          max_tokens: int | None = None) -> Iterator[RecordPage]:
        """Every page of a version from its start, each one a charged call. Stops at the end,
        or at a page that served nothing (a ``max_tokens`` too small for the next record)."""
        cursor: Cursor | None = None
        while True:
            page = self.records(dataset_id, number, cursor=cursor, limit=limit,
                                max_tokens=max_tokens)
            yield page
            if page.next_cursor is None or not page.has_more or not page.records:
                return
            cursor = page.next_cursor

    def search(self, dataset_id: int, number: int, query: str, *, limit: int | None = None,
               cursor: Cursor | None = None, max_tokens: int | None = None,
               idempotency_key: str | None = None) -> RecordPage:
        """Records whose canonical JSON contains ``query`` (any case), charged their tokens."""
        return RecordPage.from_response(self._call(
            "search", {"dataset_id": dataset_id, "number": number},
            body={"query": query, "limit": limit, "cursor": cursor, "max_tokens": max_tokens},
            idempotency_key=idempotency_key))

    def count_tokens(self, text: str | None = None, *, record: Any = None,
                     encoding: str | None = None) -> Json:
        """Tokens of a text, or of a record as its canonical JSON; free."""
        return self._json("count_tokens",
                          body={"text": text, "record": record, "encoding": encoding})

    # Usage --------------------------------------------------------------------------------------

    def report_usage(self, events: Sequence[Mapping[str, Any]], *,
                     idempotency_key: str | None = None) -> Json:
        """Report royalty events ``{id, dataset_id, tokens, occurred_at, model}``; each id counts
        once, forever. The answer has one outcome per event, in order."""
        return self._json("report_usage", body={"events": [dict(e) for e in events]},
                          idempotency_key=idempotency_key)

    def usage(self, start: dt.date | None = None, end: dt.date | None = None, *,
              group_by: str | None = None) -> Json:
        """Tokens, cost and calls from ``start`` to ``end`` (business days, both included),
        grouped by ``day``, ``dataset`` or ``key``."""
        return self._json("usage", query={"from": start, "to": end, "group_by": group_by})

    # Buying tokens ------------------------------------------------------------------------------

    def buy_token_pack(self, millions: int, *, dataset_id: int | None = None,
                       payment_method: str = "bank_transfer", budget_line_id: int | None = None,
                       purchase_order_number: str | None = None,
                       idempotency_key: str | None = None) -> Json:
        """An order for N million prepaid tokens (one dataset's, or any dataset's)."""
        return self._json("buy_token_pack", body={
            "millions": millions, "dataset_id": dataset_id, "payment_method": payment_method,
            "budget_line_id": budget_line_id, "purchase_order_number": purchase_order_number},
            idempotency_key=idempotency_key)

    def iter_orders(self, *, limit: int | None = None) -> Iterator[Json]:
        return self._pages("iter_orders", {"limit": limit})

    def get_order(self, order_id: int) -> Json:
        return self._json("get_order", {"order_id": order_id})

    def pay_order(self, order_id: int, method: str = "bank_transfer", *,
                  payment_method: str | None = None, idempotency_key: str | None = None) -> Json:
        """``bank_transfer``: the invoice to pay, with its reference. ``card``: charged now."""
        return self._json("pay_order", {"order_id": order_id},
                          body={"method": method, "payment_method": payment_method},
                          idempotency_key=idempotency_key)

    def holdings(self) -> Json:
        """Entitlements and token wallets (``balance_tokens`` per scope)."""
        return self._json("holdings")

    def iter_audit_log(self, *, action: str | None = None,
                       limit: int | None = None) -> Iterator[Json]:
        return self._pages("iter_audit_log", {"action": action, "limit": limit})


def _present(values: Mapping[str, Any]) -> dict[str, Any]:
    """A body without its unset members: the marketplace applies its defaults."""
    return {name: value for name, value in values.items() if value is not None}


def _query(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    if params is None:
        return None
    return {name: _text(value) for name, value in params.items() if value is not None}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def _encode(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
