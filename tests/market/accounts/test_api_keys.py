"""API keys: created by an owner, shown once, stored hashed, listed, used, revoked."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import inspect, select, text

from market.accounts.models import ApiKey
from market.core.audit import AuditEntry
from market.core.db import utcnow
from tests.factories import make_key, make_org
from tests.fixtures import csrf_token


def _in_days(days: int) -> str:
    return (utcnow() + dt.timedelta(days=days)).isoformat()


def _headers(client):
    return {"X-CSRFToken": csrf_token(client)}


def _create(client, **body):
    payload = {"name": "ingest bot", "scopes": ["catalog:read", "data:read"],
               "requests_per_minute": 600, "tokens_per_minute": 200_000,
               "monthly_token_cap": 50_000_000} | body
    return client.post("/api/v1/keys", json=payload, headers=_headers(client))


def test_key_lifecycle_through_the_api(owner_client, client, session):
    created = _create(owner_client)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    secret = body["secret"]
    assert re.fullmatch(r"dmk_test_[A-Za-z0-9]{8}_[A-Za-z0-9]{43}", secret)
    assert secret.startswith(body["prefix"])
    assert created.headers["Location"].endswith(f"/api/v1/keys/{body['id']}")
    assert body["monthly_token_cap"] == 50_000_000

    listed = owner_client.get("/api/v1/keys").get_json()["items"]
    assert [k["prefix"] for k in listed] == [body["prefix"]]
    assert "secret" not in listed[0] and listed[0]["last_used_at"] is None

    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200
    assert me.get_json()["api_key_prefix"] == body["prefix"]
    assert owner_client.get(f"/api/v1/keys/{body['id']}").get_json()["last_used_at"]

    revoked = owner_client.post(f"/api/v1/keys/{body['id']}/revoke", headers=_headers(owner_client))
    assert revoked.status_code == 200 and revoked.get_json()["is_active"] is False
    refused = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.mimetype == "application/problem+json"

    actions = session.scalars(select(AuditEntry.action).where(
        AuditEntry.object_type == "api_key").order_by(AuditEntry.seq)).all()
    assert actions == ["api_key.created", "api_key.revoked"]


def test_the_database_holds_no_key_in_clear(owner_client, connection):
    secrets = [_create(owner_client, name=f"k{i}").get_json()["secret"] for i in range(3)]
    inspector = inspect(connection)
    found = []
    for table in inspector.get_table_names():
        for row in connection.execute(text(f'SELECT * FROM "{table}"')):
            dumped = " ".join(str(v) for v in row)
            found += [(table, s) for s in secrets if s in dumped or s.split("_")[-1] in dumped]
    assert found == []


@pytest.mark.parametrize("header", [
    "Bearer dmk_test_nothere1_" + "A" * 43,
    "Bearer not-a-key",
    "Basic dXNlcjpwYXNz",
    "Bearer ",
])
def test_unknown_or_malformed_keys_get_401(client, header):
    response = client.get("/api/v1/me", headers={"Authorization": header})
    assert response.status_code == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]


def test_key_with_a_wrong_secret_but_a_real_prefix_is_refused(client, session, org):
    key, secret = make_key(session, org)
    session.commit()
    forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def test_only_owners_create_keys(sign_in_as, org):
    for role in ("member", "finance", "reviewer"):
        response = _create(sign_in_as(org, role))
        assert response.status_code == 403, role


def test_a_key_cannot_grant_more_than_it_holds(client, session, org):
    _, secret = make_key(session, org, scopes=["keys:manage", "catalog:read"])
    session.commit()
    auth = {"Authorization": f"Bearer {secret}"}
    narrower = client.post("/api/v1/keys", json={"name": "n", "scopes": ["catalog:read"],
                                                 "expires_at": _in_days(30)}, headers=auth)
    assert narrower.status_code == 201
    wider = client.post("/api/v1/keys", json={"name": "w", "scopes": ["billing:write"]},
                        headers=auth)
    assert wider.status_code == 403 and "scopes" in wider.get_json()["errors"]


def _parent_key(session, org, *, expires_in_days=None, **limits):
    """A key holding keys:manage, as a machine of the organization would."""
    key, secret = make_key(session, org, scopes=["keys:manage", "catalog:read"], **limits)
    if expires_in_days is not None:
        key.expires_at = utcnow() + dt.timedelta(days=expires_in_days)
    session.commit()
    return key, {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize("parent_days, body, field", [
    (None, {}, "expires_at"),  # a key minting a key that never expires
    (10, {}, "expires_at"),
    (10, {"expires_at": 11}, "expires_at"),  # it would outlive its parent
    (None, {"expires_at": 5, "scopes": ["keys:manage", "billing:write"]}, "scopes"),
    (None, {"expires_at": 5, "monthly_token_cap": None}, "monthly_token_cap"),
    (None, {"expires_at": 5, "monthly_token_cap": 2_000}, "monthly_token_cap"),
    (None, {"expires_at": 5, "requests_per_minute": 61}, "requests_per_minute"),
    (None, {"expires_at": 5, "tokens_per_minute": None}, "tokens_per_minute"),
])
def test_a_key_cannot_create_a_key_that_outlives_or_outranks_it(client, session, org,
                                                                 parent_days, body, field):
    """Finding 12: a keys:manage key created keys:manage keys that never expire."""
    _, auth = _parent_key(session, org, expires_in_days=parent_days, requests_per_minute=60,
                          tokens_per_minute=10_000, monthly_token_cap=1_000)
    payload = {"name": "child", "scopes": ["keys:manage"], "requests_per_minute": 60,
               "tokens_per_minute": 10_000, "monthly_token_cap": 1_000} | body
    if "expires_at" in payload:
        payload["expires_at"] = _in_days(payload["expires_at"])
    response = client.post("/api/v1/keys", json=payload, headers=auth)
    assert response.status_code == 403, response.get_json()
    assert field in response.get_json()["errors"]
    assert session.query(ApiKey).count() == 1


def test_a_key_creates_a_narrower_shorter_key_which_dies_with_it(client, session, org):
    parent, auth = _parent_key(session, org, expires_in_days=10, monthly_token_cap=1_000)
    created = client.post("/api/v1/keys", json={
        "name": "child", "scopes": ["catalog:read"], "expires_at": _in_days(9),
        "monthly_token_cap": 500}, headers=auth)
    assert created.status_code == 201, created.get_json()
    grandchild = client.post("/api/v1/keys", json={
        "name": "grandchild", "scopes": ["catalog:read"], "expires_at": _in_days(8),
        "monthly_token_cap": 500}, headers=auth)
    assert grandchild.status_code == 201
    child_auth = {"Authorization": f"Bearer {created.get_json()['secret']}"}
    assert client.get("/api/v1/me", headers=child_auth).status_code == 200
    revoked = client.post(f"/api/v1/keys/{parent.id}/revoke", headers=auth)
    assert revoked.status_code == 200
    assert client.get("/api/v1/me", headers=child_auth).status_code == 401
    session.expire_all()
    assert all(k.revoked_at is not None for k in session.query(ApiKey))


@pytest.mark.parametrize("change", [
    {"monthly_token_cap": None}, {"monthly_token_cap": 1_001}, {"requests_per_minute": None},
    {"tokens_per_minute": 20_000}])
def test_a_key_cannot_lift_or_raise_a_limit(client, session, org, change):
    """Finding 12: a keys:manage key removed other keys' caps (PATCH monthly_token_cap: null)."""
    _, auth = _parent_key(session, org)
    other, _ = make_key(session, org, scopes=["data:read"], requests_per_minute=60,
                        tokens_per_minute=10_000, monthly_token_cap=1_000)
    session.commit()
    response = client.patch(f"/api/v1/keys/{other.id}", json=change, headers=auth)
    assert response.status_code == 403, response.get_json()
    assert set(change) <= set(response.get_json()["errors"])
    session.refresh(other)
    assert (other.requests_per_minute, other.tokens_per_minute, other.monthly_token_cap) == \
        (60, 10_000, 1_000)


