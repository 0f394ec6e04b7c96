"""Every list of the API pages the same way (market.web.api.pagination): ``?cursor=&limit=`` in,
``{"items": [...], "next_cursor": ...}`` out, walked to its end without a row lost or repeated,
and a cursor or limit it did not hand out is a 422 naming it."""

from __future__ import annotations

import base64
import html
import json
import re

import pytest
from marshmallow import fields
from sqlalchemy import select

from billing.budgets import lines as budgets
from billing.models import Order
from billing.orders import new_order
from market.accounts import services as accounts
from market.accounts.authz import SCOPES, Principal
from market.accounts.models import Invitation
from market.core import audit
from market.core.audit import AuditEntry
from market.web.api import api
from market.web.api.docs import _openapi_path
from market.web.api.pagination import PageQuerySchema, PageSchema
from market.core.keyset import MAX_LIMIT
from tests.factories import make_key, make_org

# GET operations whose answer carries lists inside one document rather than being a list:
# each is bounded by what it describes, or is paged by a contract of its own.
DOCUMENTS = {
    "holdings": "what the organization holds now: its entitlements and token wallets",
    "get_supply_chain": "one dataset's supply chain with its revisions",
    "get_budget_report": "one row per line, supplier, sector, dataset or month of one budget",
    "get_records": "the metered records: paged by `cursor` and `max_tokens`, charged per page",
    "get_usage": "the usage report: one row per day, dataset or key of the asked period",
    "list_upload_parts": "one upload with its parts: at most 10,000, S3's own limit",
}


def _orders(session, org, count, **fields):
    for _ in range(count):
        new_order(session, organization_id=org.id, kind="mall", currency="CNY",
                  payment_method="bank_transfer", **fields)
    session.flush()


@pytest.fixture()
def buyer(session):
    org = make_org(session, "buyer")
    _key, secret = make_key(session, org)
    session.commit()
    return {"org": org, "headers": {"Authorization": f"Bearer {secret}"}}


def _walk(client, path, headers, **query):
    pages, cursor = [], None
    while True:
        response = client.get(path, headers=headers,
                              query_string={**query, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert set(body) >= {"items", "next_cursor"}
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


@pytest.mark.parametrize("limit, sizes", [(None, [50, 50, 50, 50, 30]), (200, [200, 30]),
                                          (23, [23] * 10)])
def test_orders_beyond_100_are_all_listed_once_newest_first(client, session, buyer, limit,
                                                             sizes):
    _orders(session, buyer["org"], 230)
    _orders(session, buyer["org"], 3, status="scheduled")  # a renewal not due: not an order yet
    _orders(session, make_org(session, "buyer"), 5)  # another organization's
    session.commit()
    query = {"limit": limit} if limit else {}
    pages = _walk(client, "/api/v1/orders", buyer["headers"], **query)
    assert [len(page) for page in pages] == sizes
    seen = [order["id"] for page in pages for order in page]
    expected = session.scalars(select(Order.id).where(
        Order.organization_id == buyer["org"].id, Order.status != "scheduled")
        .order_by(Order.id.desc())).all()
    assert seen == expected and len(set(seen)) == 230


def test_orders_placed_while_walking_neither_repeat_nor_shift_a_page(client, session, buyer):
    _orders(session, buyer["org"], 120)
    session.commit()
    first = client.get("/api/v1/orders?limit=50", headers=buyer["headers"]).get_json()
    _orders(session, buyer["org"], 7)  # newer than every listed one
    session.commit()
    rest = _walk(client, "/api/v1/orders", buyer["headers"], limit=50,
                 cursor=first["next_cursor"])
    ids = [o["id"] for o in first["items"]] + [o["id"] for page in rest for o in page]
    assert len(ids) == len(set(ids)) == 120 and ids == sorted(ids, reverse=True)


def _encoded(payload) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _fingerprint(cursor: str) -> str:
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))[0]


def _refused(response, name="cursor"):
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert name in body["errors"] and body["code"] == "invalid_input"


TAMPERED = {
    "not base64 json": lambda fp: "not-a-cursor",
    "punctuation": lambda fp: "!!!!",
    "not ascii": lambda fp: "curs\u00f6r",
    "an object": lambda fp: _encoded({"o": 100}),
    "the catalogue's old offset": lambda fp: _encoded({"o": 10**30}),
    "an empty list": lambda fp: _encoded([]),
    "another list's": lambda fp: _encoded(["0123456789ab", [5]]),
    "a text for the id": lambda fp: _encoded([fp, ["12"]]),
    "a boolean for the id": lambda fp: _encoded([fp, [True]]),
    "beyond int4": lambda fp: _encoded([fp, [2**31]]),
    "beyond int8": lambda fp: _encoded([fp, [9223372036854775808]]),
    "a fraction": lambda fp: _encoded([fp, [1.5]]),
    "null for the id": lambda fp: _encoded([fp, [None]]),
    "one key too many": lambda fp: _encoded([fp, [1, 2]]),
    "NaN": lambda fp: base64.urlsafe_b64encode(f'["{fp}", [NaN]]'.encode()).decode(),
    "infinity": lambda fp: base64.urlsafe_b64encode(f'["{fp}", [1e999]]'.encode()).decode(),
    "deeply nested": lambda fp: base64.urlsafe_b64encode(b"[" * 700).decode(),
    "too long": lambda fp: "A" * 1001,
}


