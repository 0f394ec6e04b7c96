"""Server-side sessions: a cookie signs in only while its session is open on the server."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from market.accounts.models import UserSession
from market.core.audit import AuditEntry
from tests.factories import PASSWORD, make_org, make_user
from tests.fixtures import csrf_token

NEW_PASSWORD = "quartz-meadow-lantern"


def _sign_in(app, email: str, password: str = PASSWORD):
    client = app.test_client()
    response = client.post("/login", data={"email": email, "password": password,
                                           "csrf_token": csrf_token(client, "/login")})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def _cookie(client) -> str:
    return client.get_cookie("market_session").value


def _with_cookie(app, value: str):
    """Another browser holding a copy of a session cookie."""
    thief = app.test_client()
    thief.set_cookie("market_session", value)
    return thief


def test_a_copied_cookie_stops_working_after_sign_out(app, connection, session, passwords):
    """Finding 7: the signed cookie went on signing in for up to 12 hours after sign-out."""
    user = make_user(session, passwords, make_org(session))
    session.commit()
    client = _sign_in(app, user.email)
    copy = _with_cookie(app, _cookie(client))
    assert copy.get("/account").status_code == 200

    response = client.post("/logout", data={"csrf_token": csrf_token(client, "/account")})
    assert response.status_code == 302
    assert client.get("/account").status_code == 302
    response = copy.get("/account")
    assert response.status_code == 302 and "/login" in response.location
    # The API answers the copy as it would anyone signed out.
    assert copy.get("/api/v1/me").status_code == 401


def test_only_a_hash_of_the_session_secret_is_stored(app, connection, session, passwords):
    user = make_user(session, passwords, make_org(session))
    session.commit()
    client = _sign_in(app, user.email)
    with client.session_transaction() as web_session:
        secret = web_session["sid"]
        assert "user_id" not in web_session  # the cookie names a session, not a person
    stored = session.scalars(select(UserSession.token_hash).where(
        UserSession.user_id == user.id)).all()
    assert len(stored) == 1 and secret not in stored[0] and len(stored[0]) == 64


def test_a_password_change_ends_every_other_session(app, connection, session, passwords):
    user = make_user(session, passwords, make_org(session))
    session.commit()
    laptop, phone = _sign_in(app, user.email), _sign_in(app, user.email)
    response = laptop.post("/account/password", data={
        "current_password": PASSWORD, "new_password": NEW_PASSWORD,
        "csrf_token": csrf_token(laptop, "/account/password")})
    assert response.status_code == 302
    assert laptop.get("/account").status_code == 200  # the one that changed it stays in
    assert phone.get("/account").status_code == 302
    assert session.scalar(select(AuditEntry.data).where(
        AuditEntry.action == "account.password_changed")) == {"sessions_ended": 1}
    # The new password signs in; the old one no longer does.
    _sign_in(app, user.email, NEW_PASSWORD)
    old = app.test_client()
    assert old.post("/login", data={"email": user.email, "password": PASSWORD,
                                    "csrf_token": csrf_token(old, "/login")}).status_code == 401


def test_a_wrong_current_password_changes_nothing(app, connection, session, passwords):
    user = make_user(session, passwords, make_org(session))
    session.commit()
    laptop, phone = _sign_in(app, user.email), _sign_in(app, user.email)
    response = laptop.post("/account/password", data={
        "current_password": "not-my-password", "new_password": NEW_PASSWORD,
        "csrf_token": csrf_token(laptop, "/account/password")})
    assert response.status_code == 422
    assert 'id="current_password-errors"' in response.get_data(as_text=True)
    assert phone.get("/account").status_code == 200
    weak = laptop.post("/account/password", data={
        "current_password": PASSWORD, "new_password": "short",
        "csrf_token": csrf_token(laptop, "/account/password")})
    assert weak.status_code == 422 and 'id="new_password-errors"' in weak.get_data(as_text=True)
    assert phone.get("/account").status_code == 200


def test_an_expired_session_signs_no_one_in(app, connection, session, passwords):
    user = make_user(session, passwords, make_org(session))
    session.commit()
    client = _sign_in(app, user.email)
    record = session.scalar(select(UserSession).where(UserSession.user_id == user.id))
    record.expires_at = record.created_at + dt.timedelta(seconds=1) - dt.timedelta(days=1)
    session.commit()
    assert client.get("/account").status_code == 302


def test_a_deactivated_person_is_signed_out(app, connection, session, passwords):
    user = make_user(session, passwords, make_org(session))
    session.commit()
    client = _sign_in(app, user.email)
    user.is_active = False
    session.commit()
    assert client.get("/account").status_code == 302


def test_a_forged_session_id_signs_no_one_in(app, connection, session, passwords):
    client = app.test_client()
    with client.session_transaction() as web_session:
        web_session["sid"] = "guessed-secret"
        web_session["user_id"] = 1  # what the old cookie carried: ignored now
    assert client.get("/account").status_code == 302
