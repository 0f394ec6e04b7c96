"""The OpenAPI 3 document, generated from the declared operations and their schemas, and a
human-readable page rendered from the same document."""

from __future__ import annotations

import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Response, current_app, render_template

from market.accounts.authz import PERMISSIONS, SCOPES
from market.api.blueprint import api
from market.api.endpoint import BODY_METHODS, ApiBlueprint
from market.api.schemas import ProblemSchema

_CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")
_ERROR_TITLES = {
    400: "Malformed request", 401: "Missing or invalid credentials", 403: "Missing permission",
    404: "Not found (or another organization's)", 409: "Conflict", 413: "Body too large",
    415: "Body is not JSON", 422: "Invalid input", 429: "Too many requests",
    402: "Nothing pays for it, or a cap would be passed", 502: "The payment processor did not answer",
}


def build_spec(blueprint: ApiBlueprint, version: str = "1.0.0") -> dict:
    spec = APISpec(
        title="Data marketplace API", version=version, openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Datasets for AI: catalogue, orders, metered data in LLM tokens, "
                             "settlement and budgets. Errors are application/problem+json."},
        servers=[{"url": "/"}],
    )
    spec.components.schema("Problem", schema=ProblemSchema)
    spec.components.security_scheme("apiKey", {
        "type": "http", "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer dmk_live_...`"})
    spec.components.security_scheme("session", {
        "type": "apiKey", "in": "cookie", "name": "market_session",
        "description": "A signed-in person's session; writes also need the X-CSRFToken header."})
    for name, code in _ERROR_TITLES.items():
        spec.components.response(str(name), {
            "description": code,
            "content": {"application/problem+json": {"schema": "Problem"}}})

    paths: dict[str, dict] = {}
    for op in blueprint.operations:
        path, parameters = _openapi_path(blueprint.url_prefix + op.rule)
        operation: dict = {"operationId": op.endpoint, "summary": op.summary, "tags": op.tags,
                           "parameters": parameters, "responses": {}}
        if op.description:
            operation["description"] = op.description
        if op.query is not None:
            operation["parameters"].append({"in": "query", "schema": op.query})
        if op.method in BODY_METHODS and op.body is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": op.body}}}
        ok: dict = {"description": "Success"}
        if op.response is not None:
            schema = {"type": "array", "items": op.response} if op.many else op.response
            ok["content"] = {"application/json": {"schema": schema}}
        elif op.raw_response:
            ok["content"] = {op.raw_response: {"schema": {"type": "object"}}}
        operation["responses"][str(op.status)] = ok
        errors = set(op.errors)
        if op.permission is not None:
            rule = PERMISSIONS[op.permission]
            operation["security"] = [{"apiKey": []}, {"session": []}]
            operation["x-permission"] = {
                "name": op.permission, "member_roles": sorted(rule.roles),
                "key_scope": rule.scope}
            errors |= {401, 403}
        if op.method in BODY_METHODS:
            errors |= {400, 413, 415, 422}
        if op.query is not None:
            errors.add(422)
        for code in sorted(errors):
            operation["responses"][str(code)] = {"$ref": f"#/components/responses/{code}"}
        paths.setdefault(path, {})[op.method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    document["x-scopes"] = SCOPES
    return document


def _openapi_path(rule: str) -> tuple[str, list[dict]]:
    parameters = []
    for converter, name in _CONVERTER.findall(rule):
        kind = {"int": "integer"}.get(converter, "string")
        parameters.append({"in": "path", "name": name, "required": True,
                           "schema": {"type": kind}})
    return _CONVERTER.sub(r"{\2}", rule), parameters


def _document() -> dict:
    cached = current_app.extensions.get("market.openapi")
    if cached is None:
        cached = current_app.extensions["market.openapi"] = build_spec(api)
    return cached


@api.operation("/openapi.json", "GET", summary="This API's OpenAPI 3 document", permission=None,
               tags=["Service"], raw_response="application/json")
def openapi_document():
    return _document()


@api.operation("/docs", "GET", summary="This API's documentation as a page", permission=None,
               tags=["Service"], raw_response="text/html")
def api_docs():
    return Response(render_template("api_docs.html", spec=_document(),
                                    problem_titles=_ERROR_TITLES), mimetype="text/html")
