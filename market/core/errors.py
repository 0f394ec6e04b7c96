"""Errors that services raise and the HTTP layer turns into problem+json.

Services never build responses; they raise one of these with the field at fault, and one
app-wide handler renders it. Billing and the CLI use the same classes.
"""

from __future__ import annotations


class MarketError(Exception):
    status = 400
    title = "Bad request"
    # The stable machine-readable cause clients branch on, when the raiser names none.
    default_code = "bad_request"

    def __init__(self, detail: str, *, field: str | None = None,
                 errors: dict[str, list[str]] | None = None, code: str | None = None,
                 extensions: dict[str, object] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        # A stable machine-readable cause (``party_to_item``), for clients that branch on it.
        self.code = code or self.default_code
        self.errors = errors if errors is not None else ({field: [detail]} if field else None)
        # Further members of the problem body, e.g. a 402's ``tokens_needed``.
        self.extensions = dict(extensions or {})


class InvalidInput(MarketError):
    status = 422
    title = "Invalid input"
    default_code = "invalid_input"


class Unauthorized(MarketError):
    status = 401
    title = "Authentication required"
    default_code = "unauthenticated"


class Forbidden(MarketError):
    status = 403
    title = "Forbidden"
    default_code = "forbidden"


class NotFound(MarketError):
    status = 404
    title = "Not found"
    default_code = "not_found"


class Conflict(MarketError):
    status = 409
    title = "Conflict"
    default_code = "conflict"


class IdempotencyKeyInUse(Conflict):
    """Another request with the same Idempotency-Key is being answered: once it is, a retry
    gets its response (``Retry-After``)."""

    default_code = "idempotency_key_in_use"
    retry_after = 1

    def __init__(self) -> None:
        super().__init__("A request with this Idempotency-Key is being answered at the same "
                         f"time; retry in {self.retry_after} s to get its response.",
                         field="Idempotency-Key")
        self.headers = {"Retry-After": str(self.retry_after)}


class TooManyRequests(MarketError):
    status = 429
    title = "Too many requests"
    default_code = "rate_limited"

    def __init__(self, detail: str, *, retry_after: int, field: str | None = None,
                 code: str | None = None, extensions: dict[str, object] | None = None) -> None:
        super().__init__(detail, field=field, code=code, extensions=extensions)
        self.retry_after = retry_after
