"""Fetching one file of a version of files, metered in tokens, on both object stores: the
file's tokens charged to the wallet through the records' charging path and headers, the bytes
(a range of them) streamed or handed out at a presigned URL, refusals that serve nothing, and
eight clients racing one wallet and one key's cap (PostgreSQL)."""

from __future__ import annotations

import hashlib
import io
import urllib.request

import pytest
from sqlalchemy import func, select

from billing import entitlements
from billing.models import CreditLine, KeyUsageMonth, TokenWallet, UsageEvent
from market.accounts.models import Organization
from market.catalog import files, listings, offers
from market.catalog import services as catalog
from market.catalog.models import DatasetVersion
from market.core.objects import LocalObjectStore
from tests.billing.shop import DATASET, principal_of
from tests.concurrency import at_once, fresh_app, postgresql_only
from tests.factories import english_client, make_key, make_org, make_user
from tests.market.core.test_objects import local_backend, s3_backend

DATA = b"The quick brown fox jumps over the lazy dog.\n" * 40
PATH = "texts/fox.txt"
GENEROUS = {"requests_per_minute": 1_000_000, "tokens_per_minute": 1_000_000_000}


@pytest.fixture(params=["local", "s3"])
def store(request, app, tmp_path, monkeypatch):
    """The app's object store, for one test: a fresh directory, or a fresh bucket."""
    if request.param == "local":
        chosen = local_backend(tmp_path)
    else:
        chosen = s3_backend(request.getfixturevalue("s3_server"),
                            request.getfixturevalue("s3_bucket"))
    monkeypatch.setitem(app.extensions, "market.objects", chosen.store)
    return chosen.store


def file_version(session, passwords, store, org=None) -> dict:
    """A supplier's dataset whose one version is the file ``PATH``; the supplier pays its own
    fetches from its platform wallet."""
    org = org or make_org(session, "supplier", "buyer", name="Files Supplier")
    owner = principal_of(make_user(session, passwords, org, "owner"), org)
    dataset = catalog.create_dataset(session, owner, DATASET)
    upload = files.start_upload(session, owner, store, dataset, path=PATH,
                                media_type="text/plain", size=len(DATA),
                                sha256=hashlib.sha256(DATA).hexdigest())
    files.upload_part(store, upload, 1, io.BytesIO(DATA))
    files.complete_upload(session, owner, store, upload)
    version = files.create_file_version(session, owner, dataset, [upload.id])
    session.flush()
    return {"org": org, "version_id": version.id, "tokens": upload.tokens}


def fund(session, organization_id: int, tokens: int) -> int:
    wallet = entitlements.get_wallet(session, organization_id, "platform")
    entitlements.change_wallet(session, wallet, tokens, kind="grant",
                               reference=f"file-grant:{organization_id}:{tokens}")
    session.flush()
    return wallet.id


def fetch(client, secret: str, version_id: int, path: str = PATH, **headers):
    return client.get(f"/api/v1/versions/{version_id}/files/content", query_string={
        "path": path}, headers={"Authorization": f"Bearer {secret}", **headers})


