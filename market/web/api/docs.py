"""The OpenAPI 3 document, generated from the declared operations and their schemas, and a
human-readable page rendered from the same document."""

from __future__ import annotations

import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Response, current_app, render_template

from market.accounts.authz import PERMISSIONS, SCOPES
from market.web.api.blueprint import api
from market.web.api.endpoint import BODY_METHODS, ApiBlueprint
from market.web.api.schemas import ProblemSchema

_CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")
_ERROR_TITLES = {
    400: "Malformed request", 401: "Missing or invalid credentials", 403: "Missing permission",
    404: "Not found (or another organization's)", 409: "Conflict", 413: "Body too large",
    414: "Request line too long", 415: "Body is not JSON", 422: "Invalid input",
    416: "Range not satisfiable", 429: "Too many requests", 431: "Request headers too large",
    402: "Nothing pays for it, or a cap would be passed", 502: "The payment processor did not answer",
    503: "The database is busy; retry after Retry-After seconds",
}

_HEADERS = {
    "X-Request-Id": ("The request's id: the client's own `X-Request-Id` when it is 1 to 128 of "
                     "A-Z a-z 0-9 . _ : - (starting with a letter or digit), else one made here. "
                     "Also in every problem body as `request_id`.", "string"),
    "Retry-After": ("Seconds to wait before retrying.", "integer"),
    "Location": ("The created resource.", "string"),
    "Idempotent-Replayed": ("`true` when this is the stored answer to an earlier request with "
                            "the same Idempotency-Key.", "string"),
    "X-Tokens-Charged": ("Tokens this call was charged (0 when refused or replayed).", "integer"),
    "X-Tokens-Remaining": ("Tokens this key can still spend on the dataset: the least of its "
                           "monthly cap, the prepaid balance and the budget line.", "integer"),
    "x-ratelimit-limit-requests": ("Requests this key may make a minute.", "integer"),
    "x-ratelimit-remaining-requests": ("Requests left in this minute.", "integer"),
    "x-ratelimit-reset-requests": ("When the request window resets, e.g. `12s`.", "string"),
    "x-ratelimit-limit-tokens": ("Tokens this key may be served a minute.", "integer"),
    "x-ratelimit-remaining-tokens": ("Tokens left in this minute.", "integer"),
    "x-ratelimit-reset-tokens": ("When the token window resets, e.g. `12s`.", "string"),
}
_METERED_HEADERS = ("X-Tokens-Charged", "X-Tokens-Remaining", "x-ratelimit-limit-requests",
                    "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                    "x-ratelimit-reset-tokens")
# Answers any request may get, whatever its operation: the server's own limits (414, 431), a
# database too busy to commit (503), and, for a request that writes, a concurrent change to
# the same thing (409).
_ANY_REQUEST = {414, 431, 503}
_ANY_WRITE = {409}


def _headers(*names: str) -> dict:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in ("X-Request-Id",) + names}


def _problem_response(code: int, *header_names: str) -> dict:
    return {"description": _ERROR_TITLES[code], "headers": _headers(*header_names),
            "content": {"application/problem+json": {"schema": {"$ref":
                                                                "#/components/schemas/Problem"}}}}


def build_spec(blueprint: ApiBlueprint, version: str = "1.0.0") -> dict:
    spec = APISpec(
        title="Data marketplace API", version=version, openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Datasets for AI: catalogue, orders, metered data in LLM tokens, "
                             "settlement and budgets. Errors are application/problem+json "
                             "with a stable `code`; every answer has an `X-Request-Id`."},
        servers=[{"url": "/"}],
    )
    spec.components.schema("Problem", schema=ProblemSchema)
    spec.components.security_scheme("apiKey", {
        "type": "http", "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer dmk_live_...`"})
    spec.components.security_scheme("session", {
        "type": "apiKey", "in": "cookie", "name": "market_session",
        "description": "A signed-in person's session; writes also need the X-CSRFToken header."})
    for name, (description, kind) in _HEADERS.items():
        spec.components.header(name, {"description": description, "schema": {"type": kind}})
    spec.components.parameter("IdempotencyKey", "header", {
        "name": "Idempotency-Key", "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": "Makes a retry safe: the first successful answer to a key is stored "
                       "and replayed (with `Idempotent-Replayed: true`) to the same request; "
                       "the same key with another request is 422, and while the first is still "
                       "running, 409 `idempotency_key_in_use` with Retry-After."})
    spec.components.parameter("RequestId", "header", {
        "name": "X-Request-Id", "required": False,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"},
        "description": "Your own id for this request, echoed in `X-Request-Id` and the logs."})

    paths: dict[str, dict] = {}
    for op in blueprint.operations:
        path, parameters = _openapi_path(blueprint.url_prefix + op.rule)
        parameters.append("RequestId")
        operation: dict = {"operationId": op.endpoint, "summary": op.summary, "tags": op.tags,
                           "parameters": parameters, "responses": {}}
        if op.description:
            operation["description"] = op.description
        if op.query is not None:
            operation["parameters"].append({"in": "query", "schema": op.query})
        metered = op.metered  # a metered call says where its tokens and limits stand
        replayable = (op.method == "POST" and op.permission is not None) or metered
        if replayable:
            operation["parameters"].append("IdempotencyKey")
        if op.upload:
            operation["requestBody"] = {"required": True, "content": {
                kind: {"schema": {"type": "string", "format": "binary"}} for kind in op.upload}}
        elif op.method in BODY_METHODS and op.body is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": op.body}}}
        ok: dict = {"description": "Success", "headers": _headers(
            *(_METERED_HEADERS if metered else ()),
            *(("Location",) if op.status == 201 else ()),
            *(("Idempotent-Replayed",) if replayable else ()))}
        if op.response is not None:
            schema = {"type": "array", "items": op.response} if op.many else op.response
            ok["content"] = {"application/json": {"schema": schema}}
        elif op.raw_response:
            ok["content"] = {op.raw_response: {"schema": {
                "type": "object" if op.raw_response == "application/json" else "string"}}}
        operation["responses"][str(op.status)] = ok
        for status, description in op.answers.items():
            operation["responses"][str(status)] = {**ok, "description": description}
        errors = set(op.errors) | _ANY_REQUEST
        if parameters[:-1]:  # ids in the path: an id no one holds, or one past its column
            errors |= {404, 422}
        if op.permission is not None:
            rule = PERMISSIONS[op.permission]
            operation["security"] = [{"apiKey": []}, {"session": []}]
            operation["x-permission"] = {
                "name": op.permission, "member_roles": sorted(rule.roles),
                "key_scope": rule.scope}
            errors |= {401, 403}
        if op.method in BODY_METHODS | {"DELETE"}:
            errors |= _ANY_WRITE
        if op.method in BODY_METHODS:
            errors |= {400, 413, 415, 422}
        if op.query is not None:
            errors.add(422)
        for code in sorted(errors):
            headers: tuple[str, ...] = ()
            if code in (409, 429, 503):
                headers += ("Retry-After",)
            if metered and code in (402, 429):
                headers += _METERED_HEADERS
            operation["responses"][str(code)] = _problem_response(code, *headers)
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
