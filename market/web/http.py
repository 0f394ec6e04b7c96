"""HTTP glue shared by the API and the storefront.

- one database session per request, committed once when the response is ready (or rolled back
  when the response is an error), so a view never commits and nothing is half-written;
- who is asking (a person's session or an API key);
- errors as ``application/problem+json`` under ``/api`` and as pages elsewhere, from one handler,
  each with a stable ``code`` and the request's id;
- a request id on every response (``x-request-id``: the client's own when well formed) and in
  every log line of the request;
- security headers on every response.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from flask import (
    Flask, Response, current_app, g, json, render_template, request, session, url_for,
)
from flask.logging import default_handler
from marshmallow import ValidationError
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from billing.context import BillingSettings
from billing.payments.gateway import CardGateway
from market.accounts import services as accounts
from market.accounts.authz import Principal
from market.accounts.mail import Mail, Mailer
from market.accounts.models import User
from market.accounts.passwords import Passwords
from market.core.db import Base, breaks_unique
from market.core.errors import IdempotencyKeyInUse, MarketError, TooManyRequests, Unauthorized
from pricing.errors import PricingError

PROBLEM_MIMETYPE = "application/problem+json"
PROBLEM_DOCS = "/api/v1/docs#problems"

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "img-src 'self' data:",
    "style-src 'self'",
    "script-src 'self' 'wasm-unsafe-eval'",  # the upload page's SHA-256 runs as WebAssembly
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])


# The unit of work ------------------------------------------------------------------------------

def db_session() -> Session:
    """The request's session; opened on first use."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["market.db"].session()
    return g.db_session


def gateway() -> CardGateway | None:
    """The app's card gateway; None when card payments are off (bank transfer only)."""
    return current_app.extensions["market.gateway"]


def billing_settings() -> BillingSettings:
    """The billing settings the app was built with."""
    return current_app.extensions["market.billing"]


def end_request_transaction() -> None:
    """Commit what the request has written so far (a key's last use), before a service that runs
    its own units of work around a call to the payment gateway: no transaction of ours may
    stay open across that call, and on SQLite an open one would hold the write lock."""
    session: Session | None = g.get("db_session")
    if session is not None:
        session.commit()
        session.expire_all()  # what those units change, the request then reads afresh


def passwords() -> Passwords:
    return current_app.extensions["market.passwords"]


def _finish_unit_of_work(response: Response) -> Response:
    session: Session | None = g.pop("db_session", None)
    if session is None:
        return response
    try:
        if response.status_code < 400:
            session.commit()
        else:
            session.rollback()
    except IntegrityError as exc:
        session.rollback()
        return _conflict_response(exc)
    except DataError as exc:
        session.rollback()
        return _handle_data_error(exc)
    except OperationalError:
        session.rollback()
        current_app.logger.exception("commit failed")
        return error_response(503, "Service unavailable", "The database is busy; retry.",
                              headers={"Retry-After": "1"})
    finally:
        session.close()
    return response


