"""Engine, sessions, the declarative base and its naming convention.

This module knows nothing of Flask: services, scheduled jobs and CLI commands all take a plain
``Session``. The web layer opens one session per request (see ``market.web.app``).
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
from operator import itemgetter
from collections.abc import Iterable
from typing import Any

import psycopg
from sqlalchemy import (
    BigInteger, Boolean, Date, DateTime, Enum, Integer, MetaData, SmallInteger, String, Table,
    create_engine, event, func, insert,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from pricing.periods import BusinessCalendar

logger = logging.getLogger(__name__)

# Constraint names are part of the schema: migrations can only drop or alter what they can name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def one_of(column: str, values: Iterable[str]) -> str:
    """The CHECK clause that allows ``column`` only ``values``: ``status IN ('open', 'paid')``.

    Written from each value's text, so a ``StrEnum`` gives its values (its repr is not one).
    """
    return f"{column} IN ({', '.join(repr(str(value)) for value in values)})"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database keeps.

    SQLite has no time zones; storing naive UTC there and re-attaching UTC on the way out keeps
    comparisons between database values and ``utcnow()`` valid on both databases.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)



def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the settings the marketplace relies on for each database."""
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {}).setdefault("timeout", 30)
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite starts transactions lazily and never for SAVEPOINT; taking over BEGIN makes
    # transactions (and the savepoints tests roll back) behave as on PostgreSQL.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL never corrupts the database; a power cut may lose the last
        # commits, as a crash may on PostgreSQL. It spares an fsync on every commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
        # SQLite knows no time zones: a stored UTC instant's business day is Python's to say.
        dbapi_connection.create_function("market_local_day", 2, _local_day, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # IMMEDIATE takes the write lock up front, so two writers queue instead of one failing
        # half-way with "database is locked" after reading stale data.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def insert_rows(session: Session, table: Table, rows: list[dict[str, Any]], *,
                constant: dict[str, Any] | None = None, batch: int = 50_000) -> int:
    """Insert many rows of ``table`` in few statements; returns how many were written.

    Every row has the same keys, column names. ``constant``: columns with the same value on
    every row, bound once. A row that breaks a unique constraint raises ``IntegrityError``
    (see ``breaks_unique``), and the transaction is to be rolled back.

    On PostgreSQL the rows are sent with one ``COPY ... FROM STDIN``, which psycopg writes in C
    and the server parses with no planning. Elsewhere each ``batch`` of rows is one
    executemany. Column defaults of the model are not applied: give every column that has no
    server default.
    """
    constant = constant or {}
    if not rows:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        return _copy_rows(session, table, rows, constant)
    statement = insert(table)
    for at in range(0, len(rows), batch):
        session.execute(statement, [constant | row for row in rows[at:at + batch]])
    return len(rows)


def _copy_rows(session: Session, table: Table, rows: list[dict[str, Any]],
               constant: dict[str, Any]) -> int:
    """``rows`` by COPY, on the session's own connection and transaction (PostgreSQL); in
    COPY's binary format when every column's type has one here (formatting a time as text
    costs psycopg several times what formatting the rest of the row does)."""
    varying = list(rows[0])
    columns = varying + list(constant)
    timestamps = [name for name in varying if isinstance(table.c[name].type, UTCDateTime)]
    for name in [name for name in constant if isinstance(table.c[name].type, UTCDateTime)]:
        _require_aware(constant[name])
    tail = tuple(constant.values())
    values = itemgetter(*varying) if len(varying) > 1 else lambda row: (row[varying[0]],)
    types = [_binary_type(table.c[name].type) for name in columns]
    binary = None not in types
    session.flush()  # as session.execute would: the rows may refer to objects not yet written
    driver = session.connection().connection.driver_connection
    try:
        with driver.cursor() as cursor, cursor.copy(
                f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
                + (" (FORMAT BINARY)" if binary else "")) as copy:
            if binary:
                copy.set_types(types)
            for row in rows:
                for name in timestamps:
                    _require_aware(row[name])
                copy.write_row((*values(row), *tail))
    except psycopg.errors.IntegrityError as exc:
        # As SQLAlchemy raises it for a statement it ran, so callers handle one error type.
        raise IntegrityError(f"COPY {table.name}", None, exc) from exc
    return len(rows)


# Binary COPY sends each value in its column's own binary form: the type must be the column's
# exactly (an int8 where the column is int4 is refused), so only these are sent that way.
_BINARY_TYPES = ((BigInteger, "int8"), (SmallInteger, "int2"), (Integer, "int4"),
                 (UTCDateTime, "timestamptz"), (Date, "date"), (Boolean, "bool"),
                 (Enum, None), (String, "text"))


