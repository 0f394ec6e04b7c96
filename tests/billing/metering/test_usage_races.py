"""Royalty reports racing on really committed data (PostgreSQL): clients sending overlapping
batches at the same moment record and charge each event id once, and the credit line holds
exactly what the recorded events cost."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from billing.models import CreditLine, UsageEvent
from market.accounts.models import Organization
from market.core.db import utcnow
from tests.billing.shop import buyer, listed_dataset
from tests.concurrency import at_once, fresh_app, postgresql_only
from tests.factories import english_client, make_key

pytestmark = postgresql_only(
    "concurrent batches only race on PostgreSQL (SQLite runs one writer at a time)")

CLIENTS = 4
ROUNDS = 5
SHARED = 300  # ids every client of a round reports
OWN = 50  # ids only one client reports
ROYALTY = {"kind": "royalty", "code": "royalty", "mode": "graduated", "tiers": [
    {"from_tokens": 0, "up_to": 1_000_000,
     "price_per_million": {"amount": "30", "currency": "CNY"}},
    {"from_tokens": 1_000_000, "up_to": None,
     "price_per_million": {"amount": "17", "currency": "CNY"}}]}


@pytest.fixture(scope="module")
def racing_app(database_url, tmp_path_factory):
    with fresh_app(database_url, tmp_path_factory.mktemp("usage-races")) as app:
        yield app


@pytest.fixture()
def shop(racing_app):
    """A listed dataset with a royalty price, and a model company with a credit line and a
    reporting key."""
    database = racing_app.extensions["market.db"]
    passwords = racing_app.extensions["market.passwords"]
    with database.session() as session, session.begin():
        made = listed_dataset(session, passwords, extra_offers=[ROYALTY])
        org, _, _ = buyer(session, passwords)
        session.flush()
        session.add(CreditLine(organization_id=org.id, currency="CNY",
                               limit_minor=10 ** 12))
        _, secret = make_key(session, session.get(Organization, org.id),
                             scopes=("usage:write",))
        return {"dataset_id": made["dataset"].id, "buyer_id": org.id,
                "headers": {"Authorization": f"Bearer {secret}"}}


def _event(event_id: str, dataset_id: int, tokens: int) -> dict:
    occurred = utcnow() - dt.timedelta(minutes=1)
    return {"id": event_id, "dataset_id": dataset_id, "tokens": tokens,
            "occurred_at": occurred.isoformat()}


def test_overlapping_batches_at_once_record_and_charge_each_id_once(racing_app, shop):
    clients = [english_client(racing_app) for _ in range(CLIENTS)]
    responses = []
    for round_ in range(ROUNDS):
        shared = [_event(f"r{round_}-shared-{i}", shop["dataset_id"], 1_000 + 37 * i)
                  for i in range(SHARED)]
        batches = [shared + [_event(f"r{round_}-own-{c}-{i}", shop["dataset_id"], 500 + i)
                             for i in range(OWN)] for c in range(CLIENTS)]

        def send(client, batch):
            return lambda: client.post("/api/v1/usage/events", json={"events": batch},
                                       headers=shop["headers"])

        for response in at_once([send(c, b) for c, b in zip(clients, batches)]):
            responses.append((response.status_code, response.get_json()))

    # A batch that meets an id being recorded by another waits for it, then reports it as a
    # duplicate: no batch here needs to be sent again.
    assert [status for status, _ in responses] == [200] * (CLIENTS * ROUNDS)
    # What the batches said of an id: accepted by one, a duplicate of the same amount in the rest.
    said = defaultdict(list)
    for _, body in responses:
        for result in body["results"]:
            said[result["id"]].append((result["status"], result["amount"]))
    for event_id, outcomes in said.items():
        assert [s for s, _ in outcomes].count("accepted") == 1, event_id
        assert len({(a["amount"], a["currency"]) for _, a in outcomes}) == 1, event_id

    database = racing_app.extensions["market.db"]
    with database.session() as session:
        counts = dict(session.execute(
            select(UsageEvent.request_id, func.count()).where(
                UsageEvent.organization_id == shop["buyer_id"])
            .group_by(UsageEvent.request_id)).all())
        assert set(counts.values()) == {1}
        recorded = {request_id.split(":", 2)[2] for request_id in counts}
        assert recorded == set(said)  # every id reported is recorded, and no other
        charged = session.scalar(select(func.sum(UsageEvent.amount_minor)).where(
            UsageEvent.organization_id == shop["buyer_id"]))
        used = session.scalar(select(CreditLine.used_minor).where(
            CreditLine.organization_id == shop["buyer_id"]))
    assert int(charged) == used > 0
    reported = sum(int(Decimal(outcomes[0][1]["amount"]) * 100) for outcomes in said.values())
    assert reported == used
