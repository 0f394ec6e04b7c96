"""The schema is built by the migrations alone, and they agree with the models."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from market.web.app import create_app
from market.web import schema
from market.core.db import make_engine
from tests.concurrency import fresh_database


def test_models_and_migrations_agree(database_url):
    assert schema.drift(database_url) == []


@pytest.fixture()
def empty_database(database_url, tmp_path):
    """A brand-new empty database of the same kind as the suite's."""
    with fresh_database(database_url, tmp_path, migrated=False) as url:
        yield url


def test_flask_db_upgrade_builds_the_schema_on_an_empty_database(empty_database):
    app = create_app({"DATABASE_URL": empty_database, "SECRET_KEY": "x"})
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    engine = make_engine(empty_database)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
        app.extensions["market.db"].dispose()
    assert set(schema.metadata().tables) <= tables
    assert "alembic_version" in tables
    assert schema.drift(empty_database) == []