@pytest.mark.parametrize("forge", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_tampered_or_foreign_cursor_is_a_422_naming_it(client, session, buyer, forge):
    _orders(session, buyer["org"], 3)
    session.commit()
    cursor = client.get("/api/v1/orders?limit=1", headers=buyer["headers"]).get_json()[
        "next_cursor"]
    _refused(client.get("/api/v1/orders", headers=buyer["headers"],
                        query_string={"cursor": forge(_fingerprint(cursor))}))


def test_a_cursor_of_another_list_is_refused(client, session, buyer):
    for name in ("a", "b"):
        make_key(session, buyer["org"])
    _orders(session, buyer["org"], 3)
    session.commit()
    keys = client.get("/api/v1/keys?limit=1", headers=buyer["headers"]).get_json()
    _refused(client.get("/api/v1/orders", headers=buyer["headers"],
                        query_string={"cursor": keys["next_cursor"]}))


@pytest.mark.parametrize("text", ["CN\u0000", "\ud800", "x" * 1001, 7])
def test_a_text_key_no_column_holds_is_refused(client, session, buyer, text):
    """Budgets are listed by fiscal year, currency and id: the currency is a text key."""
    org = buyer["org"]
    owner = Principal(organization_id=org.id, member_role="owner", scopes=frozenset(SCOPES),
                      org_roles=frozenset(org.role_names))
    for year in (2026, 2027):
        budgets.create_budget(session, owner, fiscal_year=year, currency="CNY", name=str(year))
    session.commit()
    first = client.get("/api/v1/budgets?limit=1", headers=buyer["headers"]).get_json()
    assert [b["fiscal_year"] for b in first["items"]] == [2027]
    fingerprint = _fingerprint(first["next_cursor"])
    last = client.get("/api/v1/budgets", headers=buyer["headers"], query_string={
        "cursor": first["next_cursor"]}).get_json()
    assert [b["fiscal_year"] for b in last["items"]] == [2026] and last["next_cursor"] is None
    _refused(client.get("/api/v1/budgets", headers=buyer["headers"], query_string={
        "cursor": _encoded([fingerprint, [2027, text, first["items"][0]["id"]]])}))


@pytest.mark.parametrize("limit", ["0", "-1", str(MAX_LIMIT + 1), "ten", "1.5", "2147483648"])
def test_a_limit_outside_1_to_200_is_a_422_naming_it(client, buyer, limit):
    _refused(client.get(f"/api/v1/orders?limit={limit}", headers=buyer["headers"]), "limit")


@pytest.mark.parametrize("limit", [1, MAX_LIMIT])
def test_the_limit_bounds_themselves_are_accepted(client, buyer, limit):
    assert client.get(f"/api/v1/orders?limit={limit}", headers=buyer["headers"]).status_code == 200


def test_an_empty_cursor_is_the_first_page(client, session, buyer):
    _orders(session, buyer["org"], 2)
    session.commit()
    page = client.get("/api/v1/orders?cursor=", headers=buyer["headers"]).get_json()
    assert len(page["items"]) == 2 and page["next_cursor"] is None


# Every list operation, from the API's own table ------------------------------------------------

def _carries_a_list(schema_class) -> bool:
    """Whether a response holds a list of objects at its top (scalar lists, like a key's
    scopes, are attributes)."""
    for field in schema_class().fields.values():
        if isinstance(field, fields.Nested) and field.many:
            return True
        if isinstance(field, fields.List) and isinstance(
                field.inner, (fields.Nested, fields.Dict, fields.Raw)):
            return True
    return False


def _is_one_thing(op) -> bool:
    """``/orders/<int:order_id>``: one thing's document, whose parts it lists."""
    return op.rule.endswith(">")


LIST_OPERATIONS = [op for op in api.operations if op.method == "GET" and (
    op.many or (op.response is not None and _carries_a_list(op.response)
                and not _is_one_thing(op) and op.endpoint not in DOCUMENTS))]


def test_the_api_has_the_lists_it_is_known_for():
    names = {op.endpoint for op in LIST_OPERATIONS}
    assert {"list_orders", "finance_invoices", "finance_pending_receipts", "payment_anomalies",
            "list_budgets", "budget_line_records", "get_budget_records", "search_datasets",
            "own_datasets", "list_versions", "list_offers", "review_queue", "list_demands",
            "list_credit_lines", "list_credit_line_changes", "list_statements",
            "list_subscriptions", "list_members", "list_invitations", "list_keys",
            "audit_log"} <= names
    assert set(DOCUMENTS) <= {op.endpoint for op in api.operations}


@pytest.mark.parametrize("op", LIST_OPERATIONS, ids=lambda op: op.endpoint)
def test_every_list_pages_by_cursor_in_the_one_envelope(client, op):
    assert not op.many, "a GET list answers a page, never a bare array"
    assert op.query is not None and issubclass(op.query, PageQuerySchema)
    assert issubclass(op.response, PageSchema)
    items = op.response().fields["items"]
    assert isinstance(items, fields.List) and isinstance(items.inner, fields.Nested)

    document = client.get("/api/v1/openapi.json").get_json()
    path, _ = _openapi_path(api.url_prefix + op.rule)
    operation = document["paths"][path]["get"]
    parameters = {p["name"]: p for p in operation["parameters"] if p.get("in") == "query"}
    assert parameters["cursor"]["schema"]["type"] == "string"
    assert parameters["limit"]["schema"] == {"type": "integer", "default": 50, "minimum": 1,
                                             "maximum": MAX_LIMIT}
    assert "422" in operation["responses"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    envelope = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert envelope["properties"]["items"]["type"] == "array"
    assert envelope["properties"]["next_cursor"] == {
        "type": "string", "nullable": True,
        "description": envelope["properties"]["next_cursor"]["description"]}
    assert "items" in envelope["required"]


def test_no_get_operation_answers_a_bare_array():
    assert [op.endpoint for op in api.operations if op.method == "GET" and op.many] == []


def test_the_storefronts_orders_page_links_to_the_older_orders(session, sign_in_as):
    org = make_org(session, "buyer")
    _orders(session, org, 60)
    person = sign_in_as(org, "owner")
    numbers = session.scalars(select(Order.number).where(Order.organization_id == org.id)
                              .order_by(Order.id.desc())).all()
    first = person.get("/orders").get_data(as_text=True)
    assert all(n in first for n in numbers[:50]) and not any(n in first for n in numbers[50:])
    older = re.search(r'href="([^"]*cursor=[^"]+)" rel="next"', first)
    second = person.get(html.unescape(older.group(1))).get_data(as_text=True)
    assert all(n in second for n in numbers[50:]) and not any(n in second for n in numbers[:50])
    assert 'rel="next"' not in second


def test_the_storefronts_orders_page_walks_to_every_order_beyond_100(session, sign_in_as):
    org = make_org(session, "buyer")
    _orders(session, org, 130)
    _orders(session, make_org(session, "buyer"), 5)  # another organization's
    person = sign_in_as(org, "owner")
    numbers = session.scalars(select(Order.number).where(Order.organization_id == org.id)
                              .order_by(Order.id.desc())).all()
    listed_number = re.compile(r"\b(?:" + "|".join(map(re.escape, numbers)) + r")\b")
    seen, address = [], "/orders"
    while address:
        page = person.get(address).get_data(as_text=True)
        found = listed_number.findall(page)
        seen += list(dict.fromkeys(found))  # a number may stand twice in its row
        older = re.search(r'href="([^"]*cursor=[^"]+)" rel="next"', page)
        address = html.unescape(older.group(1)) if older else None
    assert seen == numbers and len(numbers) == 130


def _walk_pages(person, address, pattern):
    """Every match of ``pattern`` over a storefront page and the pages its Older links reach."""
    seen = []
    while address:
        page = person.get(address).get_data(as_text=True)
        seen += list(dict.fromkeys(pattern.findall(page)))
        older = re.search(r'href="([^"]*cursor=[^"]+)" rel="next"', page)
        address = html.unescape(older.group(1)) if older else None
    return seen


def test_the_audit_log_page_walks_every_entry_beyond_200_newest_first(session, sign_in_as):
    org = make_org(session, "buyer")
    for n in range(230):
        audit.record(session, "test.entry", organization_id=org.id, data={"n": n})
    session.commit()
    person = sign_in_as(org, "owner")
    seqs = session.scalars(select(AuditEntry.seq).where(AuditEntry.organization_id == org.id)
                           .order_by(AuditEntry.seq.desc())).all()
    listed = _walk_pages(person, "/account/audit", re.compile(r"<tr><td>(\d+)</td>"))
    assert [int(s) for s in listed] == seqs and len(seqs) >= 230


def test_the_account_page_walks_every_open_invitation_beyond_200(session, sign_in_as):
    org = make_org(session, "buyer")
    person = sign_in_as(org, "owner")
    owner = Principal(organization_id=org.id, user_id=person.user.id, member_role="owner",
                      org_roles=frozenset({"buyer"}))
    for n in range(215):
        accounts.invite_member(session, owner, org, email=f"person{n}@example.com",
                               role="member")
    session.commit()
    listed = _walk_pages(person, "/account", re.compile(r'id="invitation-(\d+)"'))
    ids = session.scalars(select(Invitation.id).where(Invitation.organization_id == org.id)
                          .order_by(Invitation.id.desc())).all()
    assert [int(i) for i in listed] == ids and len(ids) == 215
