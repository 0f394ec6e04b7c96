"""How every ``/api/v1`` endpoint is declared, so that each one is handled the same way.

``@api.operation(...)`` registers the route and records what the OpenAPI document needs. At call
time it, in this order: resolves the principal (401), checks the permission (403), requires JSON
for a body (415), parses it (400), checks it against the input boundary and loads it with the
use case's schema (422, see ``market.web.boundary``), replays a stored
Idempotency-Key response, calls the view with plain arguments, and dumps its result with the
response schema. Views never see the request object.
"""

from __future__ import annotations

import datetime as dt
import json as jsonlib
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Callable

from flask import Blueprint, Response, current_app, g, json, request
from flask_wtf.csrf import validate_csrf
from marshmallow import Schema
from werkzeug.exceptions import BadRequest, UnsupportedMediaType
from wtforms.validators import ValidationError as CSRFInvalid

from market.accounts.authz import authorize
from market.web import boundary, idempotency
from market.core.errors import Forbidden, InvalidInput
from market.web.http import bearer_principal, db_session, session_principal

BODY_METHODS = {"POST", "PUT", "PATCH"}


@dataclass
class Operation:
    rule: str
    method: str
    endpoint: str
    summary: str
    permission: str | None  # None: public
    body: type[Schema] | None = None
    query: type[Schema] | None = None
    response: type[Schema] | None = None
    status: int = 200
    many: bool = False
    tags: list[str] = field(default_factory=list)
    description: str = ""
    errors: tuple[int, ...] = ()
    raw_response: str | None = None  # a media type the view returns itself
    # Other successful answers the view may give, by status: what each is.
    answers: dict[int, str] = field(default_factory=dict)
    # Media types of a streamed upload: the view gets ``stream`` and ``content_type`` instead
    # of a parsed body, and the body may be as large as the setting ``upload_limit`` says.
    upload: tuple[str, ...] = ()
    upload_limit: str = "IMPORT_MAX_BYTES"
    # A metered data call: charged in tokens, with the token and rate-limit headers, and its
    # Idempotency-Key answered by its usage event (``billing.metering.charge``), not stored here.
    metered: bool = False
    # A body member whose items a schema judges one by one (each gets its own outcome): the input
    # boundary leaves their text to it (``market.web.boundary.check_body``).
    items_judged_alone: str | None = None


@dataclass
class Created:
    """A view's result for 201 responses that also carry a Location."""

    body: Any
    location: str


class ApiBlueprint(Blueprint):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.operations: list[Operation] = []

    def operation(self, rule: str, method: str, *, summary: str, permission: str | None,
                  body: type[Schema] | None = None, query: type[Schema] | None = None,
                  response: type[Schema] | None = None, status: int = 200, many: bool = False,
                  tags: list[str] | None = None, errors: tuple[int, ...] = (),
                  raw_response: str | None = None, answers: dict[int, str] | None = None,
                  upload: tuple[str, ...] = (),
                  upload_limit: str = "IMPORT_MAX_BYTES", metered: bool = False,
                  items_judged_alone: str | None = None) -> Callable:
        def decorator(view: Callable) -> Callable:
            for schema in (body, query):
                if schema is not None:
                    boundary.bound_schema(schema)
            op = Operation(rule=rule, method=method, endpoint=view.__name__, summary=summary,
                           permission=permission, body=body, query=query, response=response,
                           status=status, many=many, tags=tags or [],
                           description=(view.__doc__ or "").strip(), errors=errors,
                           raw_response=raw_response, answers=answers or {}, upload=upload,
                           upload_limit=upload_limit, metered=metered,
                           items_judged_alone=items_judged_alone)
            self.operations.append(op)

            @wraps(view)
            def handle(**path_args: Any) -> Response:
                return _run(op, view, path_args)

            self.add_url_rule(rule, view.__name__, handle, methods=[method])
            return view

        return decorator


