"""Rating: graduated and volume tiers, free allowance, minimum charge, subscriptions, royalties."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing import (
    InvalidAmount,
    InvalidQuantity,
    LineItem,
    MallPackage,
    MeteredRateCard,
    Money,
    RoyaltyRateCard,
    SubscriptionPlan,
    Tier,
    TierMode,
    UnitPrice,
    UnsupportedOffer,
    Usage,
    price_tiers,
    rate,
)


def cny(amount: str) -> Money:
    return Money(amount, "CNY")


def per_m(amount: str) -> UnitPrice:
    return UnitPrice(amount, "CNY")


# The rate card of rating.py's docstring.
TIERS = (
    Tier(0, 1_000_000, per_m("2.00")),
    Tier(1_000_000, 10_000_000, per_m("1.50")),
    Tier(10_000_000, None, per_m("1.00")),
)


def card(mode="graduated", **kw) -> MeteredRateCard:
    return MeteredRateCard("api", TIERS, mode=mode, **kw)


def amounts(rating) -> list[str]:
    return [format(line.amount.amount, "f") for line in rating.lines]


@pytest.mark.parametrize(
    "tokens, lines, total",
    [
        (0, [], "0.00"),
        (500_000, ["1.00"], "1.00"),
        (1_000_000, ["2.00"], "2.00"),
        # One token into tier 2 costs 0.0000015 -> 0.00: rounded at the line, not per token.
        (1_000_001, ["2.00", "0.00"], "2.00"),
        (1_333_333, ["2.00", "0.50"], "2.50"),  # 333,333 x 1.5 / 1M = 0.4999995 -> 0.50
        (10_000_000, ["2.00", "13.50"], "15.50"),
        (12_500_000, ["2.00", "13.50", "2.50"], "18.00"),  # the docstring example
    ],
)
def test_graduated_tiers(tokens, lines, total):
    rating = rate(Usage(tokens), card())
    assert amounts(rating) == lines
    assert rating.total == cny(total)
    assert [l.code for l in rating.lines] == [f"tier_{i + 1}" for i in range(len(lines))]


@pytest.mark.parametrize(
    "tokens, line, total",
    [
        (0, [], "0.00"),
        (1_000_000, ["2.00"], "2.00"),
        (1_000_001, ["1.50"], "1.50"),  # the whole volume drops to tier 2
        (10_000_000, ["15.00"], "15.00"),  # up_to is inclusive
        (12_500_000, ["12.50"], "12.50"),  # the docstring example: all at tier 3
    ],
)
def test_volume_tiers(tokens, line, total):
    rating = rate(Usage(tokens), card("volume"))
    assert amounts(rating) == line
    assert rating.total == cny(total)
    if tokens:
        assert rating.lines[0].quantity == tokens


@pytest.mark.parametrize(
    "mode, tokens, codes, lines, total",
    [
        # 1,000,000 free, then the tiers count the billable tokens from zero.
        ("graduated", 1_500_000, ["free_allowance", "tier_1"], ["0.00", "1.00"], "1.00"),
        ("graduated", 800_000, ["free_allowance"], ["0.00"], "0.00"),
        ("graduated", 12_000_000, ["free_allowance", "tier_1", "tier_2", "tier_3"],
         ["0.00", "2.00", "13.50", "1.00"], "16.50"),
        ("volume", 12_000_000, ["free_allowance", "tier_3"], ["0.00", "11.00"], "11.00"),
    ],
)
def test_free_allowance(mode, tokens, codes, lines, total):
    rating = rate(Usage(tokens), card(mode, free_tokens=1_000_000))
    assert [l.code for l in rating.lines] == codes
    assert amounts(rating) == lines
    assert rating.total == cny(total)


@pytest.mark.parametrize(
    "free, tokens, lines, total",
    [
        (0, 1_000_000, ["2.00", "3.00"], "5.00"),  # 2.00 of usage, topped up to 5.00
        (0, 5_000_000, ["2.00", "6.00"], "8.00"),  # above the minimum: no top-up
        (0, 0, [], "0.00"),  # no usage, nothing owed
        (1_000_000, 999_999, ["0.00"], "0.00"),  # inside the free allowance: still free
        (1_000_000, 1_000_001, ["0.00", "0.00", "5.00"], "5.00"),
    ],
)
def test_minimum_charge(free, tokens, lines, total):
    rating = rate(Usage(tokens), card(free_tokens=free, minimum_charge=cny("5.00")))
    assert amounts(rating) == lines
    assert rating.total == cny(total)


def test_fine_unit_prices_round_once_per_line():
    usd = MeteredRateCard("api", [Tier(0, None, UnitPrice("0.15", "USD"))])
    rating = rate(Usage(123_456_789), usd)
    assert rating.total == Money("18.52", "USD")  # 18.51851835


PLAN = SubscriptionPlan(
    "monthly", "month", cny("2000.00"), included_tokens=5_000_000,
    overage_per_million=per_m("20"), rollover=False,
)
ROLLOVER = SubscriptionPlan(
    "monthly-rollover", "month", cny("2000.00"), included_tokens=5_000_000,
    overage_per_million=per_m("20"), rollover=True,
)


@pytest.mark.parametrize(
    "plan, usage, lines, total, carry",
    [
        (PLAN, Usage(3_000_000), ["2000.00"], "2000.00", 0),
        (PLAN, Usage(5_000_000), ["2000.00"], "2000.00", 0),
        (PLAN, Usage(6_250_000), ["2000.00", "25.00"], "2025.00", 0),
        (PLAN, Usage(5_000_001), ["2000.00", "0.00"], "2000.00", 0),  # 0.00002 -> 0.00
        (ROLLOVER, Usage(3_000_000), ["2000.00"], "2000.00", 2_000_000),
        # Carried-in tokens are used first; 500,000 of this period's are left to carry.
        (ROLLOVER, Usage(6_500_000, carried_in_tokens=2_000_000), ["2000.00"], "2000.00", 500_000),
        (ROLLOVER, Usage(8_000_000, carried_in_tokens=2_000_000), ["2000.00", "20.00"], "2020.00", 0),
        # Unused carried-in tokens expire; only this period's unused carry on.
        (ROLLOVER, Usage(1_000_000, carried_in_tokens=5_000_000), ["2000.00"], "2000.00", 5_000_000),
    ],
)
def test_subscription_with_overage_and_rollover(plan, usage, lines, total, carry):
    rating = rate(usage, plan)
    assert amounts(rating) == lines
    assert rating.total == cny(total)
    assert rating.carry_over_tokens == carry


def test_subscription_overage_only_when_the_fee_was_billed_in_advance():
    rating = rate(Usage(6_250_000), PLAN, include_fee=False)
    assert [l.code for l in rating.lines] == ["overage"]
    assert rating.total == cny("25.00")


@pytest.mark.parametrize(
    "usage, offer, error, field",
    [
        (Usage(1, carried_in_tokens=1), PLAN, InvalidQuantity, "carried_in_tokens"),
        (Usage(1, carried_in_tokens=5_000_001), ROLLOVER, InvalidQuantity, "carried_in_tokens"),
        (Usage(1, carried_in_tokens=1), card(), InvalidQuantity, "carried_in_tokens"),
        (Usage(1), MallPackage("p", cny("1")), UnsupportedOffer, "offer"),
        ("lots", PLAN, InvalidQuantity, "usage"),
    ],
)
def test_rating_errors(usage, offer, error, field):
    with pytest.raises(error) as caught:
        rate(usage, offer)
    assert caught.value.field == field


@pytest.mark.parametrize("tokens, field", [(-1, "tokens"), (1.0, "tokens")])
def test_usage_is_a_whole_number_of_tokens(tokens, field):
    with pytest.raises(Exception) as caught:
        Usage(tokens)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "mode, generated, lines, total",
    [
        # Royalty on tokens a model trained on the data generates.
        ("graduated", 250_000_000, ["50.00", "45.00"], "95.00"),
        ("volume", 250_000_000, ["75.00"], "75.00"),
        ("graduated", 1_000, ["0.00"], "0.00"),
    ],
)
def test_royalty_rate_card(mode, generated, lines, total):
    royalty = RoyaltyRateCard(
        "model-output",
        [Tier(0, 100_000_000, per_m("0.50")), Tier(100_000_000, None, per_m("0.30"))],
        mode=mode,
    )
    rating = rate(Usage(generated), royalty)
    assert amounts(rating) == lines
    assert rating.total == cny(total)
    assert "generated" in rating.lines[0].description


def test_line_items_round_trip_and_refuse_tampering():
    rating = rate(Usage(12_500_000), card())
    for line in rating.lines:
        stored = json.loads(json.dumps(line.to_dict()))
        assert LineItem.from_dict(stored) == line
    tampered = rating.lines[0].to_dict()
    tampered["amount"] = {"amount": "1.00", "currency": "CNY"}
    with pytest.raises(InvalidAmount) as caught:
        LineItem.from_dict(tampered)
    assert caught.value.field == "amount"
    assert rating.to_dict()["total"] == {"amount": "18.00", "currency": "CNY"}


# -- properties ------------------------------------------------------------

@st.composite
def tier_lists(draw):
    bounds = sorted(draw(st.sets(st.integers(1, 50_000_000), min_size=0, max_size=5)))
    starts = [0] + bounds
    ends = bounds + [None]
    prices = draw(
        st.lists(
            st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False, allow_infinity=False),
            min_size=len(starts), max_size=len(starts),
        )
    )
    return tuple(Tier(a, b, UnitPrice(p, "CNY")) for a, b, p in zip(starts, ends, prices))


@settings(max_examples=150, deadline=None)
@given(tiers=tier_lists(), tokens=st.integers(0, 100_000_000))
def test_graduated_rating_is_the_sum_over_tiers(tiers, tokens):
    rating = rate(Usage(tokens), MeteredRateCard("api", tiers))
    # Independently: the tokens inside each tier at that tier's price, rounded per tier.
    expected_minor = 0
    exact = Fraction(0)
    for tier in tiers:
        top = tokens if tier.up_to is None else min(tokens, tier.up_to)
        inside = max(0, top - tier.from_tokens)
        line = Fraction(tier.price_per_million.amount) * inside / 1_000_000 * 100
        exact += line
        expected_minor += int(line + Fraction(1, 2))  # half-up for non-negatives
    assert rating.total.minor == expected_minor
    assert sum(l.quantity for l in rating.lines) == tokens
    # Rounding per tier line keeps the total within half a fen per line of exact.
    assert abs(rating.total.minor - exact) <= Fraction(len(rating.lines), 2)


@settings(max_examples=150, deadline=None)
@given(
    tiers=tier_lists(),
    a=st.integers(0, 100_000_000),
    b=st.integers(0, 100_000_000),
    free=st.integers(0, 5_000_000),
    minimum=st.one_of(st.none(), st.integers(1, 10_000)),
)
def test_graduated_rating_is_monotone(tiers, a, b, free, minimum):
    low, high = sorted((a, b))
    rate_card = MeteredRateCard(
        "api", tiers, free_tokens=free,
        minimum_charge=None if minimum is None else Money.from_minor(minimum, "CNY"),
    )
    assert rate(Usage(low), rate_card).total <= rate(Usage(high), rate_card).total


def test_volume_rating_is_not_monotone_at_a_boundary():
    # Documented behaviour, asserted so the docstring stays true.
    volume = card("volume")
    assert rate(Usage(10_000_000), volume).total > rate(Usage(10_000_001), volume).total


def test_price_tiers_directly():
    lines = price_tiers(2_000_000, TIERS, TierMode.GRADUATED)
    assert [(l.quantity, l.per) for l in lines] == [(1_000_000, 1_000_000), (1_000_000, 1_000_000)]
    assert Decimal(lines[1].unit_price.amount) == Decimal("1.5")
