"""Allocation: exact largest-remainder splits, and refunds that mirror them."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pricing import (
    CURRENCY_MINOR_UNITS,
    AllocatedPayment,
    CurrencyMismatch,
    FloatNotAllowed,
    InvalidAmount,
    InvalidShares,
    Money,
    OverRefund,
    allocate,
    allocate_refund,
    split_minor,
    validate_shares,
)


def cny(amount: str) -> Money:
    return Money(amount, "CNY")


def minors(parts) -> list[int]:
    return [m.minor for m in parts.values()]


@pytest.mark.parametrize(
    "amount, currency, shares, expected",
    [
        # allocation.py's docstring: the fen left over goes to the largest remainder.
        ("100.01", "CNY", [3333, 3333, 3334], [3333, 3333, 3335]),
        ("100.00", "CNY", [3333, 3333, 3334], [3333, 3333, 3334]),
        # Equal remainders: participant order breaks the tie.
        ("0.01", "CNY", [5000, 5000], [1, 0]),
        # 0.6666 / 0.6666 / 0.6668 fen: the largest remainder first, then the first of the tie.
        ("0.02", "CNY", [3333, 3333, 3334], [1, 0, 1]),
        ("1", "JPY", [7000, 3000], [1, 0]),
        ("10", "JPY", [3333, 3333, 3334], [3, 3, 4]),
        ("0.001", "KWD", [2500, 7500], [0, 1]),
        ("9800.00", "CNY", [7000, 2000, 500, 500], [686000, 196000, 49000, 49000]),
        ("-100.01", "CNY", [3333, 3333, 3334], [-3333, -3333, -3335]),  # a chargeback mirrors
        ("0.00", "CNY", [6000, 4000], [0, 0]),
        ("123.45", "CNY", [10000], [12345]),
        ("0.03", "CNY", [0, 10000, 0], [0, 3, 0]),  # no share, nothing allocated
    ],
)
def test_allocation_with_worked_numbers(amount, currency, shares, expected):
    keys = [f"p{i}" for i in range(len(shares))]
    parts = allocate(Money(amount, currency), dict(zip(keys, shares)))
    assert list(parts) == keys  # participant order kept
    assert minors(parts) == expected
    assert sum(expected) == Money(amount, currency).minor


@pytest.mark.parametrize("total, weights, expected", [
    (10, [1, 1, 1], [4, 3, 3]),        # ties go to the earlier weight
    (-10, [1, 1, 1], [-4, -3, -3]),    # a negative total mirrors the positive split
    (7, [120, 0, 30], [6, 0, 1]),      # e.g. a charge split over events by their tokens
    (5, [0, 0], [0, 0]),               # nothing to weigh by, nothing given
    (0, [3, 4], [0, 0]),
])
def test_split_minor_is_the_largest_remainder_of_any_weights(total, weights, expected):
    assert split_minor(total, weights) == expected


def test_split_minor_refuses_a_negative_weight():
    with pytest.raises(InvalidShares) as refused:
        split_minor(10, [5, -1])
    assert refused.value.field == "weights"


def test_shares_may_be_a_sequence_of_pairs():
    parts = allocate(cny("0.01"), [("platform", 5000), ("supplier", 5000)])
    assert parts == {"platform": cny("0.01"), "supplier": cny("0.00")}
    assert validate_shares([("a", 10000)]) == (("a", 10000),)


@pytest.mark.parametrize(
    "shares, error",
    [
        ({"a": 5000, "b": 4999}, InvalidShares),
        ({"a": 5000, "b": 5001}, InvalidShares),
        ({"a": -1, "b": 10001}, InvalidShares),
        ({"a": 5000.0, "b": 5000}, FloatNotAllowed),
        ({"a": True, "b": 9999}, InvalidShares),
        ({"a": "5000", "b": 5000}, InvalidShares),
        ({}, InvalidShares),
        ([("a", 5000), ("a", 5000)], InvalidShares),
        ([("a", 5000, 1)], InvalidShares),
        ("a=10000", InvalidShares),
    ],
)
def test_bad_shares_are_named(shares, error):
    with pytest.raises(error) as caught:
        allocate(cny("1"), shares)
    assert caught.value.field == "shares_bps"


def test_allocating_something_that_is_not_money():
    with pytest.raises(InvalidAmount) as caught:
        allocate("100", {"a": 10000})
    assert caught.value.field == "amount"


# -- refunds -----------------------------------------------------------------

SPLIT = {"supplier": 7000, "annotator": 2000, "platform": 1000}


@pytest.mark.parametrize(
    "refunds, parts, cumulative",
    [
        # A full refund reverses exactly the original split.
        (["100.00"], [[7000, 2000, 1000]], [7000, 2000, 1000]),
        (["10.00"], [[700, 200, 100]], [700, 200, 100]),
        # Fen by fen the cumulative reversal follows the exact shares: 0.7/0.2/0.1 -> 1/0/0;
        # 1.4/0.4/0.2 -> 2/0/0 (equal remainders: the earlier participant); 2.1/0.6/0.3 -> 2/1/0.
        (["0.01", "0.01", "0.01"], [[1, 0, 0], [1, 0, 0], [0, 1, 0]], [2, 1, 0]),
        # Two partial refunds reverse what one refund of the sum would.
        (["30.00", "20.00"], [[2100, 600, 300], [1400, 400, 200]], [3500, 1000, 500]),
        (["33.33", "66.67"], [[2333, 667, 333], [4667, 1333, 667]], [7000, 2000, 1000]),
    ],
)
def test_refunds_with_worked_numbers(refunds, parts, cumulative):
    payment = AllocatedPayment.create(cny("100.00"), SPLIT)
    for refund, expected in zip(refunds, parts):
        got, payment = payment.refund(cny(refund))
        assert minors(got) == expected
        assert sum(expected) == cny(refund).minor
    assert minors(payment.refunded_by_participant) == cumulative


def test_alabama_paradox_never_takes_money_back():
    # Received 0.01 / 0.03 / 0.03. After 0.03 refunded as 1/1/1 fen, the exact
    # shares of 0.04 are 0.57/1.71/1.71 and largest remainder says 0/2/2: the
    # first participant cannot be reversed -1 fen, so it keeps its 1 and the
    # others catch up (b before c: equal remainders, participant order).
    original = {"a": cny("0.01"), "b": cny("0.03"), "c": cny("0.03")}
    first = allocate_refund(original, {}, cny("0.03"))
    assert minors(first) == [1, 1, 1]
    second = allocate_refund(original, first, cny("0.01"))
    assert minors(second) == [0, 1, 0]
    rest = allocate_refund(original, {k: first[k] + second[k] for k in original}, cny("0.03"))
    assert minors(rest) == [0, 1, 2]  # everything returned, nobody over-reversed


def test_an_unavoidable_deviation_stays_under_two_minor_units():
    # allocation.py's docstring: six participants received 0.01, two 0.05.
    original = {f"small{i}": cny("0.01") for i in range(6)} | {"big1": cny("0.05"), "big2": cny("0.05")}
    refunded: dict = {}
    for refund in ("0.03", "0.09", "0.01"):
        parts = allocate_refund(original, refunded, cny(refund))
        refunded = {k: refunded.get(k, cny("0")) + parts[k] for k in original}
    assert minors(refunded) == [1, 1, 1, 1, 1, 1, 4, 3]  # big2: 3 fen against an exact 4.0625
    last = allocate_refund(original, refunded, cny("0.03"))
    assert minors({k: refunded[k] + last[k] for k in original}) == [1, 1, 1, 1, 1, 1, 5, 5]


@pytest.mark.parametrize(
    "already, refund, error, field",
    [
        ({}, "100.01", OverRefund, "amount"),
        ({"supplier": cny("70.00"), "annotator": cny("20.00")}, "10.01", OverRefund, "amount"),
        ({}, "0.00", InvalidAmount, "amount"),
        ({}, "-1.00", InvalidAmount, "amount"),
        ({"supplier": cny("70.01")}, "1.00", OverRefund, "already_refunded"),
        ({"stranger": cny("1.00")}, "1.00", InvalidShares, "already_refunded"),
    ],
)
def test_refund_errors_are_named(already, refund, error, field):
    original = allocate(cny("100.00"), SPLIT)
    with pytest.raises(error) as caught:
        allocate_refund(original, already, cny(refund))
    assert caught.value.field == field


def test_refund_in_another_currency():
    with pytest.raises(CurrencyMismatch) as caught:
        AllocatedPayment.create(cny("100.00"), SPLIT).refund(Money("1.00", "USD"))
    assert caught.value.field == "amount"


def test_allocated_payment_round_trips_and_refuses_a_doctored_split():
    payment = AllocatedPayment.create(cny("100.01"), SPLIT)
    _, payment = payment.refund(cny("33.33"))
    stored = json.loads(json.dumps(payment.to_dict()))
    assert AllocatedPayment.from_dict(stored) == payment
    assert AllocatedPayment.from_dict(stored).refundable == cny("66.68")
    stored["received"]["supplier"] = {"amount": "70.00", "currency": "CNY"}
    with pytest.raises(InvalidShares) as caught:
        AllocatedPayment.from_dict(stored)
    assert caught.value.field == "received"


# -- properties --------------------------------------------------------------

@st.composite
def share_vectors(draw, max_participants=8):
    n = draw(st.integers(1, max_participants))
    cuts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=n - 1, max_size=n - 1)))
    return [b - a for a, b in zip([0] + cuts, cuts + [10_000])]


@settings(max_examples=300, deadline=None)
@given(
    minor=st.integers(-(10**15), 10**15),
    currency=st.sampled_from(sorted(CURRENCY_MINOR_UNITS)),
    shares=share_vectors(),
)
def test_allocation_conserves_and_is_within_one_minor_unit(minor, currency, shares):
    amount = Money.from_minor(minor, currency)
    keys = [f"p{i}" for i in range(len(shares))]
    parts = allocate(amount, list(zip(keys, shares)))
    assert list(parts) == keys
    assert all(p.currency == amount.currency for p in parts.values())
    assert sum(p.minor for p in parts.values()) == minor
    for bps, part in zip(shares, parts.values()):
        exact = Fraction(minor * bps, 10_000)
        assert abs(part.minor - exact) < 1
        if bps == 0:
            assert part.minor == 0
    assert allocate(amount, list(zip(keys, shares))) == parts  # deterministic


@settings(max_examples=200, deadline=None)
@given(
    minor=st.integers(0, 10**6),
    shares=share_vectors(6),
    fractions=st.lists(st.integers(1, 10_000), min_size=1, max_size=12),
    finish=st.booleans(),
)
def test_partial_refunds_never_reverse_more_than_was_allocated(minor, shares, fractions, finish):
    payment = AllocatedPayment.create(
        Money.from_minor(minor, "CNY"), [(f"p{i}", s) for i, s in enumerate(shares)]
    )
    received = {k: m.minor for k, m in payment.received}
    for bps in fractions:
        remaining = payment.refundable.minor
        if remaining == 0:
            break
        refund = max(1, remaining * bps // 10_000)
        parts, payment = payment.refund(Money.from_minor(refund, "CNY"))
        assert sum(p.minor for p in parts.values()) == refund
        assert all(p.minor >= 0 for p in parts.values())
        total = payment.total_refunded.minor
        for key, reversed_ in payment.refunded:
            assert reversed_.minor <= received[key]
            # Proportional: cumulative reversal within two minor units of the exact share
            # (within one whenever possible: see the next test).
            assert abs(reversed_.minor - Fraction(total * received[key], minor)) < 2
    # Refunding more than remains is refused, and changes nothing.
    with pytest.raises(OverRefund):
        payment.refund(Money.from_minor(payment.refundable.minor + 1, "CNY"))
    if finish and payment.refundable.is_positive():
        _, payment = payment.refund(payment.refundable)
    if finish or payment.refundable.is_zero():
        # Fully refunded: the reversal mirrors the original split exactly.
        assert payment.refunded_by_participant == payment.received_by_participant


@settings(max_examples=200, deadline=None)
@given(
    received=st.lists(st.integers(0, 50), min_size=1, max_size=6),
    steps=st.lists(st.integers(1, 12), min_size=1, max_size=40),
)
def test_small_amounts_refunded_in_tiny_steps(received, steps):
    # Tiny amounts and many participants make the Alabama-paradox path frequent.
    assume(sum(received) > 0)
    original = {f"p{i}": Money.from_minor(m, "CNY") for i, m in enumerate(received)}
    refunded = {k: Money.zero("CNY") for k in original}
    total = sum(received)
    for step in steps:
        before = [m.minor for m in refunded.values()]
        left = total - sum(before)
        if left == 0:
            break
        refund = min(step, left)
        done = sum(before) + refund
        # Within one minor unit of every exact share is possible iff giving each
        # participant max(what it has, floor of its exact share) does not overshoot.
        possible = sum(max(b, done * w // total) for b, w in zip(before, received)) <= done
        parts = allocate_refund(original, refunded, Money.from_minor(refund, "CNY"))
        assert sum(p.minor for p in parts.values()) == refund
        refunded = {k: refunded[k] + parts[k] for k in original}
        for k, m in refunded.items():
            assert 0 <= m.minor <= original[k].minor
            deviation = abs(m.minor - Fraction(done * original[k].minor, total))
            assert deviation < (1 if possible else 2)
    if sum(m.minor for m in refunded.values()) == total:
        assert refunded == original
