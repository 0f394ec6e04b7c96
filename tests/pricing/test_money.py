"""Money and unit prices: exact decimals, minor units, half-up rounding, one currency."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing import (
    CURRENCY_MINOR_UNITS,
    CurrencyMismatch,
    FloatNotAllowed,
    InvalidAmount,
    InvalidQuantity,
    Money,
    UnitPrice,
    UnknownCurrency,
    minor_units,
)
from pricing.money import divide_half_up, minor_to_dict, round_half_up


@pytest.mark.parametrize(
    "value, currency, minor, text",
    [
        (Decimal("1.00"), "CNY", 100, "CNY 1.00"),
        ("1", "CNY", 100, "CNY 1.00"),
        (1, "CNY", 100, "CNY 1.00"),
        ("12.3", "usd", 1230, "USD 12.30"),
        ("500", "JPY", 500, "JPY 500"),
        ("1.234", "KWD", 1234, "KWD 1.234"),
        ("-0.05", "CNY", -5, "CNY -0.05"),
        ("1.2300", "CNY", 123, "CNY 1.23"),  # trailing zeros are not extra precision
        ("1E+3", "CNY", 100000, "CNY 1000.00"),
    ],
)
def test_money_holds_whole_minor_units(value, currency, minor, text):
    money = Money(value, currency)
    assert money.minor == minor
    assert str(money) == text
    assert Money.from_minor(minor, currency) == money


@pytest.mark.parametrize(
    "currency, places", [("CNY", 2), ("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3), ("CLF", 4)]
)
def test_minor_units_follow_iso_4217(currency, places):
    assert minor_units(currency) == places
    assert CURRENCY_MINOR_UNITS[currency] == places


@pytest.mark.parametrize(
    "build, error, field",
    [
        (lambda: Money(1.0, "CNY"), FloatNotAllowed, "amount"),
        (lambda: Money(0.1, "CNY"), FloatNotAllowed, "amount"),
        (lambda: Money.from_minor(1.0, "CNY"), FloatNotAllowed, "amount"),
        (lambda: Money("1.001", "CNY"), InvalidAmount, "amount"),
        (lambda: Money("0.5", "JPY"), InvalidAmount, "amount"),
        (lambda: Money("NaN", "CNY"), InvalidAmount, "amount"),
        (lambda: Money("Infinity", "CNY"), InvalidAmount, "amount"),
        (lambda: Money("one", "CNY"), InvalidAmount, "amount"),
        (lambda: Money(True, "CNY"), InvalidAmount, "amount"),
        (lambda: Money(None, "CNY"), InvalidAmount, "amount"),
        (lambda: Money("1e30", "CNY"), InvalidAmount, "amount"),
        (lambda: Money("1", "XYZ"), UnknownCurrency, "currency"),
        (lambda: Money("1", "RMB"), UnknownCurrency, "currency"),
        (lambda: Money("1", None), UnknownCurrency, "currency"),
        (lambda: Money.from_dict({"amount": 12.5, "currency": "CNY"}), FloatNotAllowed, "amount"),
        (lambda: UnitPrice(0.000002, "CNY"), FloatNotAllowed, "amount"),
        (lambda: UnitPrice("0.0000000000001", "CNY"), InvalidAmount, "amount"),
    ],
)
def test_bad_money_raises_a_named_error(build, error, field):
    with pytest.raises(error) as caught:
        build()
    assert caught.value.field == field
    assert str(caught.value)


@pytest.mark.parametrize(
    "value, currency, expected",
    [
        ("0.125", "CNY", "0.13"),  # half up
        ("0.124999", "CNY", "0.12"),
        ("-0.125", "CNY", "-0.13"),  # symmetric: a credit mirrors the charge
        ("2.5", "JPY", "3"),
        ("3.5", "JPY", "4"),  # not banker's rounding
        ("1.0005", "KWD", "1.001"),
        (Fraction(1, 3), "CNY", "0.33"),
        (Fraction(2, 3), "CNY", "0.67"),
    ],
)
def test_rounded_is_half_up(value, currency, expected):
    assert Money.rounded(value, currency) == Money(expected, currency)


@pytest.mark.parametrize(
    "price, quantity, per, expected",
    [
        # A per-token price finer than a fen: rounded once on the line total.
        ("0.000002", 1_234_567, 1, "2.47"),
        # Rounding per token would give 0.00 (each 0.000006 rounds to 0.00).
        ("0.000006", 1_000, 1, "0.01"),
        ("2.50", 1_500_000, 1_000_000, "3.75"),
        ("0.15", 123_456_789, 1_000_000, "18.52"),  # 18.51851835
        ("99.00", 12, 31, "38.32"),  # 38.3225...
        ("99.00", -12, 31, "-38.32"),
        ("0.01", 1, 2, "0.01"),  # exactly half a fen rounds up
    ],
)
def test_unit_price_rounds_once_at_the_line_total(price, quantity, per, expected):
    assert UnitPrice(price, "CNY").total(quantity, per) == Money(expected, "CNY")


def test_unit_price_normalizes_equal_values():
    assert UnitPrice("2.5", "CNY") == UnitPrice("2.50", "CNY")
    assert UnitPrice("0.0000020", "CNY").to_dict() == {"amount": "0.000002", "currency": "CNY"}
    assert UnitPrice("2", "CNY").to_dict() == {"amount": "2.00", "currency": "CNY"}
    assert UnitPrice("0.0000002", "CNY").to_dict()["amount"] == "0.0000002"  # never "2E-7"


@pytest.mark.parametrize("quantity, per", [(1.5, 1), (1, 0), (1, -5), ("3", 1)])
def test_unit_price_totals_need_integer_quantities(quantity, per):
    with pytest.raises((InvalidQuantity, FloatNotAllowed)):
        UnitPrice("1", "CNY").total(quantity, per)


def test_arithmetic_stays_in_one_currency():
    a, b = Money("10.00", "CNY"), Money("2.55", "CNY")
    assert a + b == Money("12.55", "CNY")
    assert a - b == Money("7.45", "CNY")
    assert -b == Money("-2.55", "CNY")
    assert b * 3 == 3 * b == Money("7.65", "CNY")
    assert sum([a, b]) == Money("12.55", "CNY")
    assert Money.sum([], "JPY") == Money.zero("JPY")
    assert a > b and b <= a
    with pytest.raises(CurrencyMismatch) as caught:
        a + Money("1", "USD")
    assert caught.value.field == "currency"
    with pytest.raises(CurrencyMismatch):
        a < Money("1", "USD")
    assert a != Money("10.00", "USD")


def test_multiplying_by_a_fraction_goes_through_scale():
    with pytest.raises(TypeError):
        Money("1", "CNY") * Decimal("0.5")
    with pytest.raises(FloatNotAllowed):
        Money("1", "CNY") * 0.5
    assert Money("100.00", "CNY").scale("0.333") == Money("33.30", "CNY")
    assert Money("100.00", "CNY").scale(Fraction(1, 3)) == Money("33.33", "CNY")
    assert Money("0.05", "CNY").scale("0.5") == Money("0.03", "CNY")


def test_json_form_uses_decimal_strings():
    money = Money("1999", "CNY")
    data = json.loads(json.dumps(money.to_dict()))
    assert data == {"amount": "1999.00", "currency": "CNY"}
    assert Money.from_dict(data) == money


@settings(max_examples=200, deadline=None)
@given(
    minor=st.integers(min_value=-(10**15), max_value=10**15),
    currency=st.sampled_from(sorted(CURRENCY_MINOR_UNITS)),
)
def test_minor_units_and_json_round_trip(minor, currency):
    money = Money.from_minor(minor, currency)
    assert money.minor == minor
    assert Money.from_dict(json.loads(json.dumps(money.to_dict()))) == money
    assert Money(str(money.amount), currency) == money
    assert minor_to_dict(minor, currency.lower()) == money.to_dict()
    assert money.to_dict()["amount"] == format(money.amount, "f")


@settings(max_examples=200, deadline=None)
@given(
    numerator=st.integers(min_value=-(10**12), max_value=10**12),
    denominator=st.integers(min_value=1, max_value=10**6),
)
def test_rounding_is_within_half_a_minor_unit(numerator, denominator):
    exact = Fraction(numerator, denominator)
    rounded = Money.rounded(exact, "CNY")
    error = Fraction(rounded.minor) - exact * 100
    assert -Fraction(1, 2) < error <= Fraction(1, 2) if exact >= 0 else -Fraction(1, 2) <= error < Fraction(1, 2)


@pytest.mark.parametrize("numerator, denominator, expected", [
    (5, 2, 3), (-5, 2, -3), (5, -2, -3), (7, 2, 4), (3, 2, 2), (4, 3, 1), (0, 7, 0)])
def test_an_integer_quotient_rounds_half_up_as_a_fraction_does(numerator, denominator, expected):
    assert divide_half_up(numerator, denominator) == expected
    assert round_half_up(Fraction(numerator, denominator)) == expected
