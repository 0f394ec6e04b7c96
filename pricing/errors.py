"""Errors raised by the pricing package.

Every error a caller can cause by sending bad input is a ``PricingError``
(a ``ValueError``) carrying ``field``: the name of the input field at fault,
as a path into the request ("currency", "shares_bps", "tiers[1].up_to",
"milestones[0].amount"). The HTTP layer turns any ``PricingError`` into a 422
problem+json response with ``errors={exc.field: [str(exc)]}``, so the message
is written for the person who filled in that field.

``EncodingIntegrityError`` is deliberately *not* a ``PricingError``: a
tokenizer file whose SHA-256 does not match is a broken deployment, not bad
input, and must surface as a 500.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

__all__ = [
    "PricingError",
    "UnknownCurrency",
    "CurrencyMismatch",
    "FloatNotAllowed",
    "InvalidAmount",
    "InvalidPrice",
    "InvalidQuantity",
    "InvalidTiers",
    "InvalidShares",
    "InvalidTaxRate",
    "InvalidPeriod",
    "InvalidOffer",
    "InvalidMilestones",
    "UnsupportedOffer",
    "InvalidOption",
    "OverRefund",
    "UnknownEncoding",
    "InvalidRecord",
    "UncountableText",
    "UnknownTokenProfile",
    "InvalidMeasure",
    "EncodingIntegrityError",
    "field_prefix",
]


class PricingError(ValueError):
    """Bad input to a pricing function; ``field`` names the input at fault."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, field={self.field!r})"

    def __reduce__(self):  # keep field when pickled (e.g. to a worker process)
        return (_rebuild, (type(self), self.message, self.field))

    @property
    def errors(self) -> dict[str, list[str]]:
        """The error as the API's ``errors`` member: ``{field: [message]}``."""
        return {self.field: [self.message]}

    def with_prefix(self, prefix: str) -> "PricingError":
        """Return the same error with ``field`` nested under ``prefix``.

        ``"amount"`` under ``"price"`` becomes ``"price.amount"``; an indexed
        field under a list (``"[2]"``) becomes ``"tiers[2].up_to"``.
        """
        if not prefix:
            return self
        if self.field.startswith("["):
            field = f"{prefix}{self.field}"
        else:
            field = f"{prefix}.{self.field}" if self.field else prefix
        return _rebuild(type(self), self.message, field)


def _rebuild(cls: type[PricingError], message: str, field: str) -> PricingError:
    exc = cls.__new__(cls)
    PricingError.__init__(exc, message, field=field)
    return exc


@contextmanager
def field_prefix(prefix: str) -> Iterator[None]:
    """Nest the ``field`` of any ``PricingError`` raised inside under ``prefix``.

    Used when one value object validates another it contains, so the API can
    point at ``plan.price.currency`` instead of a bare ``currency``.
    """
    try:
        yield
    except PricingError as exc:
        raise exc.with_prefix(prefix) from exc


class UnknownCurrency(PricingError):
    """The currency code is not an ISO 4217 currency this package knows."""


class CurrencyMismatch(PricingError):
    """Two amounts in different currencies were combined."""


class FloatNotAllowed(PricingError):
    """A binary float was passed where money or a rate is expected."""


class InvalidAmount(PricingError):
    """An amount is not a finite decimal, or is finer than the currency allows."""


class InvalidPrice(PricingError):
    """A price is negative, or zero where a price must be positive."""


class InvalidQuantity(PricingError):
    """A quantity or token count is negative, not an integer, or not allowed here."""


class InvalidTiers(PricingError):
    """Rate-card tiers overlap, leave a gap, or do not end open-ended."""


class InvalidShares(PricingError):
    """Revenue shares are not non-negative integers summing to 10,000 bps."""


class InvalidTaxRate(PricingError):
    """A tax rate is not a decimal fraction in [0, 1)."""


class InvalidPeriod(PricingError):
    """An unknown billing period, or a date outside the billing period."""


class InvalidOffer(PricingError):
    """An offer's terms contradict each other or are missing."""


class InvalidMilestones(InvalidOffer):
    """A custom quote's milestones are missing, repeated or out of order."""


class InvalidOption(PricingError):
    """A value is not one of the allowed choices (a tax mode, a tier mode...)."""


class UnsupportedOffer(PricingError):
    """The operation does not apply to this kind of offer."""


class OverRefund(PricingError):
    """A refund exceeds what remains refundable on the payment."""


class UnknownEncoding(PricingError):
    """The token encoding name is not one this package ships."""


class InvalidRecord(PricingError):
    """A record cannot be serialized canonically (e.g. NaN, a set, bytes)."""


class UncountableText(PricingError):
    """tiktoken gave up on a text (its regex overflows on a very long run of whitespace)."""


class UnknownTokenProfile(PricingError):
    """The token profile name is not one of ``pricing.token_profiles.PROFILES``."""


class InvalidMeasure(PricingError):
    """A measured fact a token profile counts (a width, a duration, a size) is missing, not an
    integer, not positive, or larger than any real file."""


class EncodingIntegrityError(RuntimeError):
    """A shipped tokenizer file is missing or fails its SHA-256 check."""