def _run(op: Operation, view: Callable, path_args: dict[str, Any]) -> Response:
    principal = None
    if op.permission is not None:
        principal = bearer_principal()
        if principal is None:
            principal = session_principal()
            if principal is not None and op.method in BODY_METHODS | {"DELETE"}:
                _require_csrf_header()
        authorize(principal, op.permission)
        g.principal = principal

    kwargs: dict[str, Any] = dict(path_args)
    if op.query is not None:
        kwargs["query"] = op.query().load(request.args.to_dict())
    if op.upload:
        if request.mimetype not in op.upload:
            error = UnsupportedMediaType(f"Send the file as one of: {', '.join(op.upload)}.")
            error.problem_errors = {"Content-Type": [
                f"Expected {' or '.join(op.upload)}, got {request.content_type or 'nothing'}."]}
            raise error
        request.max_content_length = current_app.config[op.upload_limit]
        kwargs.update(stream=request.stream, content_type=request.mimetype,
                      content_length=request.content_length)
    elif op.method in BODY_METHODS:
        payload = _json_body(required=op.body is not None,
                             items_judged_alone=op.items_judged_alone)
        if op.body is not None:
            kwargs["body"] = op.body().load(payload)

    replay_key = None
    if op.method == "POST" and principal is not None and not op.metered \
            and "Idempotency-Key" in request.headers:
        replay_key = _idempotency_context(op, principal)
        stored = idempotency.find(db_session(), **replay_key)
        if stored is not None:
            response = Response(stored.body, status=stored.status, mimetype=stored.content_type)
            response.headers.update(idempotency.replayed_headers(stored))
            response.headers["Idempotent-Replayed"] = "true"
            return response

    result = view(principal, **kwargs) if op.permission is not None else view(**kwargs)
    response = _render(op, result)

    if replay_key is not None and response.status_code < 400:
        ttl = dt.timedelta(hours=current_app.config["IDEMPOTENCY_TTL_HOURS"])
        # Stored at the commit: a request racing with the same key then gets 409 (market.web.http).
        idempotency.store(db_session(), **replay_key, status=response.status_code,
                          content_type=response.mimetype, body=response.get_data(as_text=True),
                          headers=dict(response.headers), ttl=ttl)
    return response


def _render(op: Operation, result: Any) -> Response:
    if isinstance(result, Response):
        return result
    location = None
    if isinstance(result, Created):
        location, result = result.location, result.body
    data = op.response().dump(result, many=op.many) if op.response is not None else result
    response = Response(json.dumps(data), status=op.status, mimetype="application/json")
    if location:
        response.headers["Location"] = location
    return response


def _require_csrf_header() -> None:
    """A browser session writing through the API must prove it came from our own pages."""
    try:
        validate_csrf(request.headers.get("X-CSRFToken", ""))
    except CSRFInvalid as exc:
        raise Forbidden(f"CSRF check failed: {exc}", field="X-CSRFToken") from None


def _json_body(*, required: bool, items_judged_alone: str | None = None) -> Any:
    raw = request.get_data(cache=True)
    if not raw.strip() and not required:
        return {}
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        error = UnsupportedMediaType("Send the body as application/json.")
        error.problem_errors = {"Content-Type": [f"Expected application/json, got "
                                                 f"{request.content_type or 'nothing'}."]}
        raise error
    try:
        return boundary.check_body(jsonlib.loads(raw.decode("utf-8")), items_judged_alone)
    except (UnicodeDecodeError, ValueError) as exc:
        error = BadRequest("The body is not valid JSON.")
        error.problem_errors = {"_body": [str(exc)]}
        raise error from None
    except RecursionError:  # arrays or objects nested thousands deep
        raise InvalidInput(f"Arrays and objects may nest at most "
                           f"{current_app.config['JSON_MAX_DEPTH']} levels deep.",
                           field="_body") from None


def _idempotency_context(op: Operation, principal) -> dict[str, Any]:
    who = f"key:{principal.api_key_id}" if principal.is_key else f"user:{principal.user_id}"
    return {
        "organization_id": principal.organization_id,
        "principal": who,
        "key": idempotency.check_key(request.headers["Idempotency-Key"]),
        "request_hash": idempotency.request_fingerprint(
            request.method, request.path, request.query_string, _body_fingerprint(op)),
    }



def _body_fingerprint(op: Operation) -> bytes:
    # A streamed upload is never read into memory just to hash it: its fingerprint is its type
    # and length (documented on the API page).
    if op.upload:
        return f"{request.mimetype}:{request.content_length}".encode()
    return request.get_data(cache=True)
