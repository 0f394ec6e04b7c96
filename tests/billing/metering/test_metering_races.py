"""Metered calls racing on really committed data (PostgreSQL): eight clients spending one token
wallet, then one key's monthly cap, at the same moment. Each thread is its own client and
connection, lined up on a barrier; exactly as many tokens are served as are paid for, never one
beyond the wallet or the cap, and every call that does not fit is refused with 402.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from billing import entitlements
from billing.models import KeyUsageMonth, TokenWallet, UsageEvent, WalletEntry
from market.accounts.models import Organization
from market.catalog.models import DatasetRecord
from tests.billing.shop import buyer, listed_dataset
from tests.concurrency import fresh_app, postgresql_only
from tests.factories import english_client, make_key

pytestmark = postgresql_only("row locks and concurrent spending only mean something on PostgreSQL")

THREADS = 8
CALLS_PER_THREAD = 200
# Enough for about half of the calls: the race runs both while there are tokens and after.
SERVABLE_CALLS = THREADS * CALLS_PER_THREAD // 2

METERED = {"kind": "metered", "code": "api", "mode": "graduated", "tiers": [
    {"from_tokens": 0, "up_to": None, "price_per_million": {"amount": "30", "currency": "CNY"}}]}
# Limits that never refuse a call here: only the wallet and the cap may.
GENEROUS = {"requests_per_minute": 1_000_000, "tokens_per_minute": 1_000_000_000}


@pytest.fixture(scope="module")
def racing_app(database_url, tmp_path_factory):
    """One fresh, really committed database for the module; each test builds its own shop."""
    with fresh_app(database_url, tmp_path_factory.mktemp("metering-races")) as app:
        yield app


@pytest.fixture()
def shop(racing_app):
    """A listed dataset with a pay-as-you-go card (so it may be called) and a buyer without a
    credit line (so once prepaid tokens run out, nothing pays); the tokens of one record."""
    database = racing_app.extensions["market.db"]
    passwords = racing_app.extensions["market.passwords"]
    with database.session() as session, session.begin():
        made = listed_dataset(session, passwords, extra_offers=[METERED])
        org, _, _ = buyer(session, passwords)
        session.flush()
        version = made["version"]
        assert version.encoding == racing_app.config["TOKEN_ENCODING"]
        first = session.scalar(select(DatasetRecord.tokens).where(
            DatasetRecord.version_id == version.id).order_by(DatasetRecord.seq).limit(1))
        return {"dataset_id": made["dataset"].id, "buyer_id": org.id, "page_tokens": first}


def _fund(app, organization_id: int, tokens: int) -> int:
    """Grant tokens to the buyer's platform-wide wallet; the wallet's id."""
    with app.extensions["market.db"].session() as session, session.begin():
        wallet = entitlements.get_wallet(session, organization_id, "platform")
        entitlements.change_wallet(session, wallet, tokens, kind="grant",
                                   reference=f"race-grant:{organization_id}:{tokens}")
        return wallet.id


def _key(app, organization_id: int, **limits) -> tuple[int, str]:
    with app.extensions["market.db"].session() as session, session.begin():
        org = session.get(Organization, organization_id)
        key, secret = make_key(session, org, scopes=("data:read",), **GENEROUS, **limits)
        session.flush()
        return key.id, secret


def _race_pages(app, shop, secret: str) -> list:
    """THREADS clients, lined up on a barrier, each asking CALLS_PER_THREAD one-record pages;
    every response's (status, X-Tokens-Charged, problem fields)."""
    barrier = threading.Barrier(THREADS)
    results: list[list] = [[] for _ in range(THREADS)]
    path = f"/api/v1/datasets/{shop['dataset_id']}/versions/1/records"
    headers = {"Authorization": f"Bearer {secret}"}

    def calls(i: int) -> None:
        client = english_client(app)
        barrier.wait()
        for _ in range(CALLS_PER_THREAD):
            response = client.get(path, headers=headers, query_string={"limit": 1})
            charged = response.headers.get("X-Tokens-Charged")
            errors = response.get_json().get("errors") if response.status_code >= 400 else None
            results[i].append((response.status_code, int(charged) if charged else None,
                               errors))

    threads = [threading.Thread(target=calls, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [r for per_thread in results for r in per_thread]


def _served(results, page_tokens: int, refused_for: str) -> int:
    """Tokens charged by the 200s; every other response is a 402 naming ``refused_for``."""
    statuses = {status for status, _, _ in results}
    assert statuses <= {200, 402}, sorted(statuses)
    assert all(charged == page_tokens for status, charged, _ in results if status == 200)
    assert all(refused_for in errors for status, _, errors in results if status == 402)
    return sum(charged for status, charged, _ in results if status == 200)


def test_eight_clients_spending_one_wallet_never_take_it_below_zero(racing_app, shop):
    database = racing_app.extensions["market.db"]
    funded = SERVABLE_CALLS * shop["page_tokens"]
    wallet_id = _fund(racing_app, shop["buyer_id"], funded)
    key_id, secret = _key(racing_app, shop["buyer_id"])

    results = _race_pages(racing_app, shop, secret)

    served = _served(results, shop["page_tokens"], refused_for="tokens")
    with database.session() as session:
        balance = session.get(TokenWallet, wallet_id).balance_tokens
        debited = funded - balance
        assert served == debited <= funded
        assert balance >= 0
        # Each call was whole or refused: as many calls served as the tokens allowed.
        assert balance < shop["page_tokens"]
        assert sum(1 for status, _, _ in results if status == 200) == SERVABLE_CALLS
        entries = session.scalars(select(WalletEntry).where(WalletEntry.wallet_id == wallet_id)
                                  .order_by(WalletEntry.id)).all()
        assert (entries[0].kind, entries[0].balance_after) == ("grant", funded)
        # Written under the wallet's row lock, the entries form one unbroken chain of balances.
        for before, entry in zip(entries, entries[1:]):
            assert entry.kind == "debit" and entry.delta_tokens == -shop["page_tokens"]
            assert entry.balance_after == before.balance_after + entry.delta_tokens >= 0
        assert entries[-1].balance_after == balance
        assert -sum(e.delta_tokens for e in entries[1:]) == debited
        events = session.execute(select(func.count(), func.sum(UsageEvent.tokens)).where(
            UsageEvent.api_key_id == key_id)).one()
        assert tuple(events) == (SERVABLE_CALLS, debited)


def test_eight_clients_on_one_key_never_pass_its_monthly_cap(racing_app, shop):
    database = racing_app.extensions["market.db"]
    cap = SERVABLE_CALLS * shop["page_tokens"]
    wallet_id = _fund(racing_app, shop["buyer_id"], 10 * cap)
    key_id, secret = _key(racing_app, shop["buyer_id"], monthly_token_cap=cap)

    results = _race_pages(racing_app, shop, secret)

    served = _served(results, shop["page_tokens"], refused_for="monthly_token_cap")
    assert cap - shop["page_tokens"] < served <= cap
    with database.session() as session:
        months = session.scalars(select(KeyUsageMonth).where(
            KeyUsageMonth.api_key_id == key_id)).all()
        assert len(months) == 1  # racing first calls of the month made one row between them
        events = session.scalar(select(func.sum(UsageEvent.tokens)).where(
            UsageEvent.api_key_id == key_id))
        assert months[0].tokens == events == served
        # The wallet paid exactly what the cap let through.
        assert session.get(TokenWallet, wallet_id).balance_tokens == 10 * cap - served