def test_a_key_may_tighten_a_limit_and_a_person_may_lift_it(client, owner_client, session,
                                                             org):
    _, auth = _parent_key(session, org)
    other, _ = make_key(session, org, scopes=["data:read"], monthly_token_cap=1_000)
    session.commit()
    lowered = client.patch(f"/api/v1/keys/{other.id}", json={"monthly_token_cap": 10,
                                                             "requests_per_minute": 5},
                           headers=auth)
    assert lowered.status_code == 200 and lowered.get_json()["monthly_token_cap"] == 10
    lifted = owner_client.patch(f"/api/v1/keys/{other.id}", json={"monthly_token_cap": None},
                                headers=_headers(owner_client))
    assert lifted.status_code == 200 and lifted.get_json()["monthly_token_cap"] is None


@pytest.mark.parametrize("body, field", [
    ({"scopes": ["root"]}, "scopes"),
    ({"scopes": []}, "scopes"),
    ({"name": ""}, "name"),
    ({"requests_per_minute": 0}, "requests_per_minute"),
    ({"monthly_token_cap": -5}, "monthly_token_cap"),
    ({"expires_at": "2001-01-01T00:00:00+00:00"}, "expires_at"),
    ({"expires_at": "2031-01-01T00:00:00"}, "expires_at"),
])
def test_bad_key_requests_name_the_field(owner_client, session, body, field):
    response = _create(owner_client, **body)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]
    assert session.query(ApiKey).count() == 0


