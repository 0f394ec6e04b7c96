"""The JSON routes the storefront's file pages call: the upload page's start, parts, resume,
complete and "make a version", and a file's proof document.

Each route calls the same ``market.catalog.files`` service function as the API's route of the
same name, loads and dumps the API's schemas, and answers the same problem+json refusals
(``market.web.http.wants_problem_json`` knows this blueprint). What differs is who may call:
a signed-in session only (an API key is refused here: it has the API), and every write carries
the page's CSRF token in ``X-CSRFToken`` (checked here; the blueprint is exempt from the form
check, which would answer an HTML 400 without naming the header)."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Response, current_app, request, url_for
from flask_wtf.csrf import validate_csrf
from marshmallow import Schema
from werkzeug.exceptions import BadRequest, UnsupportedMediaType
from wtforms.validators import ValidationError as CSRFInvalid

from market.accounts.authz import Principal, authorize
from market.catalog import files, services
from market.core.errors import Forbidden, Unauthorized
from market.core.objects import ObjectStore
from market.web import boundary
from market.web.api.files import complete_or_refuse
from market.web.api.files_schemas import (
    FileVersionCreateSchema, FileVersionSchema, PartSchema, ProofQuerySchema, ProofSchema,
    UploadPartsSchema, UploadSchema, UploadStartSchema,
)
from market.web.http import STOREFRONT_JSON, db_session, session_principal

storefront_json = Blueprint(STOREFRONT_JSON, __name__)

PART_TYPE = "application/octet-stream"


def _store() -> ObjectStore:
    return current_app.extensions["market.objects"]


def _require_csrf_header() -> None:
    try:
        validate_csrf(request.headers.get("X-CSRFToken", ""))
    except CSRFInvalid as exc:
        raise Forbidden(f"CSRF check failed: {exc}", field="X-CSRFToken") from None


def _json_object() -> Any:
    if request.mimetype != "application/json":
        error = UnsupportedMediaType("Send the body as application/json.")
        error.problem_errors = {"Content-Type": [
            f"Expected application/json, got {request.content_type or 'nothing'}."]}
        raise error
    try:
        return boundary.check_body(json.loads(request.get_data(cache=True).decode("utf-8")))
    except (UnicodeDecodeError, ValueError) as exc:
        error = BadRequest("The body is not valid JSON.")
        error.problem_errors = {"_body": [str(exc)]}
        raise error from None


def route(rule: str, method: str, *, permission: str | None = "catalog:write",
          body: type[Schema] | None = None, response: type[Schema], status: int = 200
          ) -> Callable:
    """A JSON route for a signed-in person (``permission`` None: anyone, signed in or not)."""
    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def handle(**path_args: Any) -> Response:
            principal = session_principal()
            if permission is not None:
                if principal is None:
                    raise Unauthorized("Sign in first.")
                authorize(principal, permission)
            if method != "GET":
                _require_csrf_header()
            kwargs: dict[str, Any] = dict(path_args)
            if body is not None:
                kwargs["body"] = body().load(_json_object())
            result = view(principal, **kwargs)
            headers = {}
            if isinstance(result, tuple):
                result, location = result
                headers["Location"] = location
            return Response(json.dumps(response().dump(result)), status=status,
                            mimetype="application/json", headers=headers)

        storefront_json.add_url_rule(rule, view.__name__, handle, methods=[method])
        return view
    return decorator


@route("/supplier/datasets/<int:dataset_id>/uploads", "POST", body=UploadStartSchema,
       response=UploadSchema, status=201)
def start_upload(principal: Principal, dataset_id: int, body: dict):
    session = db_session()
    dataset = services.get_dataset_for_owner(session, principal, dataset_id)
    upload = files.start_upload(session, principal, _store(), dataset, path=body["path"],
                                media_type=body["media_type"], size=body["size"],
                                sha256=body["sha256"], token_profile=body["token_profile"])
    return upload, url_for("storefront_json.list_upload_parts", upload_id=upload.id)


@route("/supplier/uploads/<int:upload_id>/parts", "GET", response=UploadPartsSchema)
def list_upload_parts(principal: Principal, upload_id: int):
    upload = files.get_upload(db_session(), principal, upload_id)
    return {"upload": upload, "parts": files.upload_parts(_store(), upload)}


@route("/supplier/uploads/<int:upload_id>/parts/<int:number>", "PUT", response=PartSchema)
def upload_part(principal: Principal, upload_id: int, number: int):
    if request.mimetype != PART_TYPE:
        error = UnsupportedMediaType(f"Send the part as {PART_TYPE}.")
        error.problem_errors = {"Content-Type": [
            f"Expected {PART_TYPE}, got {request.content_type or 'nothing'}."]}
        raise error
    request.max_content_length = current_app.config["UPLOAD_PART_MAX_BYTES"]
    upload = files.get_upload(db_session(), principal, upload_id)
    return files.upload_part(_store(), upload, number, request.stream)


@route("/supplier/uploads/<int:upload_id>/complete", "POST", response=UploadSchema)
def complete_upload(principal: Principal, upload_id: int):
    session = db_session()
    return complete_or_refuse(session, principal, _store(),
                              files.get_upload(session, principal, upload_id))


@route("/supplier/datasets/<int:dataset_id>/file-versions", "POST",
       body=FileVersionCreateSchema, response=FileVersionSchema, status=201)
def create_file_version(principal: Principal, dataset_id: int, body: dict):
    session = db_session()
    dataset = services.get_dataset_for_owner(session, principal, dataset_id)
    version = files.create_file_version(session, principal, dataset, body["upload_ids"],
                                        body["notes"])
    return version, url_for("storefront.file_version", version_id=version.id)


@route("/versions/<int:version_id>/files/proof", "GET", permission=None, response=ProofSchema)
def file_proof(principal: Principal | None, version_id: int):
    """The API's proof document, under the version page's visibility."""
    query = ProofQuerySchema().load(request.args.to_dict())
    session = db_session()
    version = files.get_visible_file_version(session, principal, version_id)
    return files.file_proof(session, version, query["path"]) | {
        "root": version.content_sha256}
