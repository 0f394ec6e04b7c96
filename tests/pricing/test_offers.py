"""Offers: validated value objects that round-trip through JSON without floats."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest

from pricing import (
    CurrencyMismatch,
    CustomQuote,
    FloatNotAllowed,
    InvalidMilestones,
    InvalidOffer,
    InvalidOption,
    InvalidPeriod,
    InvalidPrice,
    InvalidQuantity,
    InvalidTaxRate,
    InvalidTiers,
    MallPackage,
    MeteredRateCard,
    Milestone,
    MilestoneKind,
    Money,
    Period,
    RoyaltyRateCard,
    SubscriptionPlan,
    Tier,
    TierMode,
    UnitPrice,
    UnknownCurrency,
    offer_from_dict,
)


def CNY(amount):
    return {"amount": amount, "currency": "CNY"}


SUBSCRIPTION = {
    "kind": "subscription", "code": "monthly", "period": "month", "price": CNY("2000.00"),
    "included_tokens": 5_000_000, "overage_per_million": CNY("20"), "rollover": True,
}
MALL = {
    "kind": "mall_package", "code": "pack", "price": CNY("9800"), "licence_months": 12,
    "download": True, "api_tokens": 1_000_000,
}
CUSTOM = {
    "kind": "custom", "code": "medical-ner",
    "milestones": [
        {"kind": "deposit", "amount": CNY("30000")},
        {"kind": "delivery", "amount": CNY("50000"), "description": "first 100k records"},
        {"kind": "acceptance", "amount": CNY("20000")},
    ],
}
METERED = {
    "kind": "metered", "code": "api", "mode": "graduated",
    "tiers": [
        {"from_tokens": 0, "up_to": 1_000_000, "price_per_million": CNY("2")},
        {"from_tokens": 1_000_000, "up_to": 10_000_000, "price_per_million": CNY("1.5")},
        {"from_tokens": 10_000_000, "up_to": None, "price_per_million": CNY("1")},
    ],
    "free_tokens": 100_000, "minimum_charge": CNY("1.00"),
}
ROYALTY = {
    "kind": "royalty", "code": "model-output", "mode": "volume",
    "tiers": [{"from_tokens": 0, "up_to": None, "price_per_million": CNY("0.000015")}],
    "tax_rate": "0.06",
}


def _no_floats(value):
    if isinstance(value, float):
        return False
    if isinstance(value, dict):
        return all(_no_floats(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_floats(v) for v in value)
    return True


@pytest.mark.parametrize(
    "data, cls",
    [
        (SUBSCRIPTION, SubscriptionPlan),
        (MALL, MallPackage),
        (CUSTOM, CustomQuote),
        (METERED, MeteredRateCard),
        (ROYALTY, RoyaltyRateCard),
    ],
)
def test_each_offer_round_trips_through_json(data, cls):
    offer = offer_from_dict(data)
    assert type(offer) is cls and offer.KIND == data["kind"]
    stored = json.loads(json.dumps(offer.to_dict()))
    assert _no_floats(stored)
    assert offer_from_dict(stored) == offer
    assert cls.from_dict(stored) == offer
    assert offer_from_dict(stored).to_dict() == stored  # normalized form is a fixed point


def test_normalized_values():
    plan = offer_from_dict(SUBSCRIPTION)
    assert plan.period is Period.MONTH and plan.price == Money("2000", "CNY")
    assert plan.overage_per_million == UnitPrice("20.00", "CNY")
    assert plan.tax_rate == Decimal("0.06")
    assert offer_from_dict(MALL).to_dict()["price"] == CNY("9800.00")
    card = offer_from_dict(METERED)
    assert card.mode is TierMode.GRADUATED and card.currency == "CNY"
    assert offer_from_dict(CUSTOM).total == Money("100000", "CNY")


def _with(base, **changes):
    data = json.loads(json.dumps(base))
    data.update(changes)
    return data


def _tiers(*rows):
    return [{"from_tokens": a, "up_to": b, "price_per_million": CNY(p)} for a, b, p in rows]


@pytest.mark.parametrize(
    "data, error, field",
    [
        (_with(SUBSCRIPTION, price=CNY("0")), InvalidPrice, "price"),
        (_with(SUBSCRIPTION, price=CNY("-10")), InvalidPrice, "price"),
        (_with(SUBSCRIPTION, overage_per_million=CNY("0")), InvalidPrice, "overage_per_million"),
        (_with(SUBSCRIPTION, overage_per_million={"amount": "20", "currency": "USD"}),
         CurrencyMismatch, "overage_per_million.currency"),
        (_with(SUBSCRIPTION, period="week"), InvalidPeriod, "period"),
        (_with(SUBSCRIPTION, included_tokens=-1), InvalidQuantity, "included_tokens"),
        (_with(SUBSCRIPTION, included_tokens=1.5), FloatNotAllowed, "included_tokens"),
        (_with(SUBSCRIPTION, rollover="yes"), InvalidOffer, "rollover"),
        (_with(SUBSCRIPTION, tax_rate="1.06"), InvalidTaxRate, "tax_rate"),
        (_with(SUBSCRIPTION, tax_rate=0.06), FloatNotAllowed, "tax_rate"),
        (_with(MALL, price=CNY("-1")), InvalidPrice, "price"),
        (_with(MALL, price={"amount": 12.5, "currency": "CNY"}), FloatNotAllowed, "price.amount"),
        (_with(MALL, price={"amount": "1", "currency": "XYZ"}), UnknownCurrency, "price.currency"),
        (_with(MALL, price={"amount": "1.005", "currency": "CNY"}), Exception, "price.amount"),
        (_with(MALL, licence_months=0), InvalidQuantity, "licence_months"),
        (_with(MALL, download=False, api_tokens=0), InvalidOffer, "includes"),
        (_with(MALL, code=""), InvalidOffer, "code"),
        ({k: v for k, v in MALL.items() if k != "price"}, InvalidOffer, "price"),
        (_with(CUSTOM, milestones=[]), InvalidMilestones, "milestones"),
        (_with(CUSTOM, milestones=[{"kind": "delivery", "amount": CNY("1")},
                                   {"kind": "deposit", "amount": CNY("1")}]),
         InvalidMilestones, "milestones[1].kind"),
        (_with(CUSTOM, milestones=[{"kind": "deposit", "amount": CNY("1")},
                                   {"kind": "deposit", "amount": CNY("1")}]),
         InvalidMilestones, "milestones[1].kind"),
        (_with(CUSTOM, milestones=[{"kind": "deposit", "amount": CNY("0")}]),
         InvalidPrice, "milestones[0].amount"),
        (_with(CUSTOM, milestones=[{"kind": "bonus", "amount": CNY("1")}]),
         InvalidMilestones, "milestones[0].kind"),
        (_with(CUSTOM, milestones=[{"kind": "deposit", "amount": CNY("1")},
                                   {"kind": "acceptance", "amount": {"amount": "1", "currency": "USD"}}]),
         CurrencyMismatch, "milestones[1].amount.currency"),
        (_with(METERED, tiers=_tiers((0, 100, "1"), (50, None, "1"))), InvalidTiers, "tiers[1].from_tokens"),
        (_with(METERED, tiers=_tiers((0, 100, "1"), (200, None, "1"))), InvalidTiers, "tiers[1].from_tokens"),
        (_with(METERED, tiers=_tiers((10, None, "1"))), InvalidTiers, "tiers[0].from_tokens"),
        (_with(METERED, tiers=_tiers((0, 100, "1"), (100, 200, "1"))), InvalidTiers, "tiers[1].up_to"),
        (_with(METERED, tiers=_tiers((0, None, "1"), (100, None, "1"))), InvalidTiers, "tiers[0].up_to"),
        (_with(METERED, tiers=_tiers((0, 0, "1"), (0, None, "1"))), InvalidTiers, "tiers[0].up_to"),
        (_with(METERED, tiers=_tiers((0, None, "-1"))), InvalidPrice, "tiers[0].price_per_million"),
        (_with(METERED, tiers=_tiers((0, 100, "1")) + [
            {"from_tokens": 100, "up_to": None, "price_per_million": {"amount": "1", "currency": "USD"}}]),
         CurrencyMismatch, "tiers[1].price_per_million.currency"),
        (_with(METERED, tiers=[]), InvalidTiers, "tiers"),
        (_with(METERED, tiers="cheap"), InvalidTiers, "tiers"),
        (_with(METERED, mode="stepped"), InvalidOption, "mode"),
        (_with(METERED, free_tokens=-5), InvalidQuantity, "free_tokens"),
        (_with(METERED, minimum_charge=CNY("0")), InvalidPrice, "minimum_charge"),
        (_with(METERED, minimum_charge={"amount": "1", "currency": "USD"}),
         CurrencyMismatch, "minimum_charge.currency"),
        ({"kind": "barter", "code": "x"}, InvalidOffer, "kind"),
        ({"code": "x"}, InvalidOffer, "kind"),
        ("not an object", InvalidOffer, "body"),
    ],
)
def test_bad_terms_raise_a_named_error(data, error, field):
    with pytest.raises(error) as caught:
        offer_from_dict(data)
    assert caught.value.field == field, caught.value
    assert str(caught.value)


def test_tier_rules_apply_to_objects_built_in_code():
    price = UnitPrice("1", "CNY")
    with pytest.raises(InvalidTiers) as caught:
        MeteredRateCard("api", [Tier(0, 100, price), Tier(100, 200, price)])
    assert caught.value.field == "tiers[1].up_to"
    with pytest.raises(InvalidTiers):
        Tier(100, 100, price)


@pytest.mark.parametrize(
    "total, split, expected",
    [
        ("100000.00", {"deposit": 3000, "delivery": 5000, "acceptance": 2000},
         ["30000.00", "50000.00", "20000.00"]),
        ("1000.01", {"acceptance": 3334, "deposit": 3333, "delivery": 3333},
         ["333.30", "333.30", "333.41"]),
        ("500.00", {"deposit": 0, "delivery": 10000}, ["500.00"]),
    ],
)
def test_custom_quote_from_a_split(total, split, expected):
    quote = CustomQuote.from_split("job", Money(total, "CNY"), split)
    assert [str(m.amount.amount) for m in quote.milestones] == expected
    assert quote.total == Money(total, "CNY")
    assert quote.milestones[0].kind in MilestoneKind


def test_custom_quote_split_must_be_whole():
    with pytest.raises(InvalidMilestones) as caught:
        CustomQuote.from_split("job", Money("1", "CNY"), {"deposit": 5000})
    assert caught.value.field == "split_bps"


@pytest.mark.parametrize(
    "months, purchased, ends",
    [
        (12, date(2024, 2, 29), date(2025, 2, 28)),
        (1, date(2024, 1, 31), date(2024, 2, 29)),
        (None, date(2024, 1, 31), None),
    ],
)
def test_licence_term(months, purchased, ends):
    package = MallPackage("p", Money("1", "CNY"), licence_months=months)
    assert package.licence_ends(purchased) == ends
    assert package.perpetual is (months is None)


@pytest.mark.parametrize(
    "period, start, end",
    [
        (Period.MONTH, date(2024, 1, 31), date(2024, 2, 29)),
        (Period.QUARTER, date(2024, 11, 30), date(2025, 2, 28)),
        (Period.YEAR, date(2024, 2, 29), date(2025, 2, 28)),
    ],
)
def test_period_ends(period, start, end):
    assert period.end(start) == end


def test_offers_are_immutable():
    plan = offer_from_dict(SUBSCRIPTION)
    with pytest.raises(Exception):
        plan.price = Money("1", "CNY")  # type: ignore[misc]
    assert Milestone("deposit", Money("1", "CNY")).kind is MilestoneKind.DEPOSIT
