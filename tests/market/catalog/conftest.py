"""Catalogue fixtures: a supplier and an exchange with people signed in, and dataset helpers."""

from __future__ import annotations

import json

import pytest

from tests.factories import make_org
from tests.fixtures import csrf_token

DATASET = {
    "title_zh": "医疗影像数据集", "title_en": "Medical imaging reports",
    "summary_zh": "三甲医院脱敏影像报告", "summary_en": "De-identified radiology reports",
    "description_zh": "包含CT与MRI报告文本。", "description_en": "CT and MRI report text.",
    "sector": "healthcare", "modality": "text", "ai_stage": "instruction_tuning",
    "languages": ["zh", "en"], "licence": "commercial_standard",
    "personal_information": "deidentified", "sensitivity": "general",
    "rights": {"holding": "Hospital A", "usage": "Supplier Co", "operation": "Supplier Co"},
    "required_fields": ["instruction", "response"],
}

RECORDS = [
    {"instruction": "总结这份CT报告。", "response": "双肺未见明显异常。", "label": "normal"},
    {"instruction": "Summarize the MRI report.", "response": "No acute findings.",
     "label": "normal"},
    {"instruction": "这份报告提示什么？", "response": "右肺上叶结节，建议随访。",
     "label": "abnormal"},
]


@pytest.fixture()
def supplier(session):
    org = make_org(session, "supplier", name="Supplier Co")
    session.commit()
    return org


@pytest.fixture()
def exchange(session):
    org = make_org(session, "exchange", name="Exchange One")
    session.commit()
    return org


@pytest.fixture()
def supplier_client(sign_in_as, supplier):
    client = sign_in_as(supplier, "owner")
    client.csrf = {"X-CSRFToken": csrf_token(client)}
    return client


@pytest.fixture()
def reviewer_client(sign_in_as, exchange):
    client = sign_in_as(exchange, "reviewer")
    client.csrf = {"X-CSRFToken": csrf_token(client)}
    return client


def jsonl(records) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def create_dataset(client, **changes) -> dict:
    response = client.post("/api/v1/datasets", json=DATASET | changes, headers=client.csrf)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def import_file(client, dataset_id, body: bytes, content_type="application/x-ndjson", **query):
    return client.post(f"/api/v1/datasets/{dataset_id}/versions", data=body,
                       content_type=content_type, headers=client.csrf, query_string=query)


def set_chain(client, dataset_id, participants):
    return client.put(f"/api/v1/datasets/{dataset_id}/supply-chain",
                      json={"participants": participants}, headers=client.csrf)


@pytest.fixture()
def ready_dataset(supplier_client, supplier):
    """A dataset with one imported version and a valid supply chain."""
    dataset = create_dataset(supplier_client)
    response = import_file(supplier_client, dataset["id"], jsonl(RECORDS))
    assert response.status_code == 201, response.get_json()
    assert set_chain(supplier_client, dataset["id"], [
        {"organization_id": supplier.id, "role": "supplier", "share_bps": 10_000}]
    ).status_code == 200
    offer = supplier_client.post(f"/api/v1/datasets/{dataset['id']}/offers", json={"terms": {
        "kind": "mall_package", "code": "pack", "price": {"amount": "9800", "currency": "CNY"}}},
        headers=supplier_client.csrf)
    assert offer.status_code == 201, offer.get_json()
    return dataset
