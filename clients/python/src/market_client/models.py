"""The metered answers as typed values: a page of records, what it cost, and the key's limits.

Money is a ``Decimal`` with its currency, never a float: the marketplace sends amounts as
strings (``{"amount": "0.42", "currency": "CNY"}``) and they stay exact here. A cursor is opaque:
pass back the ``next_cursor`` a page gave, as it gave it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests

Cursor = str | int


@dataclass(frozen=True)
class Amount:
    amount: Decimal
    currency: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Amount:
        return cls(Decimal(str(body["amount"])), body["currency"])


@dataclass(frozen=True)
class Usage:
    """The body's ``usage``: what the call served and what paid for it."""

    tokens: int
    amount: Amount
    list_amount: Amount | None  # the tokens at list value, whatever paid (a wallet: amount 0)
    paid_by: str  # subscription, wallet, postpaid or free
    request_id: str
    replayed: bool

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Usage:
        listed = body.get("list_amount")
        return cls(tokens=int(body["tokens"]), amount=Amount.from_body(body["amount"]),
                   list_amount=Amount.from_body(listed) if listed else None,
                   paid_by=body["paid_by"], request_id=body["request_id"],
                   replayed=bool(body.get("replayed", False)))


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class RateLimits:
    """The ``x-ratelimit-*`` headers: this key's requests and tokens per minute."""

    limit_requests: int | None
    remaining_requests: int | None
    reset_requests: float | None  # seconds
    limit_tokens: int | None
    remaining_tokens: int | None
    reset_tokens: float | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimits:
        def count(name: str) -> int | None:
            value = headers.get(f"x-ratelimit-{name}")
            return int(value) if value and value.isdigit() else None

        def seconds(name: str) -> float | None:
            value = headers.get(f"x-ratelimit-{name}")
            parts = _DURATION.findall(value or "")
            return sum(float(n) * _SECONDS[unit] for n, unit in parts) if parts else None

        return cls(count("limit-requests"), count("remaining-requests"),
                   seconds("reset-requests"), count("limit-tokens"),
                   count("remaining-tokens"), seconds("reset-tokens"))


@dataclass(frozen=True)
class RecordPage:
    """One metered answer of ``records`` or ``search``."""

    records: list[dict[str, Any]]
    next_cursor: Cursor | None
    has_more: bool
    usage: Usage
    tokens_charged: int  # X-Tokens-Charged: 0 on a replay
    tokens_remaining: int | None  # X-Tokens-Remaining: what this key may still spend
    rate_limits: RateLimits
    request_id: str | None  # X-Request-Id
    replayed: bool  # an Idempotency-Key retry answered from the first call, charged once

    # The members of the body this class reads (the OpenAPI check compares them).
    BODY_FIELDS = ("records", "next_cursor", "has_more", "usage")

    @classmethod
    def from_response(cls, response: requests.Response) -> RecordPage:
        body = response.json(parse_float=Decimal)
        headers = response.headers
        usage = Usage.from_body(body["usage"])
        next_cursor = body.get("next_cursor")
        charged = headers.get("X-Tokens-Charged")
        remaining = headers.get("X-Tokens-Remaining")
        return cls(
            records=body["records"], next_cursor=next_cursor,
            has_more=bool(body.get("has_more", next_cursor is not None)), usage=usage,
            tokens_charged=int(charged) if charged is not None else usage.tokens,
            tokens_remaining=int(remaining) if remaining is not None else None,
            rate_limits=RateLimits.from_headers(headers),
            request_id=headers.get("X-Request-Id"),
            replayed=headers.get("Idempotent-Replayed") == "true" or usage.replayed)
