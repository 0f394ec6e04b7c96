"""Stored records: paged by cursor and searched, in Chinese and English."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from market.catalog.models import DatasetVersion
from market.catalog.records import page_records, search_records
from market.core.errors import InvalidInput
from tests.market.catalog.conftest import create_dataset, import_file, jsonl

RECORDS = [{"i": i, "text": f"第{i}条 电网 record {i}" + (" 100%_done" if i == 7 else "")}
           for i in range(25)]


@pytest.fixture()
def version(supplier_client, session):
    dataset = create_dataset(supplier_client)
    assert import_file(supplier_client, dataset["id"], jsonl(RECORDS)).status_code == 201
    return session.scalar(select(DatasetVersion).where(DatasetVersion.dataset_id == dataset["id"]))


def test_paging_by_cursor_visits_every_record_once_in_order(session, version):
    seen, cursor = [], -1
    while cursor is not None:
        page = page_records(session, version, after=cursor, limit=10)
        seen += [json.loads(r.data)["i"] for r in page.records]
        cursor = page.next_cursor
    assert seen == list(range(25))


@pytest.mark.parametrize("query, expected", [
    ("第3条", [3]),
    ("RECORD 2", [2] + list(range(20, 25))),
    ("100%_", [7]),
    ("%", [7]),
    ("nothing here", []),
])
def test_search(session, version, query, expected):
    page = search_records(session, version, query, limit=50)
    assert [json.loads(r.data)["i"] for r in page.records] == expected


@pytest.mark.parametrize("call", [
    lambda s, v: page_records(s, v, limit=0),
    lambda s, v: search_records(s, v, "   "),
    lambda s, v: search_records(s, v, "x", limit=5000),
])
def test_bad_reads_are_named(session, version, call):
    with pytest.raises(InvalidInput):
        call(session, version)
