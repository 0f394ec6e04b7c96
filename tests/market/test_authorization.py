"""The authorization matrix: every /api/v1 endpoint, called anonymously and by every role of a
foreign organization (people of each member role, a key with every scope, a key with one).

Another organization's objects answer 404; a missing role or scope answers 403; nobody gets 401.
The matrix must name every declared operation, so a new endpoint cannot go untested.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from market.accounts.authz import ANY_KEY, PERMISSIONS, SCOPES, Principal
from market.api import api
from tests.factories import make_key, make_org, make_user
from tests.fixtures import csrf_token


@dataclass(frozen=True)
class Case:
    kind: str  # public | object | collection | create
    body: dict | None = None


# (method, rule) -> how a foreign caller must be answered. Rules use the victim's ids.
MATRIX: dict[tuple[str, str], Case] = {
    ("GET", "/health"): Case("public"),
    ("GET", "/openapi.json"): Case("public"),
    ("GET", "/docs"): Case("public"),
    ("GET", "/me"): Case("collection"),
    ("GET", "/organizations/<int:organization_id>"): Case("object"),
    ("GET", "/organizations/<int:organization_id>/members"): Case("object"),
    ("POST", "/organizations/<int:organization_id>/members"): Case(
        "object", {"email": "{victim_email}", "role": "member"}),
    ("GET", "/keys"): Case("collection"),
    ("POST", "/keys"): Case("create", {"name": "mine", "scopes": ["catalog:read"]}),
    ("GET", "/keys/<int:key_id>"): Case("object"),
    ("PATCH", "/keys/<int:key_id>"): Case("object", {"monthly_token_cap": 1}),
    ("POST", "/keys/<int:key_id>/revoke"): Case("object"),
    ("GET", "/audit-log"): Case("collection"),
}

OPERATIONS = {(op.method, op.rule): op for op in api.operations}


def test_the_matrix_names_every_operation():
    assert set(MATRIX) == set(OPERATIONS)


CALLERS = ["anonymous", "owner", "member", "finance", "reviewer", "key:all", "key:one"]


@pytest.fixture()
def victim(session, passwords):
    org = make_org(session, "supplier", name="Victim Data Co")
    person = make_user(session, passwords, org, "owner", email="victim@victim.example.com")
    key, _ = make_key(session, org)
    session.commit()
    return {"org": org, "email": person.email, "key": key}


@pytest.fixture()
def foreign(session):
    org = make_org(session, "buyer", name="Foreign Co")
    session.commit()
    return org


def _caller(name, app, sign_in_as, session, foreign):
    client = app.test_client()
    if name == "anonymous":
        return client, {}, None
    if name.startswith("key:"):
        scopes = list(SCOPES) if name == "key:all" else ["catalog:read"]
        key, secret = make_key(session, foreign, scopes=scopes)
        session.commit()
        principal = Principal(organization_id=foreign.id, api_key_id=key.id,
                              scopes=frozenset(scopes))
        return client, {"Authorization": f"Bearer {secret}"}, principal
    client = sign_in_as(foreign, name)
    principal = Principal(organization_id=foreign.id, user_id=client.user.id, member_role=name,
                          scopes=frozenset(SCOPES))
    return client, {"X-CSRFToken": csrf_token(client)}, principal


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("method, rule", sorted(MATRIX))
def test_foreign_and_anonymous_callers(app, sign_in_as, session, victim, foreign, caller,
                                       method, rule):
    case, op = MATRIX[(method, rule)], OPERATIONS[(method, rule)]
    client, headers, principal = _caller(caller, app, sign_in_as, session, foreign)
    path = "/api/v1" + rule.replace("<int:organization_id>", str(victim["org"].id)) \
                           .replace("<int:key_id>", str(victim["key"].id))
    kwargs = {"headers": headers}
    if case.body is not None:
        kwargs["json"] = json.loads(json.dumps(case.body).replace("{victim_email}",
                                                                  victim["email"]))
    response = client.open(path, method=method, **kwargs)
    status, text = response.status_code, response.get_data(as_text=True)

    if case.kind == "public":
        assert status == 200
        return
    if principal is None:
        assert status == 401 and "WWW-Authenticate" in response.headers
        assert response.mimetype == "application/problem+json"
        return
    if not principal.can(op.permission):
        assert status == 403, text
        return
    if case.kind == "object":
        assert status == 404, text
        assert "Victim" not in text and victim["key"].prefix not in text
        session.refresh(victim["key"])
        assert victim["key"].revoked_at is None and victim["key"].monthly_token_cap is None
        assert len(victim["org"].memberships) == 1
    else:
        assert status in (200, 201), text
        assert "Victim" not in text and victim["key"].prefix not in text
        assert victim["email"] not in text


def test_permissions_table_names_only_known_scopes():
    assert all(rule.scope in SCOPES for rule in PERMISSIONS.values()
               if rule.scope not in (None, ANY_KEY))