def _close_session(_exc: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.rollback()
        session.close()


# Who is asking ----------------------------------------------------------------------------------

def signed_in_user() -> User | None:
    """The person of the request's session: its cookie names a server-side session that must
    still be open (sign-out and a password change end it there, whatever the cookie says)."""
    if "signed_in_user" not in g:
        secret = session.get("sid")
        record = accounts.open_session(db_session(), secret) \
            if isinstance(secret, str) and secret else None
        g.user_session = record
        g.signed_in_user = record.user if record is not None else None
    return g.signed_in_user


def current_session_id() -> int | None:
    """The id of the request's server-side session, if it is signed in."""
    signed_in_user()
    record = g.get("user_session")
    return record.id if record is not None else None


def session_principal() -> Principal | None:
    user = signed_in_user()
    if user is None:
        return None
    return accounts.principal_for_user(user, session.get("org_id"))


def bearer_principal() -> Principal | None:
    """The principal of the request's API key; 401 when a key is sent but is not valid."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthorized("Send the API key as 'Authorization: Bearer <key>'.",
                           field="Authorization")
    key = accounts.authenticate_api_key(db_session(), credentials.strip())
    if key is None:
        raise Unauthorized("The API key is unknown, expired or revoked.", field="Authorization")
    g.api_key = key
    return accounts.principal_for_key(key)


def viewer_organization_ids() -> frozenset[int]:
    """The organizations whose member is asking, on a public page or endpoint: an API key's
    organization, or every organization of the signed-in person; none for the anonymous."""
    principal = bearer_principal()
    if principal is not None:
        return frozenset({principal.organization_id})
    user = signed_in_user()
    if user is None:
        return frozenset()
    return frozenset(m.organization_id for m in user.memberships)


def sign_in(user: User, organization_id: int | None = None) -> None:
    """Open a server-side session for the person and put only its secret in the cookie."""
    session.clear()  # a fresh session on sign-in: nothing from before carries over
    session.permanent = True
    session["sid"] = accounts.start_session(
        db_session(), user, lifetime=current_app.permanent_session_lifetime)
    membership = next((m for m in user.memberships
                       if organization_id is None or m.organization_id == organization_id), None)
    session["org_id"] = membership.organization_id if membership else None
    g.pop("signed_in_user", None)


def sign_out() -> None:
    """End the session on the server too: a copy of the cookie signs no one in afterwards."""
    secret = session.get("sid")
    if isinstance(secret, str) and secret:
        accounts.end_session(db_session(), secret)
    session.clear()
    g.pop("signed_in_user", None)


def mail_registration(request_: accounts.RegistrationRequest) -> None:
    """Mail what a registration leads to: a new address gets the link that creates its
    account; an address with an account gets a note instead (the same answer to the form)."""
    mailer: Mailer = current_app.extensions["market.mailer"]
    if request_.secret is not None:
        link = url_for("storefront.confirm_registration", token=request_.secret, _external=True)
        mailer.send(Mail(request_.email, "Confirm your registration / 确认注册", (
            f"Open this link within 24 hours to create your account:\n{link}\n\n"
            f"请在 24 小时内打开此链接完成注册：\n{link}\n\n"
            "If you did not register, ignore this message. / 如非本人操作，请忽略本邮件。\n")))
    else:
        login = url_for("storefront.login", _external=True)
        mailer.send(Mail(request_.email, "You already have an account / 您已有账户", (
            f"Someone tried to register with this address, which already has an account. "
            f"Sign in here:\n{login}\n\n"
            f"有人尝试用此邮箱注册，但该邮箱已有账户。请在此登录：\n{login}\n\n"
            "If it was not you, nothing changed. / 如非本人操作，您的账户没有任何变化。\n")))


# Errors -----------------------------------------------------------------------------------------

# The ``code`` of a problem whose raiser names no more precise cause.
STATUS_CODES = {
    400: "malformed_request", 401: "unauthenticated", 402: "payment_required", 403: "forbidden",
    404: "not_found", 405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
    413: "payload_too_large", 414: "uri_too_long", 415: "unsupported_media_type",
    422: "invalid_input", 429: "rate_limited", 431: "headers_too_large",
    500: "internal_error", 502: "processor_unavailable", 503: "service_unavailable",
}

# The blueprint of the storefront's JSON routes (``market.web.storefront.file_routes``), whose
# callers are the pages' scripts: they read refusals as the API's clients do.
STOREFRONT_JSON = "storefront_json"


def wants_problem_json() -> bool:
    # Webhooks are machines too; and an error page would read a body they have consumed.
    return request.path.startswith(("/api/", "/webhooks/")) \
        or request.blueprint == STOREFRONT_JSON


def problem(status: int, title: str, detail: str | None = None,
            errors: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
            type_: str | None = None, code: str | None = None,
            extensions: dict[str, Any] | None = None) -> Response:
    code = code or STATUS_CODES.get(status, "error")
    body: dict[str, Any] = {"type": type_ or f"{PROBLEM_DOCS}-{code}", "title": title,
                            "status": status, "code": code}
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    body.update(extensions or {})
    body["request_id"] = request_id()
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_response(status: int, title: str, detail: str | None = None,
                   errors: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None, type_: str | None = None,
                   code: str | None = None, extensions: dict[str, Any] | None = None
                   ) -> Response:
    if wants_problem_json():
        return problem(status, title, detail, errors, headers, type_, code, extensions)
    html = render_template("errors.html", status=status, title=title, detail=detail,
                           errors=errors, request_id=request_id())
    response = Response(html, status=status, mimetype="text/html")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _handle_market_error(exc: MarketError) -> Response:
    headers = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="market", error="invalid_token"' \
            if "Authorization" in request.headers else 'Bearer realm="market"'
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    headers.update(getattr(exc, "headers", None) or {})  # e.g. the rate-limit headers
    return error_response(exc.status, exc.title, exc.detail, exc.errors, headers,
                          code=exc.code, extensions=exc.extensions)


def _handle_validation_error(exc: ValidationError) -> Response:
    messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    return error_response(422, "Invalid input", "One or more fields are invalid.", messages)


def _handle_pricing_error(exc: PricingError) -> Response:
    field = getattr(exc, "field", None) or "_schema"
    return error_response(422, "Invalid input", str(exc), {field: [str(exc)]})


def _handle_integrity_error(exc: IntegrityError) -> Response:
    # A check passed, then a concurrent request wrote the same unique thing first.
    current_app.logger.info("integrity conflict: %s", exc.orig)
    return _conflict_response(exc)


def _conflict_response(exc: IntegrityError) -> Response:
    # another request stored its answer under the same Idempotency-Key first
    # (``market.web.idempotency``'s table, a sibling this module does not import)
    if breaks_unique(exc, Base.metadata.tables["idempotency_records"], "organization_id",
                     "principal", "key"):
        return _handle_market_error(IdempotencyKeyInUse())
    return error_response(409, "Conflict",
                          "The change conflicts with one made at the same time; retry.")


def _handle_data_error(exc: DataError) -> Response:
    # A value the database refuses (out of its column's range or length) that passed the input
    # boundary: still the client's value, so a 422 and never a 500; logged, because the boundary
    # should have named its field.
    current_app.logger.warning("the database refused a value: %s", exc.orig)
    detail = "A value is outside what the marketplace stores (too large or too long)."
    return error_response(422, "Invalid input", detail, {"_schema": [detail]})


def _handle_http_exception(exc: HTTPException) -> Response:
    headers = {}
    if exc.code == 405 and exc.valid_methods:
        headers["Allow"] = ", ".join(exc.valid_methods)
    errors = getattr(exc, "problem_errors", None)
    return error_response(exc.code or 500, exc.name, exc.description, errors, headers,
                          code=getattr(exc, "problem_code", None))


def _handle_unexpected(exc: Exception) -> Response:
    current_app.logger.exception("unhandled error")
    return error_response(500, "Internal server error", "Something went wrong on our side.")


# Request ids ------------------------------------------------------------------------------------

REQUEST_ID_HEADER = "X-Request-Id"
# A client's own id is kept when it is this plain (what OpenAI's and Stripe's clients send);
# anything else is replaced, so a log line never carries an attacker's text.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def request_id() -> str | None:
    """The id of the request being answered (None outside a request)."""
    if not request:
        return None
    if "request_id" not in g:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = offered if _CLIENT_REQUEST_ID.fullmatch(offered) \
            else f"req_{uuid.uuid4().hex}"
    return g.request_id


def _tag_request_id(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = request_id() or ""
    return response


class RequestIdFilter(logging.Filter):
    """Puts ``request_id`` on every log record ("-" outside a request), for the log format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id() or "-"
        return True


# Security headers -------------------------------------------------------------------------------

def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if session.get("sid") or request.headers.get("Authorization"):
        headers.setdefault("Cache-Control", "no-store")
    return response


def init_app(app: Flask) -> None:
    # after_request functions run in reverse order: the unit of work finishes first, so the
    # headers also land on the 409 it may return.
    app.after_request(_security_headers)
    app.after_request(_tag_request_id)
    app.after_request(_finish_unit_of_work)
    app.logger.addFilter(RequestIdFilter())
    default_handler.addFilter(RequestIdFilter())  # records of child loggers reach it too
    default_handler.setFormatter(logging.Formatter(
        "[%(asctime)s] %(levelname)s request_id=%(request_id)s %(module)s: %(message)s"))
    app.teardown_request(_close_session)
    app.register_error_handler(MarketError, _handle_market_error)
    app.register_error_handler(ValidationError, _handle_validation_error)
    app.register_error_handler(PricingError, _handle_pricing_error)
    app.register_error_handler(IntegrityError, _handle_integrity_error)
    app.register_error_handler(DataError, _handle_data_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)
