"""Supply chains: shares in basis points that total exactly 10,000, kept as revisions."""

from __future__ import annotations

import pytest

from tests.market.catalog.conftest import create_dataset, set_chain
from tests.factories import make_org


@pytest.fixture()
def processor(session):
    org = make_org(session, "processor", name="Annotators Ltd")
    session.commit()
    return org


def test_revisions_keep_history(supplier_client, supplier, processor):
    dataset = create_dataset(supplier_client)
    first = set_chain(supplier_client, dataset["id"], [
        {"organization_id": supplier.id, "role": "supplier", "share_bps": 10_000}])
    second = set_chain(supplier_client, dataset["id"], [
        {"organization_id": supplier.id, "role": "supplier", "share_bps": 7_000},
        {"organization_id": processor.id, "role": "processor", "share_bps": 3_000}])
    assert (first.get_json()["revision"], second.get_json()["revision"]) == (1, 2)
    history = supplier_client.get(f"/api/v1/datasets/{dataset['id']}/supply-chain").get_json()
    assert history["current"]["revision"] == 2
    assert [r["revision"] for r in history["revisions"]] == [2, 1]
    assert history["revisions"][1]["participants"][0]["share_bps"] == 10_000


@pytest.mark.parametrize("shares, field", [
    ([9_000], "participants"),
    ([7_000, 3_001], "participants"),
    ([11_000, -1_000], "participants.1.share_bps"),
])
def test_shares_must_total_10000(supplier_client, supplier, processor, shares, field):
    dataset = create_dataset(supplier_client)
    orgs = [(supplier.id, "supplier"), (processor.id, "processor")]
    participants = [{"organization_id": o, "role": r, "share_bps": s}
                    for (o, r), s in zip(orgs, shares)]
    response = set_chain(supplier_client, dataset["id"], participants)
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    assert field.split(".")[0] in errors


def test_the_owner_must_be_the_supplier(supplier_client, processor):
    dataset = create_dataset(supplier_client)
    response = set_chain(supplier_client, dataset["id"], [
        {"organization_id": processor.id, "role": "supplier", "share_bps": 10_000}])
    assert response.status_code == 422


def test_unknown_organization_is_named(supplier_client, supplier):
    dataset = create_dataset(supplier_client)
    response = set_chain(supplier_client, dataset["id"], [
        {"organization_id": supplier.id, "role": "supplier", "share_bps": 5_000},
        {"organization_id": 999_999, "role": "channel", "share_bps": 5_000}])
    assert response.status_code == 422
    assert "participants[1].organization_id" in response.get_json()["errors"]


def test_supply_chain_editor_page(supplier_client, supplier, processor):
    from tests.fixtures import csrf_token

    dataset = create_dataset(supplier_client)
    page = f"/supplier/datasets/{dataset['id']}"
    form = {"csrf_token": csrf_token(supplier_client, page), "note": "add annotators",
            "rows-0-organization_id": supplier.id, "rows-0-role": "supplier",
            "rows-0-share_percent": "62.50",
            "rows-1-organization_id": processor.id, "rows-1-role": "processor",
            "rows-1-share_percent": "37.50"}
    response = supplier_client.post(f"{page}/supply-chain", data=form)
    assert response.status_code == 302
    chain = supplier_client.get(f"/api/v1/datasets/{dataset['id']}/supply-chain").get_json()
    assert [p["share_bps"] for p in chain["current"]["participants"]] == [6_250, 3_750]
    form["rows-1-share_percent"] = "30"
    response = supplier_client.post(f"{page}/supply-chain", data=form)
    assert response.status_code == 422
