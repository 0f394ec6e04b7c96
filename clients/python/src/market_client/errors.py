"""What the client raises: an answer that is an error, or no answer at all.

Every error the marketplace answers is ``application/problem+json`` with a stable ``code``
(``insufficient_tokens``, ``monthly_cap_reached``, ``rate_limited``, ``not_entitled`` ...). The
exception's class follows the HTTP status, so ``except PaymentRequired`` catches every 402 and
``error.code`` says which cause; a new code never needs a new class. Each error carries the
status, code, detail, the field errors and the request id to quote to support.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import requests


class MarketClientError(Exception):
    """Everything this client raises."""


class APIConnectionError(MarketClientError):
    """No answer came (refused, reset or timed out), after the retries the call allowed."""

    def __init__(self, message: str, *, idempotency_key: str | None = None) -> None:
        super().__init__(message)
        # Send it again with the same key later and the marketplace will not act twice.
        self.idempotency_key = idempotency_key


class APIError(MarketClientError):
    """The marketplace answered with an error status."""

    def __init__(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> None:
        self.status = status
        self.body = dict(body)
        self.headers = dict(headers)
        self.code: str | None = body.get("code")
        self.type: str | None = body.get("type")
        self.title: str | None = body.get("title")
        self.detail: str | None = body.get("detail")
        # Field -> messages; a nested field's messages nest the same way.
        self.errors: dict[str, Any] = dict(body.get("errors") or {})
        self.request_id: str | None = body.get("request_id") or headers.get("X-Request-Id")
        self.retry_after: float | None = parse_retry_after(headers.get("Retry-After"))
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"{self.status} {self.code or self.title or 'error'}"
        if self.detail:
            text += f": {self.detail}"
        if self.errors:
            text += " " + "; ".join(f"{name}: {_flat(messages)}"
                                    for name, messages in self.errors.items())
        if self.request_id:
            text += f" (request {self.request_id})"
        return text


class BadRequest(APIError):
    """400: the request could not be read (not JSON, nested too deeply ...)."""


class AuthenticationError(APIError):
    """401: no key, or one that is unknown, revoked or expired."""


class PaymentRequired(APIError):
    """402: nothing pays for the call, or a cap would be passed; ``code`` says which."""

    def __init__(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> None:
        super().__init__(status, body, headers)
        self.tokens_needed: int | None = _integer(body.get("tokens_needed"))
        self.tokens_available: int | None = _integer(body.get("tokens_available"))


class PermissionDenied(APIError):
    """403: the key lacks the scope, or the organization is not entitled (``not_entitled``)."""


class NotFound(APIError):
    """404: no such thing, or another organization's."""


class Conflict(APIError):
    """409: the state does not allow it, or the same Idempotency-Key is still being answered."""


class InvalidInput(APIError):
    """422: a field is wrong; ``errors`` names it."""


class RateLimited(APIError):
    """429: the key's requests or tokens per minute; ``retry_after`` says when to come back."""


class ServerError(APIError):
    """5xx: the marketplace failed; ``request_id`` finds it in its logs."""


class ServiceUnavailable(ServerError):
    """503: busy for a moment; ``retry_after`` says when to come back."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest, 401: AuthenticationError, 402: PaymentRequired, 403: PermissionDenied,
    404: NotFound, 409: Conflict, 422: InvalidInput, 429: RateLimited, 503: ServiceUnavailable,
}


def error_for(response: requests.Response) -> APIError:
    """The exception for an error answer, whatever its body (a proxy may answer HTML)."""
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    try:
        body = response.json(parse_float=Decimal)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"title": response.reason, "detail": response.text[:500] or None}
    return cls(status, body, response.headers)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait, from ``Retry-After`` as seconds or as an HTTP date; None if absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def _flat(messages: Any) -> str:
    if isinstance(messages, list):
        return " ".join(map(str, messages))
    return str(messages)


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
