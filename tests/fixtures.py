"""Fixtures for signed-in clients and ready-made organizations."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from market.accounts import services as accounts

from tests.factories import english_client, make_org, make_user

CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@pytest.fixture()
def passwords(app):
    return app.extensions["market.passwords"]


@pytest.fixture()
def org(session):
    return make_org(session, "buyer")


@pytest.fixture()
def sign_in_as(app, session, passwords):
    """Return a client signed in as a new person with ``role`` in ``org``."""

    def sign_in(org, role: str = "owner"):
        user = make_user(session, passwords, org, role)
        session.commit()  # a savepoint release: the app's session sees the rows
        client = english_client(app)
        signed_in_session(client, session, user, org.id)
        client.user = user
        return client

    return sign_in


@pytest.fixture()
def owner_client(sign_in_as, org):
    return sign_in_as(org, "owner")


def signed_in_session(client, session, user, organization_id: int) -> None:
    """Give a client the cookie of a new server-side session of ``user`` (as signing in does)."""
    secret = accounts.start_session(session, user, lifetime=dt.timedelta(hours=12))
    session.commit()
    with client.session_transaction() as web_session:
        web_session["sid"] = secret
        web_session["org_id"] = organization_id


def csrf_token(client, path: str = "/") -> str:
    """The CSRF token that the storefront embeds in its forms, for form posts in tests."""
    page = client.get(path).get_data(as_text=True)
    match = CSRF_FIELD.search(page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)