def _binary_type(column_type) -> str | None:
    for kind, name in _BINARY_TYPES:
        if isinstance(column_type, kind):
            return name
    return None


def _require_aware(value: Any) -> None:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        raise ValueError("naive datetime given where UTC is required")


def breaks_unique(error: IntegrityError, table: Table, *columns: str) -> bool:
    """Whether ``error`` is a row repeating a value of the unique constraint over ``table``'s
    ``columns`` (as the app's tables name it, by ``NAMING_CONVENTION``)."""
    original = error.orig
    diag = getattr(original, "diag", None)
    if diag is not None:  # PostgreSQL names the constraint
        return diag.constraint_name == NAMING_CONVENTION["uq"] % {
            "table_name": table.name, "column_0_N_name": "_".join(columns)}
    # SQLite names the columns: "UNIQUE constraint failed: usage_events.request_id"
    named = ", ".join(f"{table.name}.{column}" for column in columns)
    return str(original) == f"UNIQUE constraint failed: {named}"


def make_session_factory(bind, calendar: BusinessCalendar | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=bind, expire_on_commit=False, autoflush=True,
                        info={"calendar": calendar or BusinessCalendar()})


def _local_day(stored: str | None, timezone: str) -> str | None:
    if stored is None:
        return None
    moment = dt.datetime.fromisoformat(stored).replace(tzinfo=dt.timezone.utc)
    return BusinessCalendar(timezone).day_of(moment).isoformat()


def business_day_of(session: Session, column) -> Any:
    """A ``UTCDateTime`` column as its business day, ``YYYY-MM-DD``, computed by the database
    (to group a report by day): PostgreSQL converts the timestamptz itself; SQLite, which keeps
    naive UTC text, asks ``market_local_day``."""
    zone = business_calendar(session).timezone
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone(zone, column), "YYYY-MM-DD")
    return func.market_local_day(column, zone)


def business_calendar(session: Session) -> BusinessCalendar:
    """The business calendar of the application whose database ``session`` is on.

    Every session a ``Database`` makes carries it (``session.info``), so a service that reckons
    a day, month or fiscal year takes it from the session it was given, like the rows it reads.
    """
    calendar = session.info.get("calendar")
    return calendar if calendar is not None else BusinessCalendar()


def last_closed_month(session: Session) -> str:
    """The last month that has ended now on ``session``'s business calendar: the period a
    statement list or a reconciliation is about when none is named."""
    return business_calendar(session).previous_month(utcnow())


class WalCheckpointer:
    """Moves SQLite's write-ahead log into the database file from a thread of its own, every
    ``interval`` seconds, instead of inside whichever commit fills the log past SQLite's
    threshold: that commit took about 15 ms longer, one write in a hundred (the metered
    calls' p99). A PASSIVE checkpoint waits for no reader or writer; SQLite still checkpoints
    when the last connection to the file closes."""

    def __init__(self, path: str, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stop.is_set()

    def start(self) -> bool:
        """Start the thread (once); False once stopped, so callers keep SQLite's own."""
        with self._lock:
            if self._stop.is_set():
                return False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint",
                                                daemon=True)
                self._thread.start()
            return True

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                     check_same_thread=False)
        try:
            while not self._stop.wait(self.interval):
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    # Tried again next time; meanwhile the log only grows.
                    logger.warning("SQLite checkpoint of %s failed", self.path, exc_info=True)
        finally:
            connection.close()


class Database:
    """The engine and session factory of one application (held by the app, never global)."""

    def __init__(self, url: str, *, calendar: BusinessCalendar | None = None,
                 **engine_kwargs: Any) -> None:
        self.url = url
        self.calendar = calendar or BusinessCalendar()
        self.engine = make_engine(url, **engine_kwargs)
        self.session_factory = make_session_factory(self.engine, self.calendar)
        self.checkpointer: WalCheckpointer | None = None
        database = self.engine.url.database
        if self.engine.dialect.name == "sqlite" and database not in (None, "", ":memory:"):
            self.checkpointer = WalCheckpointer(database)
            event.listen(self.engine, "connect", self._checkpoint_aside)

    def _checkpoint_aside(self, dbapi_connection, _record) -> None:
        # Started by the first connection, not by the app factory, which touches no database.
        if self.checkpointer is not None and self.checkpointer.start():
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.close()

    def session(self) -> Session:
        return self.session_factory()

    def dispose(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"
