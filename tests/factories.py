"""Factories: organizations, people and keys with sensible defaults, flushed, never committed."""

from __future__ import annotations

import itertools

from market.accounts import services as accounts
from market.accounts.authz import SCOPES, Principal
from market.accounts.models import Membership, Organization, User

PASSWORD = "correct-horse-battery"
# The suite's apps let one person record money of any size (the production default makes a
# second person confirm from 10,000.00); the tests of dual control lower it.
SINGLE_PERSON_THRESHOLD = "1000000000.00"
_counter = itertools.count(1)


def make_org(session, *roles: str, name: str | None = None) -> Organization:
    n = next(_counter)
    org = accounts.create_organization(session, name=name or f"Org {n}", roles=roles or ("buyer",))
    session.flush()
    return org


def make_user(session, passwords, org: Organization | None = None, role: str = "owner",
              email: str | None = None) -> User:
    n = next(_counter)
    user = User(email=email or f"person{n}@example.com", name=f"Person {n}",
                password_hash=passwords.hash(PASSWORD))
    if org is not None:
        user.memberships.append(Membership(organization=org, role=role))
    session.add(user)
    session.flush()
    return user


def make_key(session, org: Organization, scopes=tuple(SCOPES), **limits):
    owner = Principal(organization_id=org.id, member_role="owner", scopes=frozenset(SCOPES),
                      org_roles=frozenset(org.role_names))
    key, secret = accounts.create_api_key(session, owner, name="test key", scopes=scopes,
                                          limits=accounts.KeyLimits(**limits), mode="test")
    return key, secret


def english_client(app):
    """A test client that asks for English pages, so tests can read the messages."""
    client = app.test_client()
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client
