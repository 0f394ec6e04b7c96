"""Two requests racing with one Idempotency-Key, on really committed data: a metered call and
another POST. Whichever commits first is the answer; the other is charged nothing and writes
nothing. On PostgreSQL the two really overlap, and the one still in flight when the first
commits gets 409 ``idempotency_key_in_use`` with ``Retry-After``, after which a retry is the
replay; SQLite runs one writer at a time, so there the second waits and is the replay at once.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from billing import entitlements
from billing.metering import charge as metering
from billing.models import TokenWallet, UsageEvent
from market.web import idempotency
from market.accounts.models import Organization
from market.core.db import utcnow
from tests.billing.shop import buyer, listed_dataset
from tests.concurrency import at_once, fresh_app
from tests.factories import english_client, make_key

METERED = {"kind": "metered", "code": "api", "mode": "graduated", "tiers": [
    {"from_tokens": 0, "up_to": None, "price_per_million": {"amount": "30", "currency": "CNY"}}]}
# Long enough for the other request to have read that the key is free.
HOLD_SECONDS = 0.5


@pytest.fixture(scope="module")
def racing_app(database_url, tmp_path_factory):
    with fresh_app(database_url, tmp_path_factory.mktemp("idempotency-races")) as app:
        yield app


@pytest.fixture()
def shop(racing_app):
    """A listed dataset anyone may call pay-as-you-go, and a buyer with a funded wallet and a
    key that may call it and count tokens."""
    database = racing_app.extensions["market.db"]
    passwords = racing_app.extensions["market.passwords"]
    with database.session() as session, session.begin():
        made = listed_dataset(session, passwords, extra_offers=[METERED])
        org, _, _ = buyer(session, passwords)
        session.flush()
        wallet = entitlements.get_wallet(session, org.id, "platform")
        entitlements.change_wallet(session, wallet, 100_000, kind="grant",
                                   reference=f"race-grant:{org.id}")
        key, secret = make_key(session, session.get(Organization, org.id),
                               scopes=("data:read",))
        # A key in use: its last use was just written, so neither racing request writes it
        # again (which would have them queue on the key's row instead of racing).
        key.last_used_at = utcnow()
        return {"dataset_id": made["dataset"].id, "buyer_id": org.id,
                "headers": {"Authorization": f"Bearer {secret}"}}


def _on_postgresql(app) -> bool:
    return make_url(app.config["DATABASE_URL"]).get_backend_name() == "postgresql"


def _held(monkeypatch, module, name: str) -> None:
    """Make ``module.name`` keep its request's transaction open a while after it returns."""
    real = getattr(module, name)

    def slow(*args, **kwargs):
        result = real(*args, **kwargs)
        time.sleep(HOLD_SECONDS)
        return result

    monkeypatch.setattr(module, name, slow)


def _settle(app, responses, again):
    """The racing pair's answers: the original, and the other one — a replay, or 409 then the
    replay on retrying after ``Retry-After``."""
    originals = [r for r in responses if "Idempotent-Replayed" not in r.headers
                 and r.status_code < 400]
    assert len(originals) == 1, [(r.status_code, r.get_json()) for r in responses]
    (other,) = [r for r in responses if r is not originals[0]]
    if _on_postgresql(app):
        assert other.status_code == 409, other.get_json()
        problem = other.get_json()
        assert problem["code"] == "idempotency_key_in_use"
        assert "Idempotency-Key" in problem["errors"]
        assert int(other.headers["Retry-After"]) >= 1
        time.sleep(int(other.headers["Retry-After"]))
        other = again()
    assert other.status_code == originals[0].status_code
    assert other.headers["Idempotent-Replayed"] == "true"
    return originals[0], other


def test_a_metered_call_racing_its_retry_is_charged_once(racing_app, shop, monkeypatch):
    _held(monkeypatch, metering, "charge_call")
    path = f"/api/v1/datasets/{shop['dataset_id']}/versions/1/records"
    headers = shop["headers"] | {"Idempotency-Key": "race-page-1"}
    clients = [english_client(racing_app) for _ in range(2)]

    def call(client):
        return lambda: client.get(path, headers=headers, query_string={"limit": 2})

    responses = at_once([call(c) for c in clients])
    if _on_postgresql(racing_app):
        conflict = next(r for r in responses if r.status_code == 409)
        # A refusal of a metered call carries the token headers too, charging nothing.
        assert conflict.headers["X-Tokens-Charged"] == "0"
        assert "X-Tokens-Remaining" in conflict.headers
    original, replay = _settle(racing_app, responses, call(clients[0]))
    body = original.get_json()
    assert replay.get_json() == body | {"usage": body["usage"] | {"replayed": True}}
    assert replay.headers["X-Tokens-Charged"] == "0"
    with racing_app.extensions["market.db"].session() as session:
        events = session.execute(select(func.count(), func.sum(UsageEvent.tokens)).where(
            UsageEvent.organization_id == shop["buyer_id"])).one()
        balance = session.scalar(select(TokenWallet.balance_tokens).where(
            TokenWallet.organization_id == shop["buyer_id"]))
    assert tuple(events) == (1, body["usage"]["tokens"])
    assert balance == 100_000 - body["usage"]["tokens"]


def test_another_post_racing_its_retry_is_answered_once(racing_app, shop, monkeypatch):
    _held(monkeypatch, idempotency, "store")
    headers = shop["headers"] | {"Idempotency-Key": "race-count-1"}
    clients = [english_client(racing_app) for _ in range(2)]

    def call(client):
        return lambda: client.post("/api/v1/tokens/count", headers=headers,
                                   json={"text": "hello world"})

    original, replay = _settle(racing_app, at_once([call(c) for c in clients]),
                               call(clients[0]))
    assert original.status_code == 200 and replay.get_json() == original.get_json()
    with racing_app.extensions["market.db"].session() as session:
        stored = session.scalar(select(func.count()).select_from(
            idempotency.IdempotencyRecord).where(
            idempotency.IdempotencyRecord.key == "race-count-1"))
    assert stored == 1
