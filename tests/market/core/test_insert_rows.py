"""insert_rows: many rows in few statements, the same on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import (
    BigInteger, Column, Date, Integer, MetaData, Numeric, String, Table, select,
)
from sqlalchemy.exc import IntegrityError, StatementError

from market.core.db import NAMING_CONVENTION, UTCDateTime, breaks_unique, insert_rows

METADATA = MetaData(naming_convention=NAMING_CONVENTION)  # named as the app's tables are
READINGS = Table(
    "test_readings", METADATA,
    Column("id", Integer, primary_key=True),
    Column("reference", String(40), unique=True),
    Column("site", String(40)),
    Column("label", String(200)),
    Column("tokens", BigInteger),
    Column("day", Date),
    Column("taken_at", UTCDateTime),
)
TAKEN = dt.datetime(2026, 11, 3, 8, 30, tzinfo=dt.timezone.utc)


@pytest.fixture()
def readings(session):
    READINGS.create(session.connection())  # rolled back with the test's transaction
    return READINGS


def _rows(*references: str) -> list[dict]:
    return [{"reference": reference, "label": f"电网 reading {reference} \"quoted\"",
             "tokens": 10**12 + n, "day": dt.date(2026, 11, n + 1),
             "taken_at": TAKEN + dt.timedelta(minutes=n)}
            for n, reference in enumerate(references)]


def test_rows_and_constant_columns_are_written_as_given(session, readings):
    assert insert_rows(session, readings, _rows("a", "b", "c"),
                       constant={"site": "north"}, batch=2) == 3
    stored = session.execute(select(readings).order_by(readings.c.id)).mappings().all()
    assert [dict(row, id=None) for row in stored] == [
        dict(row, id=None, site="north") for row in _rows("a", "b", "c")]


def test_nothing_to_write_writes_nothing(session, readings):
    assert insert_rows(session, readings, []) == 0


def test_a_naive_time_is_refused(session, readings):
    rows = _rows("a")
    rows[0]["taken_at"] = TAKEN.replace(tzinfo=None)
    # PostgreSQL's path refuses it itself; SQLite's through the column type (wrapped).
    with pytest.raises((ValueError, StatementError), match="naive datetime"):
        insert_rows(session, readings, rows)


PRICES = Table(
    "test_prices", METADATA,
    Column("id", Integer, primary_key=True),
    Column("reference", String(40), unique=True),
    Column("price", Numeric(12, 6)),  # no binary form in insert_rows: sent as text instead
    Column("taken_at", UTCDateTime),
)


def test_a_column_without_a_binary_form_is_written_all_the_same(session):
    PRICES.create(session.connection())
    rows = [{"reference": "p", "price": Decimal("8.123456"), "taken_at": TAKEN},
            {"reference": "q", "price": None, "taken_at": TAKEN}]
    assert insert_rows(session, PRICES, rows) == 2
    stored = session.execute(select(PRICES.c.reference, PRICES.c.price, PRICES.c.taken_at)
                             .order_by(PRICES.c.id)).all()
    assert [tuple(row) for row in stored] == [("p", Decimal("8.123456"), TAKEN),
                                              ("q", None, TAKEN)]


def test_a_repeated_unique_value_raises_integrity_error_named_by_its_column(session, readings):
    insert_rows(session, readings, _rows("a"))
    with pytest.raises(IntegrityError) as raised:
        insert_rows(session, readings, _rows("b", "a"))
    assert breaks_unique(raised.value, readings, "reference")
    assert not breaks_unique(raised.value, readings, "site")
