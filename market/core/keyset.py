"""Keyset pagination: every list the marketplace answers, read a page at a time in one stable
total order, never cut short.

A list is a query and its sort keys, the last of which is unique (the row's id), so the order
is total: a page starts strictly after the last row of the page before, wherever rows were
added or removed meanwhile, and walking ``next_cursor`` from the first page to the last sees
every row that stayed exactly once. A key may be nullable; nulls sort after every value in
either direction, on SQLite and PostgreSQL alike.

The cursor is opaque to clients: url-safe base64 of the ordering's fingerprint and the last
row's key values. It is checked on the way back in, so a cursor that does not decode, was made
by another ordering, or holds a value its key's column cannot hold (a text with NUL, an integer
beyond the column's range, a date that is not one) is bad input naming ``cursor`` — never a
database error.

Some lists keep only the rows a rule lets the principal see (``keep``), a rule that is not
SQL; a page then reads on past refused rows until it is full or the query is exhausted.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Generic, Sequence, TypeVar

from sqlalchemy import (
    BigInteger, Boolean, ColumnElement, Date, DateTime, Float, Integer, Numeric, Select,
    SmallInteger, String, and_, false, literal, or_, tuple_,
)
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator, TypeEngine

from market.core.errors import InvalidInput

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# A cursor is a few keys; anything longer was not made here.
MAX_CURSOR_LENGTH = 1000

_BAD_CURSOR = "Not a cursor of this list: send the next_cursor of its previous page, or none."
_INT_RANGES = ((SmallInteger, 2**15), (BigInteger, 2**63), (Integer, 2**31))
_MAX_TEXT = 1000


@dataclass(frozen=True)
class Key:
    """One sort key: a column or expression of the query, and its direction."""

    expression: Any
    descending: bool = False
    nullable: bool | None = None  # None: as the column says (an expression: may be null)

    @property
    def may_be_null(self) -> bool:
        if self.nullable is not None:
            return self.nullable
        return bool(getattr(getattr(self.expression, "expression", self.expression),
                            "nullable", True))


def asc(expression: Any, *, nullable: bool | None = None) -> Key:
    return Key(expression, False, nullable)


def desc(expression: Any, *, nullable: bool | None = None) -> Key:
    return Key(expression, True, nullable)


@dataclass(frozen=True)
class PageRequest:
    """Where a page starts (None: at the first row) and how many rows it holds at most."""

    cursor: str | None = None
    limit: int = DEFAULT_LIMIT


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None  # None: this is the last page


class Keyset(Generic[T]):
    """A query in a stable total order, read a page at a time (``page``) or whole (``all``).

    ``statement`` selects the items (one entity, or several columns: an item is then the row's
    tuple); ``order`` are its sort keys, the last one unique.
    """

    def __init__(self, session: Session, statement: Select, order: Sequence[Key], *,
                 keep: Callable[[T], bool] | None = None) -> None:
        if not order:
            raise ValueError("A keyset needs at least one sort key, the last one unique.")
        for key in order:
            _value_kind(key.expression.type)  # a key this module cannot carry fails here
        self._session, self._order, self._keep = session, tuple(order), keep
        self._statement = statement.order_by(None)
        self._width = len(statement.column_descriptions)
        self._fingerprint = hashlib.sha256("|".join(
            f"{key.expression}:{'desc' if key.descending else 'asc'}" for key in self._order
        ).encode()).hexdigest()[:12]

    def page(self, request: PageRequest) -> Page[T]:
        if not 1 <= request.limit <= MAX_LIMIT:
            raise InvalidInput(f"Between 1 and {MAX_LIMIT}.", field="limit")
        after = self._decode(request.cursor) if request.cursor else None
        kept: list[tuple[T, tuple]] = []
        batch = request.limit + 1
        while len(kept) <= request.limit:
            rows = self._rows(after, batch)
            kept.extend((item, key) for item, key in rows
                        if self._keep is None or self._keep(item))
            if len(rows) < batch:
                break
            after = rows[-1][1]
        page = kept[:request.limit]
        more = len(kept) > request.limit
        return Page([item for item, _ in page], self._encode(page[-1][1]) if more else None)

    def all(self) -> list[T]:
        """Every item in order (for a page of the storefront or a command that shows all)."""
        return [item for item, _ in self._rows(None, None)
                if self._keep is None or self._keep(item)]

    def _rows(self, after: tuple | None, limit: int | None) -> list[tuple[T, tuple]]:
        statement = self._statement.add_columns(
            *(key.expression.label(f"_key{i}") for i, key in enumerate(self._order)))
        if after is not None:
            statement = statement.where(_after(self._order, after))
        statement = statement.order_by(*_order_by(self._order))
        if limit is not None:
            statement = statement.limit(limit)
        width = self._width
        return [(row[0] if width == 1 else tuple(row[:width]), tuple(row[width:]))
                for row in self._session.execute(statement).all()]

    def _encode(self, values: tuple) -> str:
        payload = json.dumps([self._fingerprint, [_encoded(value) for value in values]],
                             separators=(",", ":"))
        return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")

    def _decode(self, cursor: str) -> tuple:
        try:
            if len(cursor) > MAX_CURSOR_LENGTH:
                raise ValueError("too long")
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            fingerprint, values = json.loads(raw.decode("utf-8"), parse_constant=_refuse)
            if fingerprint != self._fingerprint or not isinstance(values, list) \
                    or len(values) != len(self._order):
                raise ValueError("another list's cursor")
            return tuple(_decoded(key, value) for key, value in zip(self._order, values))
        except (ValueError, TypeError, UnicodeError, binascii.Error, RecursionError,
                OverflowError, InvalidOperation):
            raise InvalidInput(_BAD_CURSOR, field="cursor") from None


def _order_by(order: Sequence[Key]) -> list[ColumnElement]:
    clauses = []
    for key in order:
        if key.may_be_null:
            clauses.append(key.expression.is_(None))  # false before true: nulls last
        clauses.append(key.expression.desc() if key.descending else key.expression.asc())
    return clauses


def _after(order: Sequence[Key], values: tuple) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in ``order``."""
    if len({key.descending for key in order}) == 1 and not any(
            key.may_be_null for key in order):
        # One direction, no nulls: a row-value comparison, which an index on the keys serves.
        columns = tuple_(*(key.expression for key in order))
        bound = tuple_(*(literal(value, key.expression.type)
                         for key, value in zip(order, values)))
        return columns < bound if order[0].descending else columns > bound
    branches = []
    for i, (key, value) in enumerate(zip(order, values)):
        equal = [_equal(k, v) for k, v in zip(order[:i], values[:i])]
        branches.append(and_(*equal, _beyond(key, value)))
    return or_(*branches)


