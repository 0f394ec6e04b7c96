"""Metered calls and downloads serve only versions that passed the exchange's review: an
entitlement that follows the dataset never covers a draft, a pinned one covers its version."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import func, select

from billing import entitlements
from billing.models import Entitlement, UsageEvent
from market.catalog import importer, listings
from tests.billing.shop import buyer, listed_dataset, principal_of
from tests.factories import make_key, make_user

METERED = {"kind": "metered", "code": "api", "mode": "graduated", "tiers": [
    {"from_tokens": 0, "up_to": None, "price_per_million": {"amount": "30", "currency": "CNY"}}]}

DRAFT = [{"instruction": "未经审核的草稿", "response": "不应出售"}]


@pytest.fixture()
def shop(session, passwords):
    shop = listed_dataset(session, passwords, extra_offers=[METERED])
    shop["reviewer"] = principal_of(make_user(session, passwords, shop["exchange"], "reviewer"),
                                    shop["exchange"])
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in DRAFT).encode()
    shop["draft"] = importer.import_version(session, shop["owner"], shop["dataset"],
                                            io.BytesIO(body), source_format="jsonl",
                                            encoding="o200k_base")
    return shop


@pytest.fixture()
def subscriber(session, passwords, shop):
    """A buyer holding an API entitlement that follows the dataset, with tokens to spend."""
    org, _, _ = buyer(session, passwords)
    session.flush()
    session.add(Entitlement(organization_id=org.id, dataset_id=shop["dataset"].id, kind="api"))
    wallet = entitlements.get_wallet(session, org.id, "platform")
    entitlements.change_wallet(session, wallet, 1_000_000, kind="grant", reference="test-grant")
    key, secret = make_key(session, org, scopes=("data:read",))
    session.commit()
    return org, {"Authorization": f"Bearer {secret}"}


def _records(client, shop, headers, number):
    return client.get(f"/api/v1/datasets/{shop['dataset'].id}/versions/{number}/records",
                      headers=headers)


def _charged(session) -> int:
    return session.scalar(select(func.count()).select_from(UsageEvent))


def test_an_unsubmitted_version_is_neither_served_nor_charged(client, session, shop, subscriber):
    _, headers = subscriber
    listed = _records(client, shop, headers, 1)
    assert listed.status_code == 200, listed.get_json()
    charged = _charged(session)

    draft = _records(client, shop, headers, 2)
    assert draft.status_code == 403, draft.get_data()[:300]
    assert draft.get_json()["errors"].keys() == {"version"}
    assert "不应出售" not in draft.get_data(as_text=True)
    assert _charged(session) == charged  # nothing charged for it


def test_a_version_is_served_once_it_passed_review_and_the_earlier_one_still_is(
        client, session, shop, subscriber):
    _, headers = subscriber
    listing = shop["listing"]
    listings.delist(session, shop["owner"], listing)
    listings.submit(session, shop["owner"], shop["dataset"], version_id=shop["draft"].id,
                    exchange_id=shop["exchange"].id, review_days=5)
    session.commit()
    assert _records(client, shop, headers, 2).status_code == 404  # not listed while in review

    listings.approve(session, shop["reviewer"], listing)
    session.commit()
    reviewed = _records(client, shop, headers, 2)
    assert reviewed.status_code == 200, reviewed.get_json()
    assert reviewed.get_json()["records"] == DRAFT
    assert _records(client, shop, headers, 1).status_code == 200


def test_a_suspension_withdraws_the_review_of_its_version(session, shop):
    dataset, listing = shop["dataset"], shop["listing"]
    v1 = shop["version"].id
    assert listings.reviewed_version_ids(session, dataset.id) == {v1}
    listings.suspend(session, shop["reviewer"], listing, text="personal information found")
    assert listings.reviewed_version_ids(session, dataset.id) == set()
    listings.reinstate(session, shop["reviewer"], listing)
    assert listings.reviewed_version_ids(session, dataset.id) == {v1}
    listings.delist(session, shop["owner"], listing)  # ends sales; no verdict on the data
    assert listings.reviewed_version_ids(session, dataset.id) == {v1}


@pytest.mark.parametrize("kind", ["api", "download"])
def test_an_entitlement_says_which_versions_it_covers(session, shop, passwords, kind):
    org, _, _ = buyer(session, passwords)
    session.flush()
    dataset, v1, draft = shop["dataset"], shop["version"], shop["draft"]
    follows = Entitlement(organization_id=org.id, dataset_id=dataset.id, kind=kind)
    session.add(follows)
    session.flush()
    assert follows.covers == "reviewed"
    assert entitlements.active_entitlement(session, org.id, dataset.id, kind=kind,
                                           version_id=v1.id) is follows
    assert entitlements.active_entitlement(session, org.id, dataset.id, kind=kind,
                                           version_id=draft.id) is None

    # a right pinned to a version (a delivery accepted under a custom deal) covers it alone
    pinned = Entitlement(organization_id=org.id, dataset_id=dataset.id, kind=kind,
                         version_id=draft.id)
    session.add(pinned)
    session.flush()
    assert pinned.covers == "pinned"
    assert entitlements.active_entitlement(session, org.id, dataset.id, kind=kind,
                                           version_id=draft.id) is pinned
