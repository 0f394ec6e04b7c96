"""Offers under each commercial model, priced by ``pricing``, kept as retire-and-add."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from market.core.audit import AuditEntry
from tests.market.catalog.conftest import create_dataset

CNY = lambda amount: {"amount": amount, "currency": "CNY"}  # noqa: E731

OFFERS = [
    {"kind": "subscription", "code": "monthly", "period": "month", "price": CNY("2000.00"),
     "included_tokens": 5_000_000, "overage_per_million": CNY("20")},
    {"kind": "mall_package", "code": "pack", "price": CNY("9800"), "licence_months": 12,
     "download": True, "api_tokens": 1_000_000},
    {"kind": "metered", "code": "api", "mode": "volume", "tiers": [
        {"from_tokens": 0, "up_to": 1_000_000, "price_per_million": CNY("30")},
        {"from_tokens": 1_000_000, "up_to": None, "price_per_million": CNY("25.5")}],
     "free_tokens": 100_000, "minimum_charge": CNY("1.00")},
]


def _add(client, dataset_id, terms):
    return client.post(f"/api/v1/datasets/{dataset_id}/offers", json={"terms": terms},
                       headers=client.csrf)


def test_offers_of_each_model_are_stored_normalized_and_audited(supplier_client, session):
    dataset = create_dataset(supplier_client)
    created = [_add(supplier_client, dataset["id"], terms) for terms in OFFERS]
    assert [r.status_code for r in created] == [201, 201, 201]
    kinds = [r.get_json()["kind"] for r in created]
    assert kinds == ["subscription", "mall_package", "metered"]
    assert [r.get_json()["headline_minor"] for r in created] == [200_000, 980_000, 3_000]
    assert created[1].get_json()["terms"]["price"] == CNY("9800.00")
    detail = supplier_client.get(f"/api/v1/datasets/{dataset['id']}").get_json()
    assert len(detail["offers"]) == 3
    assert session.scalars(select(AuditEntry.action).where(
        AuditEntry.action == "offer.added")).all() == ["offer.added"] * 3


@pytest.mark.parametrize("terms, field", [
    ({"kind": "barter", "code": "x"}, "terms.kind"),
    ({"kind": "mall_package", "code": "p", "price": CNY("-1")}, "terms.price"),
    ({"kind": "mall_package", "code": "p", "price": {"amount": 12.5, "currency": "CNY"}},
     "terms.price"),
    ({"kind": "mall_package", "code": "p", "price": CNY("1"), "licence_months": 0},
     "terms.licence_months"),
    ({"kind": "metered", "code": "m", "mode": "graduated", "tiers": [
        {"from_tokens": 0, "up_to": 100, "price_per_million": CNY("1")},
        {"from_tokens": 200, "up_to": None, "price_per_million": CNY("1")}]}, "terms.tiers"),
    ({"kind": "mall_package", "code": "p", "price": {"amount": "1", "currency": "XYZ"}},
     "terms.price"),
])
def test_bad_terms_are_named(supplier_client, terms, field):
    dataset = create_dataset(supplier_client)
    response = _add(supplier_client, dataset["id"], terms)
    assert response.status_code == 422, response.get_json()
    (named,) = response.get_json()["errors"]
    assert named.startswith(field), named


def test_retiring_keeps_the_terms(supplier_client):
    dataset = create_dataset(supplier_client)
    offer = _add(supplier_client, dataset["id"], OFFERS[1]).get_json()
    retired = supplier_client.post(f"/api/v1/datasets/{dataset['id']}/offers/{offer['id']}/retire",
                                   headers=supplier_client.csrf).get_json()
    assert retired["active"] is False and retired["terms"] == offer["terms"]
    detail = supplier_client.get(f"/api/v1/datasets/{dataset['id']}").get_json()
    assert detail["offers"] == []
    # The code is free again for a new price.
    assert _add(supplier_client, dataset["id"], OFFERS[1]).status_code == 201
