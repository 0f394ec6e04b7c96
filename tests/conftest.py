"""Fixtures shared by every test package: the database, the app, clients signed in per role.

The schema is built once per run by the real migrations. Each test then runs inside one
transaction on one connection that is rolled back at the end; the app's own commits become
savepoints inside it, so tests never see each other's rows.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy import MetaData, text
from sqlalchemy.orm import sessionmaker

from market.web.app import create_app
from market.web import schema
from market.core.db import make_engine
from tests.factories import SINGLE_PERSON_THRESHOLD, english_client

pytest_plugins = ["tests.fixtures", "tests.stripe_server", "tests.s3_server"]


def _reset_postgresql(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        metadata = MetaData()
        metadata.reflect(conn)
        metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        _reset_postgresql(url)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    schema.upgrade(url)
    return url


@pytest.fixture(scope="session")
def app(database_url, tmp_path_factory):
    app = create_app({
        "TESTING": True,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-key",
        "MARKET_ENV": "test",
        # Argon2id at its minimum cost: the suite hashes hundreds of passwords.
        "PASSWORD_TIME_COST": 1,
        "PASSWORD_MEMORY_KIB": 8,
        "API_KEY_MODE": "test",
        "DUAL_CONTROL_THRESHOLD": SINGLE_PERSON_THRESHOLD,
        "PLATFORM_SIGNING_KEY": str(tmp_path_factory.mktemp("keys") / "platform_signing_key.pem"),
        "OBJECT_STORE_ROOT": str(tmp_path_factory.mktemp("objects")),
    })
    app.instance_path = str(tmp_path_factory.mktemp("instance"))
    yield app
    app.extensions["market.db"].dispose()


@pytest.fixture()
def connection(app):
    database = app.extensions["market.db"]
    original = database.session_factory
    app.extensions["market.login_throttle"].reset()  # failed sign-ins of earlier tests
    with database.engine.connect() as conn:
        outer = conn.begin()
        # Every new session joins this transaction (its commits are savepoints), rolled back
        # at the end.
        database.session_factory = sessionmaker(
            bind=conn, expire_on_commit=False, autoflush=True,
            join_transaction_mode="create_savepoint", info={"calendar": database.calendar})
        try:
            yield conn
        finally:
            database.session_factory = original
            outer.rollback()


@pytest.fixture()
def session(app, connection):
    """A session on the test's transaction, for arranging and checking rows."""
    with app.extensions["market.db"].session() as s:
        yield s


@pytest.fixture()
def client(app, connection):
    return english_client(app)


@pytest.fixture()
def runner(app, connection):
    return app.test_cli_runner()