def _equal(key: Key, value: Any) -> ColumnElement[bool]:
    if value is None:
        return key.expression.is_(None)
    return key.expression == literal(value, key.expression.type)


def _beyond(key: Key, value: Any) -> ColumnElement[bool]:
    if value is None:
        return false()  # nulls come last: nothing but another null follows a null
    bound = literal(value, key.expression.type)
    beyond = key.expression < bound if key.descending else key.expression > bound
    return or_(beyond, key.expression.is_(None)) if key.may_be_null else beyond


# Key values in a cursor ---------------------------------------------------------------------

def _value_kind(type_: TypeEngine) -> str:
    type_ = _impl(type_)
    for kind, types in (("bool", Boolean), ("int", Integer), ("float", Float),
                        ("decimal", Numeric), ("datetime", DateTime), ("date", Date),
                        ("text", String)):
        if isinstance(type_, types):
            return kind
    raise TypeError(f"A sort key of type {type_!r} cannot be carried in a cursor.")


def _encoded(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _decoded(key: Key, value: Any) -> Any:
    """The key's value as its column holds it; ``ValueError`` when it cannot be one."""
    if value is None:
        if not key.may_be_null:
            raise ValueError("null for a key that is never null")
        return None
    type_ = key.expression.type
    kind = _value_kind(type_)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("not a boolean")
        return value
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("not an integer")
        bound = next(limit for cls, limit in _INT_RANGES if isinstance(_impl(type_), cls))
        if not -bound <= value < bound:
            raise ValueError("beyond the column's range")
        return value
    if kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value):
            raise ValueError("not a number")
        return float(value)
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise ValueError("not a text of this key")
    if kind == "decimal":
        number = Decimal(value)
        if not number.is_finite():
            raise ValueError("not a number")
        return number
    if kind == "datetime":
        moment = dt.datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("a timestamp without its zone")
        return moment.astimezone(dt.timezone.utc)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if "\x00" in value:
        raise ValueError("NUL in a text")
    value.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError
    return value


def _impl(type_: TypeEngine) -> TypeEngine:
    while isinstance(type_, TypeDecorator):
        type_ = type_.impl_instance
    return type_


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not a key value")
