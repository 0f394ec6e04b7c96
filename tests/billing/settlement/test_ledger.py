"""The ledger: balanced, append-only, idempotent postings; payments split and refunds mirrored."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from billing.settlement.ledger import (
    LedgerEntry, Line, Purpose, balance, get_account, post, trial_balance,
    unbalanced_transactions,
)
from billing.settlement.split import participant_key, post_payment, post_refund, split_payment
from market.core.errors import Conflict, InvalidInput
from pricing.money import Money


def cny(amount: str) -> Money:
    return Money(Decimal(amount), "CNY")


def test_a_balanced_transaction_is_recorded(session):
    clearing = get_account(session, Purpose.PLATFORM_CLEARING, "CNY")
    revenue = get_account(session, Purpose.PLATFORM_REVENUE, "CNY")
    transaction = post(session, "test", [Line.debit(clearing, cny("10.00")),
                                         Line.credit(revenue, cny("10.00"))],
                       idempotency_key="t1")
    assert [e.amount_minor for e in transaction.entries] == [1000, -1000]
    assert balance(session, revenue) == cny("-10.00")
    assert trial_balance(session) == {"CNY": 0}


@pytest.mark.parametrize("lines, message", [
    (lambda a, b: [Line.debit(a, cny("10.00")), Line.credit(b, cny("9.99"))], "balance"),
    (lambda a, b: [], "at least one"),
    (lambda a, b: [Line.debit(a, Money(Decimal("1"), "USD")),
                   Line.credit(b, Money(Decimal("1"), "USD"))], "takes CNY"),
])
def test_bad_postings_are_refused(session, lines, message):
    a = get_account(session, Purpose.PLATFORM_CLEARING, "CNY")
    b = get_account(session, Purpose.PLATFORM_REVENUE, "CNY")
    with pytest.raises(InvalidInput, match=message):
        post(session, "test", lines(a, b), idempotency_key="bad")


def test_posting_is_idempotent_by_key(session):
    a = get_account(session, Purpose.PLATFORM_CLEARING, "CNY")
    b = get_account(session, Purpose.PLATFORM_REVENUE, "CNY")
    lines = [Line.debit(a, cny("5.00")), Line.credit(b, cny("5.00"))]
    first = post(session, "test", lines, idempotency_key="k")
    assert post(session, "test", lines, idempotency_key="k").id == first.id
    assert balance(session, a) == cny("5.00")
    with pytest.raises(Conflict):
        post(session, "test", [Line.debit(a, cny("6.00")), Line.credit(b, cny("6.00"))],
             idempotency_key="k")


def test_entries_are_never_changed(session):
    a = get_account(session, Purpose.PLATFORM_CLEARING, "CNY")
    b = get_account(session, Purpose.PLATFORM_REVENUE, "CNY")
    transaction = post(session, "test", [Line.debit(a, cny("1.00")), Line.credit(b, cny("1.00"))],
                       idempotency_key="x")
    transaction.entries[0].amount_minor = 5
    with pytest.raises(Conflict):
        session.flush()
    session.rollback()


def test_a_payment_is_split_exactly_and_a_full_refund_mirrors_it(session):
    shares = [(participant_key("supplier", 11), 6_000), (participant_key("processor", 12), 2_500),
              (participant_key("exchange", 13), 1_000), (participant_key("channel", 14), 500)]
    split = split_payment(cny("1060.01"), cny("60.00"), shares, platform_fee_bps=500)
    assert sum(m.minor for m in split.values()) == 106_001
    assert split["tax"] == cny("60.00") and split["platform"] == cny("50.00")
    post_payment(session, split, idempotency_key="pay-1", reference=("order", 1))
    supplier = get_account(session, Purpose.PARTICIPANT_PAYABLE, "CNY", 11)
    assert balance(session, supplier) == -split["supplier:11"]

    _, first = post_refund(session, split, {}, cny("300.00"), idempotency_key="r1",
                           reference=("order", 1))
    _, rest = post_refund(session, split, first, cny("760.01"), idempotency_key="r2",
                          reference=("order", 1))
    assert {k: first[k] + rest[k] for k in split} == split
    for key in split:
        account = {"tax": get_account(session, Purpose.TAX_PAYABLE, "CNY"),
                   "platform": get_account(session, Purpose.PLATFORM_REVENUE, "CNY")}.get(key)
        if account is None:
            account = get_account(session, Purpose.PARTICIPANT_PAYABLE, "CNY",
                                  int(key.rsplit(":", 1)[1]))
        assert balance(session, account).is_zero()
    with pytest.raises(InvalidInput, match="exceeds"):
        post_refund(session, split, split, cny("0.01"), idempotency_key="r3",
                    reference=("order", 1))
    assert trial_balance(session) == {"CNY": 0} and unbalanced_transactions(session) == []


def test_entries_cannot_be_edited_behind_the_ledger_without_showing(session):
    a = get_account(session, Purpose.PLATFORM_CLEARING, "CNY")
    b = get_account(session, Purpose.PLATFORM_REVENUE, "CNY")
    transaction = post(session, "test", [Line.debit(a, cny("2.00")), Line.credit(b, cny("2.00"))],
                       idempotency_key="y")
    session.execute(update(LedgerEntry).where(LedgerEntry.id == transaction.entries[0].id)
                    .values(amount_minor=300))
    assert unbalanced_transactions(session) == [transaction.id]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gross=st.integers(min_value=1, max_value=10**9),
       tax_bps=st.integers(min_value=0, max_value=2_000),
       fee_bps=st.integers(min_value=0, max_value=10_000),
       weights=st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=6)
       .filter(lambda w: sum(w) > 0),
       refunds=st.lists(st.integers(min_value=1, max_value=10**9), max_size=6))
def test_payments_and_refunds_keep_the_ledger_sound(session, gross, tax_bps, fee_bps, weights,
                                                    refunds):
    total = sum(weights)
    bps = [w * 10_000 // total for w in weights]
    bps[0] += 10_000 - sum(bps)
    shares = [(participant_key("supplier", 100 + i), b) for i, b in enumerate(bps)]
    gross_money = Money.from_minor(gross, "CNY")
    tax = Money.from_minor(gross * tax_bps // 10_000, "CNY")
    nested = session.begin_nested()
    try:
        split = split_payment(gross_money, tax, shares, fee_bps)
        assert sum(m.minor for m in split.values()) == gross
        post_payment(session, split, idempotency_key="p", reference=("order", 1))
        refunded: dict[str, Money] = {}
        left = gross
        for n, amount in enumerate(refunds):
            if amount > left:
                with pytest.raises(InvalidInput):
                    post_refund(session, split, refunded, Money.from_minor(amount, "CNY"),
                                idempotency_key=f"r{n}", reference=("order", 1))
                continue
            _, parts = post_refund(session, split, refunded, Money.from_minor(amount, "CNY"),
                                   idempotency_key=f"r{n}", reference=("order", 1))
            refunded = {k: refunded.get(k, Money.zero("CNY")) + parts[k] for k in split}
            left -= amount
            for key in split:
                assert Money.zero("CNY") <= refunded[key] <= split[key]
        assert trial_balance(session) == {"CNY": 0}
        assert unbalanced_transactions(session) == []
        for i in range(len(shares)):
            payable = get_account(session, Purpose.PARTICIPANT_PAYABLE, "CNY", 100 + i)
            assert balance(session, payable).minor <= 0  # owed to the participant, never by it
    finally:
        nested.rollback()
