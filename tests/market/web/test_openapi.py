"""The OpenAPI document is valid OpenAPI 3 and lists every endpoint; the docs page shows it."""

from __future__ import annotations

from openapi_spec_validator import validate

from market.web.api import api
from market.web.api.docs import _openapi_path


def test_openapi_document_is_valid_and_complete(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    validate(document)
    listed = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    declared = {(op.method, _openapi_path(api.url_prefix + op.rule)[0]) for op in api.operations}
    assert listed == declared
    served = {(method, rule.rule) for rule in client.application.url_map.iter_rules()
              if rule.rule.startswith("/api/v1") for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert {(m, _openapi_path(r)[0]) for m, r in served} == listed


def test_request_schemas_are_in_the_document(client):
    document = client.get("/api/v1/openapi.json").get_json()
    create = document["paths"]["/api/v1/keys"]["post"]
    schema_ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    properties = document["components"]["schemas"][schema_ref.split("/")[-1]]["properties"]
    assert {"name", "scopes", "monthly_token_cap"} <= set(properties)
    assert create["x-permission"]["key_scope"] == "keys:manage"


def test_docs_page_lists_every_path(client):
    page = client.get("/api/v1/docs").get_data(as_text=True)
    document = client.get("/api/v1/openapi.json").get_json()
    for path in document["paths"]:
        assert f"<code>{path}</code>" in page
