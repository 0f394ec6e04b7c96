"""Validation helpers shared by the value objects (private to pricing)."""

from __future__ import annotations

from enum import Enum
from typing import Any, Mapping, TypeVar

from .errors import FloatNotAllowed, InvalidOffer, InvalidOption, InvalidQuantity, PricingError

E = TypeVar("E", bound=Enum)


def parse_enum(
    enum_cls: type[E], value: Any, field: str, error: type[PricingError] = InvalidOption
) -> E:
    """Return the member of ``enum_cls`` named by its value (``"month"``)."""
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum_cls)
        raise error(f"{value!r} is not one of {allowed}", field=field) from None


def whole_number(value: Any, field: str, *, minimum: int = 0) -> int:
    """Return ``value`` if it is an int >= ``minimum`` (bools and floats refused)."""
    if isinstance(value, float):
        raise FloatNotAllowed(f"{field} must be a whole number, not a float", field=field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidQuantity(f"{field} must be a whole number", field=field)
    if value < minimum:
        raise InvalidQuantity(f"{field} must be at least {minimum}", field=field)
    return value


def code(value: Any, field: str = "code") -> str:
    """Return a non-empty identifier string (an offer's catalogue code)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidOffer(f"{field} must be a non-empty string", field=field)
    return value


def mapping(data: Any, field: str = "") -> Mapping[str, Any]:
    """Return ``data`` if it is a JSON object, else a named error."""
    if not isinstance(data, Mapping):
        raise InvalidOffer("expected a JSON object", field=field or "body")
    return data


def require(data: Mapping[str, Any], key: str) -> Any:
    """Return ``data[key]``, or raise naming the missing field."""
    if key not in data:
        raise InvalidOffer(f"{key} is required", field=key)
    return data[key]
