"""Racing requests on really committed data: exactly one wins, the other gets a clear 409."""

from __future__ import annotations

import io

from sqlalchemy import func, select

from market.accounts import services as accounts
from market.accounts.authz import SCOPES, Principal
from market.catalog import importer, offers
from market.catalog import services as catalog
from market.catalog.models import Listing, ListingEvent
from tests.market.catalog.conftest import DATASET, RECORDS, jsonl
from tests.concurrency import at_once, fresh_app


def _race(app, requests):
    """Send the requests at the same moment, each from its own client and connection."""
    clients = [app.test_client() for _ in requests]
    return at_once([lambda r=request, c=client: r(c) for request, client in zip(requests, clients)])


def test_two_simultaneous_submissions_of_one_dataset(database_url, tmp_path):
    with fresh_app(database_url, tmp_path) as app:
        database = app.extensions["market.db"]
        with database.session() as session, session.begin():
            supplier = accounts.create_organization(session, name="Racer", roles=["supplier"])
            exchange = accounts.create_organization(session, name="Ex", roles=["exchange"])
            session.flush()
            owner = Principal(organization_id=supplier.id, member_role="owner",
                              scopes=frozenset(SCOPES), org_roles=frozenset({"supplier"}))
            dataset = catalog.create_dataset(session, owner, DATASET)
            version = importer.import_version(session, owner, dataset, io.BytesIO(jsonl(RECORDS)),
                                              source_format="jsonl", encoding="o200k_base")
            catalog.set_supply_chain(session, owner, dataset, [
                {"organization_id": supplier.id, "role": "supplier", "share_bps": 10_000}])
            offers.add_offer(session, owner, dataset, {
                "kind": "mall_package", "code": "p",
                "price": {"amount": "1.00", "currency": "CNY"}})
            _, secret = accounts.create_api_key(session, owner, name="k",
                                                scopes=["catalog:write", "catalog:read"])
            ids = (dataset.id, version.number, exchange.id)

        def submit(client):
            return client.post(f"/api/v1/datasets/{ids[0]}/listing",
                               json={"version": ids[1], "exchange_id": ids[2]},
                               headers={"Authorization": f"Bearer {secret}"})

        statuses = sorted(r.status_code for r in _race(app, [submit] * 4))
        assert statuses == [201, 409, 409, 409]
        with database.session() as session:
            assert session.scalar(select(func.count()).select_from(Listing)) == 1
            assert session.scalar(select(func.count()).select_from(ListingEvent)) == 1
