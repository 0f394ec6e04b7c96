"""A fresh database of the suite's kind: for tests whose transactions must really commit and
race (the usual per-test rollback cannot show what two connections do at once), and for building
a schema from nothing; and ``at_once``, which starts the racing calls together."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest
from sqlalchemy.engine import make_url

from market.web.app import create_app
from market.web import schema
from tests.factories import SINGLE_PERSON_THRESHOLD

T = TypeVar("T")


def postgresql_only(reason: str) -> pytest.MarkDecorator:
    """Skip, saying why, unless the suite runs on PostgreSQL (the ``database_url`` fixture is
    PostgreSQL exactly when TEST_DATABASE_URL names one)."""
    backend = make_url(os.environ.get("TEST_DATABASE_URL") or "sqlite://").get_backend_name()
    return pytest.mark.skipif(backend != "postgresql", reason=reason)


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
                          "API_KEY_MODE": "test",
                          "DUAL_CONTROL_THRESHOLD": SINGLE_PERSON_THRESHOLD})
        try:
            yield app
        finally:
            app.extensions["market.db"].dispose()


def at_once(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run the calls at the same moment, each on its own thread lined up on a barrier; their
    results in order. An exception in a call is raised here once every thread has finished."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as error:  # raised below, in the test's own thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