def test_limits_can_be_changed_and_are_audited(owner_client, session):
    key_id = _create(owner_client).get_json()["id"]
    response = owner_client.patch(f"/api/v1/keys/{key_id}", json={"monthly_token_cap": 1000},
                                  headers=_headers(owner_client))
    assert response.status_code == 200 and response.get_json()["monthly_token_cap"] == 1000
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "api_key.limits_changed"))
    assert entry.data["before"]["monthly_token_cap"] == 50_000_000
    assert entry.data["after"]["monthly_token_cap"] == 1000


def test_idempotency_key_replays_the_first_response(owner_client, session):
    headers = _headers(owner_client) | {"Idempotency-Key": "create-bot-1"}
    first = owner_client.post("/api/v1/keys", json={"name": "bot", "scopes": ["data:read"]},
                              headers=headers)
    again = owner_client.post("/api/v1/keys", json={"name": "bot", "scopes": ["data:read"]},
                              headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert session.query(ApiKey).count() == 1

    different = owner_client.post("/api/v1/keys", json={"name": "other", "scopes": ["data:read"]},
                                  headers=headers)
    assert different.status_code == 422
    assert "Idempotency-Key" in different.get_json()["errors"]
    assert session.query(ApiKey).count() == 1


def test_session_writes_through_the_api_need_the_csrf_header(owner_client, session):
    response = owner_client.post("/api/v1/keys", json={"name": "x", "scopes": ["data:read"]})
    assert response.status_code == 403 and "X-CSRFToken" in response.get_json()["errors"]
    assert session.query(ApiKey).count() == 0


def test_key_lifecycle_through_the_page(owner_client, session):
    token = csrf_token(owner_client, "/account/keys")
    response = owner_client.post("/account/keys", data={
        "csrf_token": token, "name": "notebook", "scopes": ["catalog:read", "usage:read"],
        "monthly_token_cap": "1000000"})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    secret = re.search(r'id="new-key-secret">([^<]+)<', page).group(1)
    key = session.scalar(select(ApiKey))
    assert secret.startswith(key.prefix) and key.monthly_token_cap == 1_000_000

    listing = owner_client.get("/account/keys").get_data(as_text=True)
    assert key.prefix in listing and secret not in listing

    response = owner_client.post(f"/account/keys/{key.id}/revoke",
                                 data={"csrf_token": csrf_token(owner_client, "/account/keys")})
    assert response.status_code == 302
    session.refresh(key)
    assert key.revoked_at is not None


def test_another_organizations_key_cannot_be_revoked_from_the_page(sign_in_as, session, org):
    other = make_org(session)
    key, _ = make_key(session, other)
    session.commit()
    client = sign_in_as(org, "owner")
    response = client.post(f"/account/keys/{key.id}/revoke",
                           data={"csrf_token": csrf_token(client, "/account/keys")})
    assert response.status_code == 404
    session.refresh(key)
    assert key.revoked_at is None
