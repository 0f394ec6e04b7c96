"""A fresh database of the suite's kind: for tests whose transactions must really commit and
race (the usual per-test rollback cannot show what two connections do at once), and for building
a schema from nothing."""

from __future__ import annotations

import contextlib

from sqlalchemy.engine import make_url

from market import create_app, schema


@contextlib.contextmanager
def fresh_database(database_url: str, tmp_path, *, migrated: bool = True):
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
        if migrated:
            schema.upgrade(fresh)
        yield fresh
        return
    with schema.throwaway_database(database_url, "market_fresh", migrated=migrated) as fresh:
        yield fresh


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
