"""The schema is built by the migrations alone, and they agree with the models."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from market import create_app, schema
from market.db import make_engine


def test_models_and_migrations_agree(database_url):
    assert schema.drift(database_url) == []


@pytest.fixture()
def empty_database(database_url, tmp_path):
    """A brand-new empty database of the same kind as the suite's."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"market_empty_{uuid.uuid4().hex[:8]}"
    admin = make_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


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
