"""Quotes: every offer kind, every tax mode, line-level rounding, snapshots."""

from __future__ import annotations

import json

import pytest

from pricing import (
    BuyerTaxStatus,
    CustomQuote,
    InvalidAmount,
    InvalidOption,
    InvalidQuantity,
    MallPackage,
    MeteredRateCard,
    Milestone,
    Money,
    Quote,
    RoyaltyRateCard,
    SubscriptionPlan,
    TaxMode,
    Tier,
    UnitPrice,
    UnsupportedOffer,
    quote,
)


def cny(amount: str) -> Money:
    return Money(amount, "CNY")


PACKAGE = MallPackage("pack", cny("1999.00"), licence_months=12, api_tokens=1_000_000)
PLAN = SubscriptionPlan("monthly", "month", cny("2000.00"), 5_000_000, UnitPrice("20", "CNY"))
CARD = MeteredRateCard(
    "api",
    [
        Tier(0, 1_000_000, UnitPrice("2.00", "CNY")),
        Tier(1_000_000, 10_000_000, UnitPrice("1.50", "CNY")),
        Tier(10_000_000, None, UnitPrice("1.00", "CNY")),
    ],
)
ROYALTY = RoyaltyRateCard("royalty", [Tier(0, None, UnitPrice("0.50", "CNY"))], tax_rate="0.13")
CUSTOM = CustomQuote(
    "job",
    (
        Milestone("deposit", cny("30000.05")),
        Milestone("delivery", cny("50000.05")),
        Milestone("acceptance", cny("20000.05")),
    ),
)


@pytest.mark.parametrize(
    "case, offer, kwargs, subtotal, tax, total",
    [
        # Mall package, two copies, in each tax mode (quotes.py docstring).
        ("mall exclusive", PACKAGE, dict(quantity=2), "3998.00", "239.88", "4237.88"),
        ("mall inclusive", PACKAGE, dict(quantity=2, tax_mode="inclusive"), "3771.70", "226.30", "3998.00"),
        ("mall exempt, exclusive", PACKAGE, dict(quantity=2, buyer="exempt"), "3998.00", "0.00", "3998.00"),
        ("mall exempt, inclusive", PACKAGE, dict(quantity=2, buyer="exempt", tax_mode="inclusive"),
         "3771.70", "0.00", "3771.70"),
        # Three months of a subscription.
        ("subscription periods", PLAN, dict(quantity=3), "6000.00", "360.00", "6360.00"),
        # One month with 1,250,000 tokens of overage at 20 / 1M = 25.00.
        ("subscription with overage", PLAN, dict(tokens=6_250_000), "2025.00", "121.50", "2146.50"),
        # Graduated 12.5M tokens: lines 2.00, 13.50, 2.50; tax per line 0.12 + 0.81 + 0.15.
        ("metered", CARD, dict(tokens=12_500_000), "18.00", "1.08", "19.08"),
        # Nets per line 1.89 + 12.74 + 2.36 = 16.99 (18.00 / 1.06 on the subtotal would be 16.98).
        ("metered inclusive", CARD, dict(tokens=12_500_000, tax_mode="inclusive"), "16.99", "1.01", "18.00"),
        ("royalty at 13%", ROYALTY, dict(tokens=3_000_000), "1.50", "0.20", "1.70"),  # 0.195 -> 0.20
        # Line-level rounding: each milestone's tax is x.003 -> rounded down on its line,
        # so the tax is 6,000.00, not 6% of the subtotal (6,000.009 -> 6,000.01).
        ("custom milestones", CUSTOM, {}, "100000.15", "6000.00", "106000.15"),
    ],
)
def test_quotes_with_worked_numbers(case, offer, kwargs, subtotal, tax, total):
    result = quote(offer, **kwargs)
    assert (result.subtotal, result.tax, result.total) == (cny(subtotal), cny(tax), cny(total)), case
    assert sum((l.taxed.gross for l in result.lines), Money.zero("CNY")) == result.total


def test_custom_quote_has_one_line_per_milestone():
    result = quote(CUSTOM)
    assert [l.item.code for l in result.lines] == [
        "milestone_deposit", "milestone_delivery", "milestone_acceptance"]
    assert [format(l.taxed.tax.amount, "f") for l in result.lines] == ["1800.00", "3000.00", "1200.00"]


def test_display_amount_follows_the_tax_mode():
    inclusive = quote(PACKAGE, tax_mode="inclusive")
    exclusive = quote(PACKAGE)
    assert inclusive.lines[0].display_amount(inclusive.tax_mode) == cny("1999.00")
    assert exclusive.lines[0].display_amount(exclusive.tax_mode) == cny("1999.00")
    assert inclusive.lines[0].taxed.net == cny("1885.85")  # 1999 / 1.06 = 1885.849
    assert exclusive.lines[0].taxed.gross == cny("2118.94")


@pytest.mark.parametrize(
    "offer, kwargs, error, field",
    [
        (PACKAGE, dict(tokens=10), InvalidQuantity, "tokens"),
        (PACKAGE, dict(quantity=0), InvalidQuantity, "quantity"),
        (PACKAGE, dict(quantity=1.5), Exception, "quantity"),
        (CARD, {}, InvalidQuantity, "tokens"),
        (CARD, dict(tokens=5, quantity=2), InvalidQuantity, "quantity"),
        (CARD, dict(tokens=-5), InvalidQuantity, "tokens"),
        (CUSTOM, dict(quantity=2), InvalidQuantity, "quantity"),
        (PLAN, dict(tokens=5, quantity=2), InvalidQuantity, "quantity"),
        (PACKAGE, dict(tax_mode="gross"), InvalidOption, "tax_mode"),
        (PACKAGE, dict(buyer="vip"), InvalidOption, "buyer_tax_status"),
        ("not an offer", {}, UnsupportedOffer, "offer"),
    ],
)
def test_quote_errors_are_named(offer, kwargs, error, field):
    with pytest.raises(error) as caught:
        quote(offer, **kwargs)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "offer, kwargs",
    [
        (PACKAGE, dict(quantity=2, tax_mode="inclusive")),
        (PLAN, dict(tokens=6_250_000, buyer="exempt")),
        (CUSTOM, {}),
        (CARD, dict(tokens=12_500_000)),
    ],
)
def test_quote_snapshots_round_trip_through_json(offer, kwargs):
    result = quote(offer, **kwargs)
    stored = json.loads(json.dumps(result.to_dict()))
    assert Quote.from_dict(stored) == result
    assert stored["offer"] == {"kind": offer.KIND, "code": offer.code}


def test_tampered_snapshots_are_refused():
    stored = quote(PACKAGE, quantity=2).to_dict()
    stored["total"] = {"amount": "1.00", "currency": "CNY"}
    with pytest.raises(InvalidAmount) as caught:
        Quote.from_dict(stored)
    assert caught.value.field == "total"
    stored = quote(PACKAGE, quantity=2).to_dict()
    stored["lines"][0]["tax"] = {"amount": "0.00", "currency": "CNY"}
    with pytest.raises(InvalidAmount) as caught:
        Quote.from_dict(stored)
    assert caught.value.field == "lines[0].tax"


def test_modes_are_recorded():
    result = quote(PACKAGE, buyer=BuyerTaxStatus.EXEMPT, tax_mode=TaxMode.INCLUSIVE)
    assert result.buyer_tax_status is BuyerTaxStatus.EXEMPT and result.tax_mode is TaxMode.INCLUSIVE
