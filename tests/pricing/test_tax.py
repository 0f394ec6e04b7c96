"""Tax: exclusive and inclusive prices, exempt buyers, per-line half-up rounding."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing import (
    DATA_SERVICES_VAT_CN,
    BuyerTaxStatus,
    FloatNotAllowed,
    InvalidOption,
    InvalidTaxRate,
    Money,
    TaxedAmount,
    TaxMode,
    apply_tax,
    offer_tax_rate,
    parse_tax_rate,
)


def cny(amount: str) -> Money:
    return Money(amount, "CNY")


@pytest.mark.parametrize(
    "amount, rate, mode, buyer, net, tax, gross",
    [
        # The module docstring's table: 6% on CNY 100.00.
        ("100.00", "0.06", "exclusive", "standard", "100.00", "6.00", "106.00"),
        ("100.00", "0.06", "inclusive", "standard", "94.34", "5.66", "100.00"),
        ("100.00", "0.06", "exclusive", "exempt", "100.00", "0.00", "100.00"),
        ("100.00", "0.06", "inclusive", "exempt", "94.34", "0.00", "94.34"),
        # Rounding on the line, half-up: 0.25 * 6% = 0.015 -> 0.02.
        ("0.25", "0.06", "exclusive", "standard", "0.25", "0.02", "0.27"),
        # 0.08 / 1.06 = 0.07547 -> 0.08 net, so no tax is left to extract.
        ("0.08", "0.06", "inclusive", "standard", "0.08", "0.00", "0.08"),
        ("1999.00", "0.13", "exclusive", "standard", "1999.00", "259.87", "2258.87"),
        ("1130.00", "0.13", "inclusive", "standard", "1000.00", "130.00", "1130.00"),
        ("100.00", "0", "exclusive", "standard", "100.00", "0.00", "100.00"),
        # A credit line mirrors its charge.
        ("-100.00", "0.06", "exclusive", "standard", "-100.00", "-6.00", "-106.00"),
    ],
)
def test_tax_modes_with_worked_numbers(amount, rate, mode, buyer, net, tax, gross):
    taxed = apply_tax(cny(amount), Decimal(rate), mode, buyer)
    assert (taxed.net, taxed.tax, taxed.gross) == (cny(net), cny(tax), cny(gross))


def test_yen_has_no_minor_unit_to_round_to():
    taxed = apply_tax(Money("1999", "JPY"), "0.10", TaxMode.EXCLUSIVE)
    assert taxed.tax == Money("200", "JPY")  # 199.9 -> 200


def test_default_rate_is_six_percent_vat_for_data_services():
    assert DATA_SERVICES_VAT_CN == Decimal("0.06")


@pytest.mark.parametrize(
    "rate, error",
    [
        (0.06, FloatNotAllowed),
        ("1", InvalidTaxRate),
        ("1.5", InvalidTaxRate),
        ("-0.01", InvalidTaxRate),
        ("six", InvalidTaxRate),
        ("0.0000001", InvalidTaxRate),
        (None, InvalidTaxRate),
    ],
)
def test_bad_tax_rates_are_named(rate, error):
    with pytest.raises(error) as caught:
        parse_tax_rate(rate)
    assert caught.value.field == "tax_rate"


def test_unknown_modes_are_named():
    with pytest.raises(InvalidOption) as caught:
        apply_tax(cny("1"), "0.06", "gross")
    assert caught.value.field == "tax_mode"
    with pytest.raises(InvalidOption) as caught:
        apply_tax(cny("1"), "0.06", "exclusive", "vip")
    assert caught.value.field == "buyer_tax_status"


def test_taxed_amount_round_trips():
    taxed = apply_tax(cny("100.00"), "0.06", TaxMode.INCLUSIVE)
    assert TaxedAmount.from_dict(taxed.to_dict()) == taxed


@settings(max_examples=200, deadline=None)
@given(
    minor=st.integers(min_value=-(10**12), max_value=10**12),
    rate_bp=st.integers(min_value=0, max_value=9999),
    mode=st.sampled_from(list(TaxMode)),
    buyer=st.sampled_from(list(BuyerTaxStatus)),
)
def test_net_plus_tax_is_gross_and_tax_is_half_up(minor, rate_bp, mode, buyer):
    amount = Money.from_minor(minor, "CNY")
    rate = Decimal(rate_bp) / 10000
    taxed = apply_tax(amount, rate, mode, buyer)
    assert taxed.net + taxed.tax == taxed.gross
    if buyer is BuyerTaxStatus.EXEMPT:
        assert taxed.tax.is_zero() and taxed.net == taxed.gross
    if mode is TaxMode.INCLUSIVE and buyer is BuyerTaxStatus.STANDARD:
        assert taxed.gross == amount
        exact_net = Fraction(minor) / (1 + Fraction(rate))
        assert abs(taxed.net.minor - exact_net) <= Fraction(1, 2)
    if mode is TaxMode.EXCLUSIVE and buyer is BuyerTaxStatus.STANDARD:
        assert taxed.net == amount
        assert abs(taxed.tax.minor - Fraction(minor) * Fraction(rate)) <= Fraction(1, 2)


def test_an_offer_is_taxed_at_its_own_rate_else_at_the_data_services_vat():
    assert offer_tax_rate({"kind": "mall", "tax_rate": "0.13"}) == Decimal("0.13")
    assert offer_tax_rate({"kind": "mall", "tax_rate": "0"}) == Decimal("0")
    assert offer_tax_rate({"kind": "mall"}) == DATA_SERVICES_VAT_CN == Decimal("0.06")
    assert offer_tax_rate(None) == DATA_SERVICES_VAT_CN  # nothing offered: a platform pack
    with pytest.raises(InvalidTaxRate):
        offer_tax_rate({"tax_rate": "1.5"})
