"""A fresh database of the suite's kind: for tests whose transactions must really commit and
race (the usual per-test rollback cannot show what two connections do at once), and for building
a schema from nothing."""

from __future__ import annotations

import contextlib
import uuid

from sqlalchemy.engine import make_url

from market import create_app, schema
from market.db import make_engine


@contextlib.contextmanager
def fresh_database(database_url: str, tmp_path, *, migrated: bool = True):
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
        if migrated:
            schema.upgrade(fresh)
        yield fresh
        return
    name = f"market_fresh_{uuid.uuid4().hex[:8]}"
    admin = make_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    fresh = url.set(database=name).render_as_string(hide_password=False)
    try:
        if migrated:
            schema.upgrade(fresh)
        yield fresh
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


@contextlib.contextmanager
def fresh_app(database_url: str, tmp_path):
    with fresh_database(database_url, tmp_path) as url:
        app = create_app({"TESTING": True, "DATABASE_URL": url, "SECRET_KEY": "test",
                          "PASSWORD_TIME_COST": 1, "PASSWORD_MEMORY_KIB": 8,
                          "API_KEY_MODE": "test"})
        try:
            yield app
        finally:
            app.extensions["market.db"].dispose()
