"""The client is checked against the app's OpenAPI document, so the two cannot drift apart.

Each row of ``market_client.ENDPOINTS`` (one per client method) must name a documented
operation and send exactly its documented query parameters or body members (a parameter the
server adds, renames or drops fails here); list methods must meet the cursor envelope, metered
and POST calls the documented ``Idempotency-Key`` header, and the metered page's parser may read
only documented members. And the package stands alone: it imports the standard library and
``requests``, nothing of the marketplace.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys
from pathlib import Path

import pytest

import market_client
from market_client import ENDPOINTS, API_PREFIX, MarketClient, RecordPage, Usage

# Public methods built on the others, or on no operation in particular.
GENERIC_METHODS = {"request", "paginate", "close", "iter_record_pages"}


@pytest.fixture(scope="module")
def document(app) -> dict:
    response = app.test_client().get(f"{API_PREFIX}/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def _operation(document: dict, name: str) -> dict:
    endpoint = ENDPOINTS[name]
    path = document["paths"].get(API_PREFIX + endpoint.path)
    assert path is not None, f"{name}: {endpoint.path} is not in the OpenAPI document"
    operation = path.get(endpoint.method.lower())
    assert operation is not None, f"{name}: {endpoint.method} {endpoint.path} is not documented"
    return operation


def _resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _parameters(document: dict, operation: dict, where: str) -> dict[str, dict]:
    given = [document["components"]["parameters"][p["$ref"].rsplit("/", 1)[-1]]
             if "$ref" in p else p for p in operation.get("parameters", [])]
    return {p["name"]: p for p in given if p["in"] == where}


def _body_schema(document: dict, operation: dict) -> dict:
    content = operation.get("requestBody", {}).get("content", {})
    return _resolve(document, content["application/json"]["schema"]) if content else {}


def _success_schema(document: dict, operation: dict) -> dict:
    ok = next(answer for status, answer in operation["responses"].items()
              if status.startswith("2"))
    return _resolve(document, ok["content"]["application/json"]["schema"])


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_each_method_sends_exactly_the_documented_parameters(document, name):
    endpoint, operation = ENDPOINTS[name], _operation(document, name)
    query = _parameters(document, operation, "query")
    assert set(endpoint.query) == set(query), f"{name}: query parameters differ"
    body = _body_schema(document, operation)
    assert set(endpoint.body) == set(body.get("properties", {})), f"{name}: body differs"
    required = {n for n, p in query.items() if p.get("required")} | set(body.get("required", []))
    # Whatever the document requires, the method always sends: a parameter of the same name
    # that the caller must give, or whose default is a value.
    signature = inspect.signature(getattr(MarketClient, name))
    always = {p.name for p in signature.parameters.values() if p.default is not None}
    assert required <= always, f"{name}: may omit {required - always}"


@pytest.mark.parametrize("name", sorted(n for n, e in ENDPOINTS.items() if e.paginated))
def test_list_methods_meet_the_cursor_envelope(document, name):
    operation = _operation(document, name)
    assert {"cursor", "limit"} <= set(_parameters(document, operation, "query"))
    schema = _success_schema(document, operation)
    assert {"items", "next_cursor"} <= set(schema.get("properties", {})), name


@pytest.mark.parametrize("name", sorted(n for n, e in ENDPOINTS.items()
                                        if e.metered or e.method == "POST"))
def test_calls_sent_with_an_idempotency_key_document_the_header(document, name):
    headers = {n.lower() for n in _parameters(document, _operation(document, name), "header")}
    assert "idempotency-key" in headers, name


@pytest.mark.parametrize("name", ["records", "search"])
def test_a_record_page_reads_only_documented_members(document, name):
    page = _success_schema(document, _operation(document, name))
    assert set(RecordPage.BODY_FIELDS) <= set(page["properties"])
    usage = _resolve(document, page["properties"]["usage"])
    assert {f.name for f in dataclasses.fields(Usage)} <= set(usage["properties"])


def test_every_public_method_is_checked_here():
    public = {name for name, _ in inspect.getmembers(MarketClient, inspect.isfunction)
              if not name.startswith("_")}
    assert public - GENERIC_METHODS == set(ENDPOINTS)


def test_the_package_imports_nothing_of_the_marketplace():
    allowed = set(sys.stdlib_module_names) | {"requests", "market_client"}
    for source in Path(market_client.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{source.name} imports {roots - allowed}"
