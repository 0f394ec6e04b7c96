"""Errors that services raise and the HTTP layer turns into problem+json.

Services never build responses; they raise one of these with the field at fault, and one
app-wide handler renders it. Billing and the CLI use the same classes.
"""

from __future__ import annotations


class MarketError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None,
                 errors: dict[str, list[str]] | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        # A stable machine-readable cause (``party_to_item``), for clients that branch on it.
        self.code = code
        self.errors = errors if errors is not None else ({field: [detail]} if field else None)


class InvalidInput(MarketError):
    status = 422
    title = "Invalid input"


class Unauthorized(MarketError):
    status = 401
    title = "Authentication required"


class Forbidden(MarketError):
    status = 403
    title = "Forbidden"


class NotFound(MarketError):
    status = 404
    title = "Not found"


class Conflict(MarketError):
    status = 409
    title = "Conflict"


class TooManyRequests(MarketError):
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, field: str | None = None) -> None:
        super().__init__(detail, field=field)
        self.retry_after = retry_after
