"""Samples, schema and quality report of a version are shown to others only once the version
passed review; the supplier sees its drafts, the exchange what was submitted to it."""

from __future__ import annotations

import hashlib

import pytest

from tests.market.catalog.conftest import RECORDS, import_file, jsonl
from tests.factories import make_org

DRAFT = [{"instruction": "未经审核的草稿记录", "response": "不应展示", "label": "secret"}]


@pytest.fixture()
def listed(supplier_client, reviewer_client, ready_dataset, exchange):
    """v1 approved and listed; v2 imported by the supplier and not submitted."""
    dataset_id = ready_dataset["id"]
    submitted = supplier_client.post(f"/api/v1/datasets/{dataset_id}/listing",
                                     json={"version": 1, "exchange_id": exchange.id},
                                     headers=supplier_client.csrf)
    assert submitted.status_code == 201, submitted.get_json()
    listing_id = submitted.get_json()["id"]
    approved = reviewer_client.post(f"/api/v1/listings/{listing_id}/approve", json={},
                                    headers=reviewer_client.csrf)
    assert approved.status_code == 200, approved.get_json()
    assert import_file(supplier_client, dataset_id, jsonl(DRAFT)).status_code == 201
    return {"dataset_id": dataset_id, "listing_id": listing_id}


@pytest.fixture()
def other_client(sign_in_as, session):
    org = make_org(session, "buyer", name="Any Buyer")
    session.commit()
    return sign_in_as(org, "owner")


def _version(client, listed, number):
    return client.get(f"/api/v1/datasets/{listed['dataset_id']}/versions/{number}")


def test_another_organization_sees_only_reviewed_versions(other_client, listed):
    draft = _version(other_client, listed, 2)
    assert draft.status_code == 404
    assert "不应展示" not in draft.get_data(as_text=True)
    reviewed = _version(other_client, listed, 1)
    assert reviewed.status_code == 200
    assert reviewed.get_json()["samples"] == RECORDS
    versions = other_client.get(f"/api/v1/datasets/{listed['dataset_id']}/versions").get_json()[
        "items"]
    assert [v["number"] for v in versions] == [1]
    page = other_client.get(f"/datasets/{listed['dataset_id']}")
    assert page.status_code == 200 and "不应展示" not in page.get_data(as_text=True)


def test_the_supplier_sees_its_own_draft(supplier_client, listed):
    draft = _version(supplier_client, listed, 2)
    assert draft.status_code == 200 and draft.get_json()["samples"] == DRAFT
    versions = supplier_client.get(f"/api/v1/datasets/{listed['dataset_id']}/versions")
    assert [v["number"] for v in versions.get_json()["items"]] == [1, 2]


def test_the_exchange_sees_a_version_once_it_is_submitted_to_it(
        supplier_client, reviewer_client, other_client, listed, exchange):
    assert _version(reviewer_client, listed, 2).status_code == 404  # a draft is the supplier's
    delisted = reviewer_client.post(f"/api/v1/listings/{listed['listing_id']}/delist",
                                    json={"text": "v2 replaces v1"}, headers=reviewer_client.csrf)
    assert delisted.status_code == 200, delisted.get_json()
    resubmitted = supplier_client.post(f"/api/v1/datasets/{listed['dataset_id']}/listing",
                                       json={"version": 2, "exchange_id": exchange.id},
                                       headers=supplier_client.csrf)
    assert resubmitted.status_code == 201, resubmitted.get_json()

    in_review = _version(reviewer_client, listed, 2)
    assert in_review.status_code == 200 and in_review.get_json()["samples"] == DRAFT
    export = reviewer_client.get(f"/api/v1/datasets/{listed['dataset_id']}/versions/2/export")
    assert export.status_code == 200
    assert hashlib.sha256(export.get_data()).hexdigest() == in_review.get_json()["content_sha256"]
    assert _version(other_client, listed, 2).status_code == 404


def test_a_supply_chain_participant_does_not_read_an_unreviewed_draft(
        supplier_client, sign_in_as, session, ready_dataset, supplier):
    processor = make_org(session, "processor", name="Label Works")
    session.commit()
    chain = supplier_client.put(
        f"/api/v1/datasets/{ready_dataset['id']}/supply-chain", headers=supplier_client.csrf,
        json={"participants": [
            {"organization_id": supplier.id, "role": "supplier", "share_bps": 6_000},
            {"organization_id": processor.id, "role": "processor", "share_bps": 4_000}]})
    assert chain.status_code == 200, chain.get_json()
    participant = sign_in_as(processor, "owner")
    assert participant.get(f"/api/v1/datasets/{ready_dataset['id']}").status_code == 200
    assert participant.get(
        f"/api/v1/datasets/{ready_dataset['id']}/versions/1").status_code == 404
    page = participant.get(f"/datasets/{ready_dataset['id']}")
    assert page.status_code == 200
    assert RECORDS[0]["instruction"] not in page.get_data(as_text=True)