def body_of(response, store) -> bytes:
    """The file's bytes as a client gets them: the body, or the presigned URL's."""
    if isinstance(store, LocalObjectStore):
        return response.get_data()
    assert response.status_code == 302, response.get_data()
    assert response.headers["Location"] == response.get_json()["url"]
    request = urllib.request.Request(response.headers["Location"], headers={
        key: value for key, value in response.request.headers.items() if key == "Range"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.read()


@pytest.fixture()
def shop(app, session, passwords, store):
    made = file_version(session, passwords, store)
    made["wallet_id"] = fund(session, made["org"].id, 10 * made["tokens"])
    key, secret = make_key(session, made["org"], scopes=("data:read",), **GENEROUS)
    made["key_id"], made["secret"] = key.id, secret
    session.commit()
    return made


def test_a_fetch_charges_the_files_tokens_and_serves_its_bytes(app, session, shop, store):
    assert shop["tokens"] > 0
    response = fetch(english_client(app), shop["secret"], shop["version_id"])

    assert response.status_code == (200 if isinstance(store, LocalObjectStore) else 302)
    assert body_of(response, store) == DATA
    assert response.headers["X-Tokens-Charged"] == str(shop["tokens"])
    assert int(response.headers["X-Tokens-Remaining"]) == 9 * shop["tokens"]
    assert "x-ratelimit-remaining-tokens" in response.headers
    session.expire_all()
    assert session.get(TokenWallet, shop["wallet_id"]).balance_tokens == 9 * shop["tokens"]
    event = session.scalar(select(UsageEvent).where(UsageEvent.api_key_id == shop["key_id"]))
    assert (event.tokens, event.paid_by, event.version_id) == (
        shop["tokens"], "wallet", shop["version_id"])


def test_a_range_is_served_as_206_and_charged_the_whole_file(app, session, shop, store):
    client = english_client(app)
    response = fetch(client, shop["secret"], shop["version_id"], Range="bytes=4-8")
    assert response.headers["X-Tokens-Charged"] == str(shop["tokens"])
    if isinstance(store, LocalObjectStore):
        assert response.status_code == 206
        assert response.headers["Content-Range"] == f"bytes 4-8/{len(DATA)}"
    assert body_of(response, store) == DATA[4:9]

    past = fetch(client, shop["secret"], shop["version_id"], Range=f"bytes={len(DATA)}-")
    assert past.status_code == 416 and past.get_json()["code"] == "range_not_satisfiable"
    assert past.headers["Content-Range"] == f"bytes */{len(DATA)}"
    assert past.headers["X-Tokens-Charged"] == "0"
    session.expire_all()
    assert session.get(TokenWallet, shop["wallet_id"]).balance_tokens == 9 * shop["tokens"]


def test_a_refused_fetch_serves_nothing_and_charges_nothing(app, session, passwords, shop,
                                                           store):
    client = english_client(app)
    poor = make_org(session, "buyer", name="Poor Co")
    _, poor_secret = make_key(session, poor, scopes=("data:read",), **GENEROUS)
    stranger = make_org(session, "supplier", "buyer", name="Stranger Co")
    broke = file_version(session, passwords, store, org=poor)
    _, stranger_secret = make_key(session, stranger, scopes=("data:read",), **GENEROUS)
    session.commit()

    # Another organization's version, not listed: not even confirmed, as records.
    hidden = fetch(client, stranger_secret, shop["version_id"])
    assert hidden.status_code == 404 and hidden.headers["X-Tokens-Charged"] == "0"
    missing = fetch(client, shop["secret"], shop["version_id"], path="texts/none.txt")
    assert missing.status_code == 404 and "path" in missing.get_json()["errors"]
    # Its own file, but nothing pays: 402 with what is needed, and no byte.
    unpaid = fetch(client, poor_secret, broke["version_id"])
    assert unpaid.status_code == 402, unpaid.get_json()
    problem = unpaid.get_json()
    assert problem["tokens_needed"] == broke["tokens"] and DATA not in unpaid.get_data()
    assert session.scalar(select(func.count()).select_from(UsageEvent)) == 0


def test_a_retry_under_the_same_idempotency_key_is_not_charged_again(app, session, shop,
                                                                      store):
    client = english_client(app)
    first = fetch(client, shop["secret"], shop["version_id"], **{"Idempotency-Key": "f-1"})
    again = fetch(client, shop["secret"], shop["version_id"], **{"Idempotency-Key": "f-1"})
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (first.headers["X-Tokens-Charged"], again.headers["X-Tokens-Charged"]) == (
        str(shop["tokens"]), "0")
    assert body_of(again, store) == DATA
    session.expire_all()
    assert session.get(TokenWallet, shop["wallet_id"]).balance_tokens == 9 * shop["tokens"]


METERED = {"kind": "metered", "code": "api", "mode": "graduated", "tiers": [
    {"from_tokens": 0, "up_to": None, "price_per_million": {"amount": "30", "currency": "CNY"}}]}


def listed_file_version(session, passwords, store) -> dict:
    """A supplier's file version, listed at an exchange with a metered offer, for other
    companies to fetch from."""
    made = file_version(session, passwords, store)
    owner = principal_of(make_user(session, passwords, made["org"], "owner"), made["org"])
    dataset = session.get(DatasetVersion, made["version_id"]).dataset
    catalog.set_supply_chain(session, owner, dataset, [
        {"organization_id": made["org"].id, "role": "supplier", "share_bps": 10_000}])
    offers.add_offer(session, owner, dataset, METERED)
    exchange = make_org(session, "exchange", name="Files Exchange")
    reviewer = principal_of(make_user(session, passwords, exchange, "reviewer"), exchange)
    listing = listings.submit(session, owner, dataset, version_id=made["version_id"],
                              exchange_id=exchange.id, review_days=5)
    listings.approve(session, reviewer, listing)
    session.flush()
    return made


def test_a_model_company_fetches_a_listed_file_paid_by_its_wallet_or_its_credit_line(
        app, session, passwords, store):
    made = listed_file_version(session, passwords, store)
    model_co = make_org(session, "buyer", name="Model Co")
    wallet_id = fund(session, model_co.id, made["tokens"])
    key, secret = make_key(session, model_co, scopes=("data:read",), **GENEROUS)
    session.commit()
    client = english_client(app)

    paid = fetch(client, secret, made["version_id"])
    assert body_of(paid, store) == DATA
    assert paid.headers["X-Tokens-Charged"] == str(made["tokens"])
    session.expire_all()
    assert session.get(TokenWallet, wallet_id).balance_tokens == 0
    event = session.scalar(select(UsageEvent).where(UsageEvent.api_key_id == key.id))
    assert (event.organization_id, event.paid_by, event.version_id) == (
        model_co.id, "wallet", made["version_id"])
    assert event.supply_chain_revision_id is not None

    # The wallet is spent and no credit line: 402, no byte; a credit line then pays by the
    # offer's rate card (30 per million tokens, rounded on the month).
    refused = fetch(client, secret, made["version_id"])
    assert refused.status_code == 402 and DATA not in refused.get_data()
    session.add(CreditLine(organization_id=model_co.id, currency="CNY", limit_minor=100))
    session.commit()
    postpaid = fetch(client, secret, made["version_id"])
    assert body_of(postpaid, store) == DATA
    assert postpaid.headers["X-Tokens-Charged"] == str(made["tokens"])
    session.expire_all()
    line = session.scalar(select(CreditLine).where(CreditLine.organization_id == model_co.id))
    assert line.used_minor == round(made["tokens"] * 30 * 100 / 1_000_000)
    assert session.scalar(select(func.count()).select_from(UsageEvent).where(
        UsageEvent.api_key_id == key.id)) == 2

    # The same supplier's dataset that is not listed stays its own: another company's fetch
    # is a 404, as for records.
    stranger = make_org(session, "buyer", name="Other Model Co")
    _, stranger_secret = make_key(session, stranger, scopes=("data:read",), **GENEROUS)
    draft = file_version(session, passwords, store, org=made["org"])
    session.commit()
    assert fetch(client, stranger_secret, draft["version_id"]).status_code == 404


# Racing on really committed data ---------------------------------------------------------------

THREADS = 8
CALLS_PER_THREAD = 20
SERVABLE = THREADS * CALLS_PER_THREAD // 2


@pytest.fixture()
def racing(database_url, tmp_path):
    with fresh_app(database_url, tmp_path) as app:
        app.extensions["market.objects"] = LocalObjectStore(tmp_path / "objects")
        database, passwords = app.extensions["market.db"], app.extensions["market.passwords"]
        with database.session() as session, session.begin():
            made = file_version(session, passwords, app.extensions["market.objects"])
            made["org_id"] = made.pop("org").id
        yield app, made


def _race(app, made, secret: str) -> list[tuple[int, int, bytes]]:
    def calls() -> list:
        client = english_client(app)
        return [(r.status_code, int(r.headers["X-Tokens-Charged"]), r.get_data())
                for r in (fetch(client, secret, made["version_id"])
                          for _ in range(CALLS_PER_THREAD))]

    return [result for per_thread in at_once([calls] * THREADS) for result in per_thread]


def _key(app, organization_id: int, **limits) -> tuple[int, str]:
    with app.extensions["market.db"].session() as session, session.begin():
        key, secret = make_key(session, session.get(Organization, organization_id),
                               scopes=("data:read",), **GENEROUS, **limits)
        session.flush()
        return key.id, secret


def _served(results, tokens: int) -> int:
    assert {status for status, _, _ in results} <= {200, 402}
    assert all(body == DATA and charged == tokens for status, charged, body in results
               if status == 200)
    assert all(charged == 0 and DATA not in body for status, charged, body in results
               if status == 402)
    return sum(charged for status, charged, _ in results if status == 200)


@postgresql_only("row locks and concurrent spending only mean something on PostgreSQL")
def test_eight_clients_fetching_never_overdraw_a_wallet_or_pass_a_cap(racing):
    app, made = racing
    database, tokens = app.extensions["market.db"], made["tokens"]
    with database.session() as session, session.begin():
        wallet_id = fund(session, made["org_id"], SERVABLE * tokens)
    key_id, secret = _key(app, made["org_id"])

    served = _served(_race(app, made, secret), tokens)
    with database.session() as session:
        assert session.get(TokenWallet, wallet_id).balance_tokens == SERVABLE * tokens - served
        assert served == SERVABLE * tokens
        assert session.scalar(select(func.sum(UsageEvent.tokens)).where(
            UsageEvent.api_key_id == key_id)) == served

    # A key capped at half what the wallet now holds.
    with database.session() as session, session.begin():
        fund(session, made["org_id"], 2 * SERVABLE * tokens)
    cap = SERVABLE * tokens
    key_id, secret = _key(app, made["org_id"], monthly_token_cap=cap)
    served = _served(_race(app, made, secret), tokens)
    assert served == cap
    with database.session() as session:
        month = session.scalar(select(KeyUsageMonth).where(KeyUsageMonth.api_key_id == key_id))
        assert month.tokens == served == session.scalar(select(func.sum(UsageEvent.tokens))
                                                        .where(UsageEvent.api_key_id == key_id))
