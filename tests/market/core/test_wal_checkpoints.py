"""SQLite's write-ahead log is moved into the database file by a thread of the app's own, not
inside a request's commit."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import text

from market.core.db import Database


@pytest.fixture()
def database(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'wal.db'}")
    db.checkpointer.interval = 0.05
    yield db
    db.dispose()


def test_commits_leave_the_log_to_the_checkpoint_thread(database, tmp_path):
    path = tmp_path / "wal.db"
    assert not database.checkpointer.running  # nothing started before the first connection
    with database.engine.begin() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        connection.execute(text("CREATE TABLE readings (id INTEGER PRIMARY KEY, body TEXT)"))
    assert database.checkpointer.running
    before = os.path.getsize(path)
    with database.engine.begin() as connection:
        connection.execute(text("INSERT INTO readings (body) VALUES (:body)"),
                           [{"body": "x" * 500} for _ in range(2_000)])
    deadline = time.monotonic() + 10
    while os.path.getsize(path) <= before + 500_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    # The pages reached the database file while every connection stayed open.
    assert os.path.getsize(path) > before + 500_000
    database.dispose()
    assert not database.checkpointer.running


def test_once_stopped_connections_keep_sqlites_own_checkpoints(database):
    database.checkpointer.stop()
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000


def test_no_thread_for_a_database_in_memory_or_on_postgresql():
    assert Database("sqlite://").checkpointer is None
    assert Database("postgresql+psycopg://postgres@127.0.0.1:1/none").checkpointer is None
