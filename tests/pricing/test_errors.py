"""Errors: one base class, a field on every error, fields nested for nested inputs."""

from __future__ import annotations

import pickle

import pytest

import pricing
from pricing import errors
from pricing.errors import (
    EncodingIntegrityError,
    InvalidTiers,
    PricingError,
    UnknownCurrency,
    field_prefix,
)


def test_every_input_error_is_a_pricing_error_and_a_value_error():
    names = [n for n in errors.__all__ if isinstance(getattr(errors, n), type)]
    input_errors = [getattr(errors, n) for n in names if n != "EncodingIntegrityError"]
    assert len(input_errors) >= 15
    for cls in input_errors:
        assert issubclass(cls, PricingError) and issubclass(cls, ValueError), cls
        assert getattr(pricing, cls.__name__) is cls  # re-exported


def test_integrity_failure_is_a_server_error_not_a_422():
    assert not issubclass(EncodingIntegrityError, PricingError)


def test_error_carries_field_message_and_api_shape():
    exc = UnknownCurrency("unknown currency 'XYZ'", field="currency")
    assert exc.field == "currency"
    assert str(exc) == "unknown currency 'XYZ'"
    assert exc.errors == {"currency": ["unknown currency 'XYZ'"]}
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is UnknownCurrency and copy.field == "currency" and str(copy) == str(exc)


@pytest.mark.parametrize(
    "prefix, field, expected",
    [
        ("price", "currency", "price.currency"),
        ("tiers[1]", "up_to", "tiers[1].up_to"),
        ("tiers", "[1].up_to", "tiers[1].up_to"),
        ("", "amount", "amount"),
    ],
)
def test_field_prefix_nests_the_field(prefix, field, expected):
    with pytest.raises(InvalidTiers) as caught:
        with field_prefix(prefix):
            raise InvalidTiers("bad", field=field)
    assert caught.value.field == expected
    assert str(caught.value) == "bad"


def test_nested_fields_reach_the_caller():
    with pytest.raises(UnknownCurrency) as caught:
        pricing.offer_from_dict(
            {"kind": "mall_package", "code": "p", "price": {"amount": "1", "currency": "XYZ"}}
        )
    assert caught.value.field == "price.currency"
