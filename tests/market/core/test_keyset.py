"""Keyset pagination (market.core.keyset): pages in one stable total order whatever the keys'
directions and nulls, and cursors checked on the way back in."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from sqlalchemy import JSON, select, type_coerce

from billing.models import Order
from billing.orders import new_order
from market.core.errors import InvalidInput
from market.core.keyset import Keyset, PageRequest, asc, desc
from tests.factories import make_org

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture()
def placed(session):
    """37 orders of one organization: every fourth never paid (a null key), paid instants
    and totals that repeat, so only the id breaks their ties."""
    org = make_org(session, "buyer")
    for n in range(37):
        order = new_order(session, organization_id=org.id, kind="mall", currency="CNY",
                          payment_method="bank_transfer")
        order.subtotal_minor = order.total_minor = (n % 5) * 100
        order.paid_at = None if n % 4 == 0 else EPOCH + dt.timedelta(hours=n % 3)
    session.flush()
    return org


def _orders(session, org):
    return select(Order).where(Order.organization_id == org.id)


def _walk(keyset, limit):
    seen, cursor = [], None
    while True:
        page = keyset.page(PageRequest(cursor, limit))
        assert len(page.items) <= limit
        seen.extend(page.items)
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


@pytest.mark.parametrize("limit", [1, 4, 10, 36, 37, 200])
def test_mixed_directions_and_nulls_page_in_one_total_order(session, placed, limit):
    keyset = Keyset(session, _orders(session, placed),
                    [asc(Order.paid_at), desc(Order.total_minor), asc(Order.id)])
    expected = sorted(session.scalars(_orders(session, placed)).all(), key=lambda o: (
        o.paid_at is None, o.paid_at or EPOCH, -o.total_minor, o.id))
    assert _walk(keyset, limit) == expected == keyset.all()


def test_nulls_come_last_descending_too(session, placed):
    keyset = Keyset(session, _orders(session, placed), [desc(Order.paid_at), desc(Order.id)])
    seen = _walk(keyset, 5)
    paid = [o.paid_at for o in seen if o.paid_at is not None]
    assert paid == sorted(paid, reverse=True)
    assert all(o.paid_at is None for o in seen[len(paid):])
    assert len(seen) == 37


def test_kept_rows_fill_each_page_across_refused_ones(session, placed):
    keyset = Keyset(session, _orders(session, placed), [desc(Order.id)],
                    keep=lambda order: order.total_minor == 300)
    first = keyset.page(PageRequest(limit=3))
    assert [o.total_minor for o in first.items] == [300] * 3
    seen = _walk(keyset, 3)
    assert [o.id for o in seen] == sorted((o.id for o in keyset.all()), reverse=True)
    assert len(seen) == 7  # n % 5 == 3 for 7 of 37


def test_a_page_starts_after_the_last_row_whatever_was_added(session, placed):
    keyset = Keyset(session, _orders(session, placed), [desc(Order.id)])
    first = keyset.page(PageRequest(limit=10))
    new_order(session, organization_id=placed.id, kind="mall", currency="CNY",
              payment_method="bank_transfer")
    session.flush()
    rest = _walk_from(keyset, first.next_cursor)
    assert not {o.id for o in first.items} & {o.id for o in rest}
    assert len(first.items) + len(rest) == 37


def _walk_from(keyset, cursor):
    seen = []
    while cursor:
        page = keyset.page(PageRequest(cursor, 10))
        seen.extend(page.items)
        cursor = page.next_cursor
    return seen


def _cursor(fingerprint, values) -> str:
    return base64.urlsafe_b64encode(json.dumps([fingerprint, values]).encode()).decode()


def _fingerprint(keyset) -> str:
    cursor = keyset.page(PageRequest(limit=1)).next_cursor
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))[0]


@pytest.mark.parametrize("values", [
    ["2026-01-01T00:00:00", 1],          # a timestamp without its zone
    ["2026-13-01T00:00:00+00:00", 1],    # no such month
    ["0001-01-01T00:00:00+05:00", 1],    # before the first instant once in UTC
    [17, 1],                              # not a timestamp
    ["2026-01-01T00:00:00+00:00", 2**31],  # beyond the id column
    ["2026-01-01T00:00:00+00:00", None],   # the id is never null
    ["2026-01-01T00:00:00+00:00"],          # a key missing
])
def test_a_cursor_holding_what_its_keys_cannot_hold_is_refused(session, placed, values):
    keyset = Keyset(session, _orders(session, placed), [asc(Order.paid_at), asc(Order.id)])
    with pytest.raises(InvalidInput) as refused:
        keyset.page(PageRequest(_cursor(_fingerprint(keyset), values)))
    assert refused.value.field == "cursor"


def test_a_cursor_of_another_ordering_is_refused(session, placed):
    newest = Keyset(session, _orders(session, placed), [desc(Order.id)])
    oldest = Keyset(session, _orders(session, placed), [asc(Order.id)])
    cursor = newest.page(PageRequest(limit=2)).next_cursor
    with pytest.raises(InvalidInput) as refused:
        oldest.page(PageRequest(cursor))
    assert refused.value.field == "cursor"


def test_a_null_key_value_round_trips(session, placed):
    keyset = Keyset(session, _orders(session, placed), [asc(Order.paid_at), asc(Order.id)])
    unpaid = [o for o in keyset.all() if o.paid_at is None]
    cursor = _cursor(_fingerprint(keyset), [None, unpaid[0].id])
    assert keyset.page(PageRequest(cursor, 200)).items == unpaid[1:]


def test_a_key_of_a_type_no_cursor_carries_is_refused_when_declared(session, placed):
    with pytest.raises(TypeError):
        Keyset(session, _orders(session, placed), [asc(type_coerce(Order.note, JSON))])
