"""The schema is built by Alembic migrations only; this module points Alembic at them.

It imports every module that declares tables, so that ``Base.metadata`` is complete for
autogenerate and for the drift check that proves models and migrations agree.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.engine import make_url

import billing.settlement.ledger  # noqa: F401
import billing.models  # noqa: F401
import market.accounts.models  # noqa: F401
import market.web.idempotency  # noqa: F401
import market.core.audit  # noqa: F401
import market.catalog.models  # noqa: F401
from market.core.db import Base, make_engine

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str, connection=None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def drift(url: str) -> list:
    """What autogenerate would change to make the database match the models (empty: none)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={
                "compare_type": True, "render_as_batch": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def metadata():
    return Base.metadata


@contextlib.contextmanager
def throwaway_database(server_url: str, prefix: str, *, migrated: bool = True,
                       **connect: object) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server ``server_url`` names, built from the
    migrations unless ``migrated`` is False, and dropped afterwards; yields its URL. For tests
    and benchmarks that need transactions that really commit. ``connect``: the admin
    connection's arguments (a ``connect_timeout``, say)."""
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT", connect_args=connect)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception:
        admin.dispose()
        raise
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        if migrated:
            upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
