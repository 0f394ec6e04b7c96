"""The audit log: written with the action, hash-chained, verified by ``flask audit verify``."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from market.core import audit
from market.core.audit import AuditEntry
from market.core.errors import InvalidInput


def _append(session, n):
    return [audit.record(session, "test.event", object_type="thing", object_id=i,
                         data={"n": i, "amount": "12.30", "名": "数据"}) for i in range(n)]


def test_entries_chain_to_each_other(session):
    first, second, third = _append(session, 3)
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    assert [e.seq for e in (first, second, third)] == [first.seq, first.seq + 1, first.seq + 2]
    assert third.hash == audit.chain_hash(second.hash, third.canonical())


def test_verify_passes_on_a_clean_log(runner, session):
    _append(session, 5)
    session.commit()
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "intact" in result.output


@pytest.mark.parametrize("column, value", [
    ("data", {"n": 999}),
    ("action", "test.other"),
    ("object_id", "42"),
])
def test_verify_names_the_altered_entry(runner, session, column, value):
    entries = _append(session, 6)
    session.commit()
    target = entries[3]
    session.execute(update(AuditEntry).where(AuditEntry.id == target.id).values({column: value}))
    session.commit()
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert f"seq={target.seq} (id={target.id})" in result.output
    assert "altered" in result.output


def test_verify_finds_a_deleted_entry(runner, session):
    entries = _append(session, 4)
    session.commit()
    session.delete(entries[1])
    session.commit()
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1 and f"seq={entries[2].seq}" in result.output


def test_an_action_that_fails_leaves_no_entry(owner_client, session):
    from tests.fixtures import csrf_token

    before = session.scalar(select(func.count()).select_from(AuditEntry))
    response = owner_client.post("/api/v1/keys", json={"name": "x", "scopes": ["data:read"],
                                                       "expires_at": "2000-01-01T00:00:00Z"},
                                 headers={"X-CSRFToken": csrf_token(owner_client)})
    assert response.status_code == 422
    assert session.scalar(select(func.count()).select_from(AuditEntry)) == before


def test_audit_log_api_pages_by_cursor(owner_client, session, org):
    for i in range(5):
        audit.record(session, "test.event", organization_id=org.id, data={"i": i})
    session.commit()
    first = owner_client.get("/api/v1/audit-log?limit=2&action=test.event").get_json()
    assert len(first["items"]) == 2 and isinstance(first["next_cursor"], str)
    rest = owner_client.get("/api/v1/audit-log?limit=50&action=test.event&cursor="
                            + first["next_cursor"]).get_json()
    assert len(rest["items"]) == 3 and rest["next_cursor"] is None
    assert [e["data"]["i"] for e in first["items"] + rest["items"]] == [0, 1, 2, 3, 4]
    bad = owner_client.get("/api/v1/audit-log?limit=0")
    assert bad.status_code == 422 and "limit" in bad.get_json()["errors"]
    # The old integer cursor is gone: it is not a parameter of this list.
    assert owner_client.get("/api/v1/audit-log?after=1").status_code == 422


def test_money_never_enters_the_log_as_float(session):
    with pytest.raises(ValueError):
        audit.record(session, "test.event", data={"amount": float("nan")})


def test_service_errors_carry_their_field():
    error = InvalidInput("bad", field="scopes")
    assert error.errors == {"scopes": ["bad"]}


def test_concurrent_appenders_never_fork_the_chain(app):
    """Writers in separate transactions and connections append to one chain, never fork it."""
    database = app.extensions["market.db"]
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(15):
                with Session(database.engine) as s, s.begin():
                    audit.record(s, "test.concurrent", data={"writer": n, "i": i})
        except BaseException as exc:  # re-raised below, in the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        with Session(database.engine) as s:
            checked, broken = audit.verify_chain(s)
        assert broken is None and checked >= 45
    finally:
        with database.engine.begin() as conn:
            conn.execute(delete(AuditEntry).where(AuditEntry.action == "test.concurrent"))
