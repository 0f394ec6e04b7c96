"""The input boundary: each class of value that once reached the database or a parser and
answered 500 is a 4xx problem naming its field, on both databases, and writes nothing."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from market.catalog.models import DatasetVersion
from market.core.inputs import INT32_MAX, INT64_MAX
from tests.market.catalog.conftest import create_dataset, import_file
from tests.market.catalog.conftest import supplier, supplier_client  # noqa: F401 (fixtures)
from tests.factories import make_key, make_org
from tests.fixtures import csrf_token


@pytest.fixture()
def bearer(session):
    org = make_org(session, "buyer", "supplier")
    _, secret = make_key(session, org)
    session.commit()
    return {"Authorization": f"Bearer {secret}"}


def assert_problem(response, status: int, field: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["code"] and problem["request_id"] == response.headers["X-Request-Id"]
    assert field in problem["errors"], problem
    return problem


# Integers beyond what the columns hold ----------------------------------------------------------

@pytest.mark.parametrize("path, field", [
    (f"/api/v1/datasets/{INT32_MAX + 1}", "dataset_id"),
    ("/api/v1/orders/9999999999", "order_id"),
    (f"/api/v1/datasets/1/versions/{INT64_MAX + 1}/records", "number"),
    ("/api/v1/datasets/1/versions/1/records?cursor=9223372036854775808", "cursor"),
    (f"/api/v1/statements/{2**40}", "statement_id"),
])
def test_an_integer_beyond_its_column_is_refused(client, bearer, path, field):
    assert_problem(client.get(path, headers=bearer), 422, field)


def test_an_integer_in_a_body_beyond_its_column_is_refused(client, bearer):
    response = client.post("/api/v1/keys", headers=bearer, json={
        "name": "big", "scopes": ["data:read"], "requests_per_minute": 2**40})
    assert_problem(response, 422, "requests_per_minute")


# NUL and lone surrogates ------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["\x00", "\ud800", "ok\udfffok"])
def test_text_no_database_stores_is_refused_in_a_body(client, bearer, text):
    body = json.dumps({"query": text})  # "\u0000" / "\ud800": JSON escapes
    response = client.post("/api/v1/datasets/1/versions/1/search", headers=bearer, data=body,
                           content_type="application/json")
    assert_problem(response, 422, "query")


def test_token_counting_refuses_what_search_refuses(client, bearer):
    # Once /tokens/count took a lone surrogate that search answered with a 500.
    for text in ("\ud800", "\x00"):
        response = client.post("/api/v1/tokens/count", headers=bearer,
                               data=json.dumps({"text": text}), content_type="application/json")
        assert_problem(response, 422, "text")
    response = client.post("/api/v1/tokens/count", headers=bearer,
                           data=json.dumps({"record": {"a": ["\ud800"]}}),
                           content_type="application/json")
    assert_problem(response, 422, "record.a.0")


def test_nul_in_a_query_is_refused(client, bearer):
    response = client.get("/api/v1/budgets/1/report/records?sector=%00", headers=bearer)
    assert_problem(response, 422, "sector")


def test_nul_in_a_dataset_change_writes_nothing(supplier_client):
    dataset = create_dataset(supplier_client)
    response = supplier_client.patch(f"/api/v1/datasets/{dataset['id']}",
                                     headers=supplier_client.csrf,
                                     data=json.dumps({"title_en": "bad\u0000title"}),
                                     content_type="application/json")
    assert_problem(response, 422, "title_en")
    again = supplier_client.get(f"/api/v1/datasets/{dataset['id']}").get_json()
    assert again["title_en"] == dataset["title_en"]


def test_a_storefront_form_with_nul_is_refused(client):
    token = csrf_token(client, "/login")
    response = client.post("/login", data={"email": "a\x00@example.com", "password": "x",
                                           "csrf_token": token})
    assert response.status_code == 422
    assert b"email" in response.data


@pytest.mark.parametrize("record, where", [
    ('{"text": "\\ud800"}', "text"),
    ('{"text": "a\\u0000b"}', "text"),
    ('{"\\ud800": 1}', "\ud800"),
])
def test_an_imported_record_no_database_stores_is_refused(supplier_client, session, record,
                                                           where):
    dataset = create_dataset(supplier_client)
    body = b'{"text": "fine"}\n' + record.encode() + b"\n"
    response = import_file(supplier_client, dataset["id"], body)
    problem = assert_problem(response, 422, "file")
    assert "Line 2" in problem["detail"]
    assert session.scalar(select(func.count()).select_from(DatasetVersion)) == 0


def test_a_csv_cell_with_nul_is_refused(supplier_client, session):
    dataset = create_dataset(supplier_client)
    response = import_file(supplier_client, dataset["id"], b"text\nfine\nbad\x00cell\n",
                           content_type="text/csv")
    problem = assert_problem(response, 422, "file")
    assert "Line 3" in problem["detail"]


# Deep nesting -----------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [65, 3000, 100_000])
def test_a_deeply_nested_body_is_refused(client, bearer, depth):
    body = '{"record": ' + "[" * depth + "]" * depth + "}"
    response = client.post("/api/v1/tokens/count", headers=bearer, data=body,
                           content_type="application/json")
    field = "_body" if depth > 900 else "record" + ".0" * 63  # past the parser, or not
    problem = assert_problem(response, 422, field)
    assert "nest at most 64 levels" in problem["detail"]


def test_an_import_nested_5000_levels_is_refused(supplier_client, session):
    dataset = create_dataset(supplier_client)
    record = '{"a": ' + "[" * 5000 + "]" * 5000 + "}"
    response = import_file(supplier_client, dataset["id"], record.encode() + b"\n")
    problem = assert_problem(response, 422, "file")
    assert "nests arrays and objects" in problem["detail"]


# Dates beyond the calendar ----------------------------------------------------------------------

@pytest.mark.parametrize("path, field", [
    ("/api/v1/statements?period=0000-01", "period"),
    ("/api/v1/statements?period=9999-12", "period"),
    ("/api/v1/usage?from=9999-12-31", "from"),
    ("/api/v1/usage?from=0001-01-01", "from"),
    ("/api/v1/usage?from=2026-01-01&to=9999-12-31", "to"),
])
def test_a_date_beyond_the_calendar_is_refused(client, bearer, path, field):
    assert_problem(client.get(path, headers=bearer), 422, field)


# Request ids ------------------------------------------------------------------------------------

def test_every_answer_has_a_request_id_and_a_plain_client_id_is_kept(client, bearer):
    ok = client.get("/api/v1/me", headers=bearer | {"X-Request-Id": "trace-7.a:b"})
    assert ok.status_code == 200 and ok.headers["X-Request-Id"] == "trace-7.a:b"
    hostile = client.get("/api/v1/me", headers=bearer | {"X-Request-Id": "x\ty<script>"})
    assert hostile.headers["X-Request-Id"].startswith("req_")
    page = client.get("/")
    assert page.headers["X-Request-Id"].startswith("req_")
    missing = client.get("/api/v1/nowhere")
    assert missing.get_json()["request_id"] == missing.headers["X-Request-Id"]
    assert missing.get_json()["code"] == "not_found"


# The storefront's forms ------------------------------------------------------------------------

@pytest.mark.parametrize("offer_id", [str(INT32_MAX + 1), str(INT64_MAX + 1), "9" * 40])
def test_a_form_integer_beyond_its_column_is_an_invalid_field(sign_in_as, session, offer_id):
    client = sign_in_as(make_org(session, "buyer"), "owner")
    response = client.post("/cart", data={"offer_id": offer_id, "quantity": "1",
                                          "csrf_token": csrf_token(client)})
    assert response.status_code == 302  # back to the page, the form's error flashed
    assert client.get("/cart").status_code == 200


def test_a_storefront_path_id_beyond_its_column_is_refused(sign_in_as, session):
    client = sign_in_as(make_org(session, "buyer"), "owner")
    response = client.get(f"/orders/{INT64_MAX + 1}")
    assert response.status_code == 422 and b"order_id" in response.data
