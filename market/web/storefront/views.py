"""Storefront pages: home, registration and sign-in, the organization, API keys, audit log."""

from __future__ import annotations

import re
from functools import wraps
from typing import Callable
from urllib.parse import unquote, urlsplit

from flask import (
    abort, current_app, flash, redirect, render_template, request, session, url_for,
)
from flask_babel import gettext as _
from sqlalchemy import select

from market.accounts import services as accounts
from market.accounts.authz import SCOPES, Principal, authorize, get_owned
from market.accounts.models import ApiKey, Invitation, Organization
from market.accounts.services import KeyLimits
from market.core import audit
from market.core.errors import Conflict, Forbidden, InvalidInput
from market.core.keyset import PageRequest
from market.web.storefront.blueprint import storefront
from market.web.storefront.common import form_error
from market.web.storefront.forms import (
    ActionForm, ApiKeyForm, InviteForm, LoginForm, PasswordChangeForm, RegisterForm,
)
from market.web.http import (
    current_session_id, db_session, mail_registration, passwords, session_principal, sign_in,
    sign_out, signed_in_user,
)


def signed_in(permission: str | None = "org:read") -> Callable:
    """Pages for people only: sign-in first, then the permission (403 without it)."""
    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(**kwargs):
            principal = session_principal()
            if principal is None:
                return redirect(url_for("storefront.login", next=request.full_path))
            if permission is not None:
                authorize(principal, permission)
            return view(principal, **kwargs)
        return wrapper
    return decorator


@storefront.app_context_processor
def _layout_context():
    user = signed_in_user()
    org = None
    principal = session_principal() if user else None
    if principal is not None:
        org = db_session().get(Organization, principal.organization_id)
    # The layout's form only carries a CSRF token; it never reads the request's body, which an
    # error page (a 413 for a body over the limit) must not touch either.
    return {"current_user": user, "current_org": org, "current_principal": principal,
            "action_form": ActionForm(formdata=None)}


@storefront.get("/")
def index():
    return render_template("storefront/index.html")


@storefront.post("/locale/<code>")
def set_locale(code: str):
    if code not in ("zh_CN", "en"):
        abort(404)
    session["locale"] = code
    return redirect(_safe_next(request.form.get("next")) or url_for("storefront.index"))


@storefront.route("/register", methods=["GET", "POST"])
def register():
    """The same answer for every address that passes the form's checks: check your inbox. The
    account is made when the link mailed to the address is opened (``confirm_registration``)."""
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            requested = accounts.request_registration(
                db_session(), passwords(), email=form.email.data, password=form.password.data,
                name=form.name.data, organization_name=form.organization_name.data,
                roles=form.roles.data, currency=current_app.config["DEFAULT_CURRENCY"])
        except InvalidInput as exc:
            form_error(form, exc)
        else:
            mail_registration(requested)
            return render_template("storefront/register_sent.html", email=requested.email)
    return render_template("storefront/register.html", form=form), 422 if form.errors else 200


@storefront.route("/register/confirm/<token>", methods=["GET", "POST"])
def confirm_registration(token: str):
    """Opening the link shows a button; only the POST creates the account (mail scanners
    open links too) and signs its person in."""
    pending = accounts.pending_registration(db_session(), token)
    if request.method == "POST":
        if not ActionForm().validate_on_submit():
            abort(400)
        try:
            user = accounts.complete_registration(db_session(), token)
        except Conflict:
            flash(_("This e-mail already has an account: sign in."), "error")
            return redirect(url_for("storefront.login"))
        sign_in(user)
        flash(_("Welcome! Your organization is ready."), "success")
        return redirect(url_for("storefront.account"))
    return render_template("storefront/register_confirm.html", pending=pending)


@storefront.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        throttle = current_app.extensions["market.login_throttle"]
        email, remote = form.email.data, request.remote_addr or "unknown"
        wait = throttle.wait_seconds(email, remote)
        if wait:
            form.email.errors.append(_("Too many failed sign-ins. Try again later."))
            response = render_template("storefront/login.html", form=form)
            return response, 429, {"Retry-After": str(wait)}
        user = accounts.authenticate(db_session(), passwords(), email=email,
                                     password=form.password.data)
        if user is not None:
            throttle.succeeded(email, remote)
            sign_in(user)
            return redirect(_safe_next(request.args.get("next")) or url_for("storefront.account"))
        throttle.failed(email, remote)
        form.password.errors.append(_("Wrong e-mail or password."))
        status = 401
    elif form.errors:
        status = 422
    return render_template("storefront/login.html", form=form), status


@storefront.post("/logout")
def logout():
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    sign_out()
    return redirect(url_for("storefront.index"))


@storefront.route("/account", methods=["GET", "POST"])
@signed_in()
def account(principal: Principal):
    """The organization and its members; its owners invite people (a POST) and see who is
    invited."""
    session_ = db_session()
    org = get_owned(session_, Organization, principal.organization_id, principal)
    manage = principal.can("members:manage")
    form = InviteForm() if manage else None
    invited_link = None
    status = 200
    if request.method == "POST":
        authorize(principal, "members:manage")
        if form.validate_on_submit():
            invitation, secret = accounts.invite_member(session_, principal, org,
                                                        email=form.email.data,
                                                        role=form.role.data)
            invited_link = {"email": invitation.email,
                            "url": url_for("storefront.invitation", token=secret,
                                           _external=True)}
            form = InviteForm(formdata=None)
        elif form.errors:
            status = 422
    invitations = accounts.open_invitations(session_, org.id).page(
        PageRequest(cursor=request.args.get("cursor"))) if manage else None
    return render_template("storefront/account.html", org=org, form=form,
                           invitations=invitations,
                           invited_link=invited_link), status


@storefront.post("/account/invitations/<int:invitation_id>/revoke")
@signed_in("members:manage")
def revoke_invitation(principal: Principal, invitation_id: int):
    if not ActionForm().validate_on_submit():
        abort(400)
    session_ = db_session()
    invitation = get_owned(session_, Invitation, invitation_id, principal)
    accounts.revoke_invitation(session_, principal, invitation)
    flash(_("Invitation of %(email)s withdrawn.", email=invitation.email), "success")
    return redirect(url_for("storefront.account"))


@storefront.route("/invitations/<token>", methods=["GET", "POST"])
@signed_in("invitations:accept")
def invitation(principal: Principal, token: str):
    """The invitee, signed in, sees who invites them as what, and accepts (or ignores it)."""
    session_ = db_session()
    invited = accounts.pending_invitation(session_, token)
    if request.method == "POST":
        if not ActionForm().validate_on_submit():
            abort(400)
        membership = accounts.accept_invitation(session_, signed_in_user(), token)
        session["org_id"] = membership.organization_id
        flash(_("You joined %(name)s.", name=invited.organization.name), "success")
        return redirect(url_for("storefront.account"))
    return render_template("storefront/invitation.html", invitation=invited)


@storefront.route("/account/password", methods=["GET", "POST"])
@signed_in(None)
def change_password(principal: Principal):
    """A new password ends every other session of the person; this one stays signed in."""
    form = PasswordChangeForm()
    if form.validate_on_submit():
        try:
            accounts.change_password(
                db_session(), passwords(), signed_in_user(),
                current_password=form.current_password.data,
                new_password=form.new_password.data, current_session_id=current_session_id())
        except InvalidInput as exc:
            form_error(form, exc)
        else:
            flash(_("Password changed. You were signed out everywhere else."), "success")
            return redirect(url_for("storefront.account"))
    return render_template("storefront/password.html", form=form), 422 if form.errors else 200


@storefront.route("/account/keys", methods=["GET", "POST"])
@signed_in("keys:read")
def api_keys(principal: Principal):
    form = ApiKeyForm()
    created = None
    status = 200
    if request.method == "POST":
        authorize(principal, "keys:manage")
        if form.validate_on_submit():
            try:
                key, secret = accounts.create_api_key(
                    db_session(), principal, name=form.name.data, scopes=form.scopes.data,
                    limits=KeyLimits(form.requests_per_minute.data, form.tokens_per_minute.data,
                                     form.monthly_token_cap.data),
                    mode=current_app.config["API_KEY_MODE"])
            except (InvalidInput, Forbidden) as exc:
                form_error(form, exc)
            else:
                created = {"key": key, "secret": secret}
                form = ApiKeyForm(formdata=None)
        if form.errors:
            status = 422
    keys = db_session().scalars(select(ApiKey).where(
        ApiKey.organization_id == principal.organization_id).order_by(ApiKey.id.desc())).all()
    return render_template("storefront/keys.html", form=form, keys=keys, created=created,
                           scopes=SCOPES), status


@storefront.post("/account/keys/<int:key_id>/revoke")
@signed_in("keys:manage")
def revoke_api_key(principal: Principal, key_id: int):
    if not ActionForm().validate_on_submit():
        abort(400)
    session_ = db_session()
    key = get_owned(session_, ApiKey, key_id, principal)
    accounts.revoke_api_key(session_, principal, key)
    flash(_("Key %(prefix)s revoked.", prefix=key.prefix), "success")
    return redirect(url_for("storefront.api_keys"))


@storefront.get("/account/audit")
@signed_in("audit:read")
def audit_log(principal: Principal):
    entries = audit.organization_entries(db_session(), principal.organization_id,
                                         newest_first=True).page(
        PageRequest(cursor=request.args.get("cursor")))
    return render_template("storefront/audit.html", entries=entries)


def _safe_next(target: str | None) -> str | None:
    r"""Only a same-origin relative path: a sign-in link must not bounce the user to another site.

    Browsers drop tabs and line breaks anywhere in a URL and read a backslash as a slash, so
    ``/<tab>/evil.example`` and ``/\evil.example`` are ``//evil.example``, another site. A target
    is therefore refused unless it starts with a single ``/`` followed by neither ``/`` nor
    ``\``, and carries no whitespace, control character or backslash; the same holds again for
    its percent-decoded form (which a later redirect or a proxy may decode), except that an
    encoded space in a query string is harmless there.
    """
    if not target or len(target) > _MAX_NEXT_LENGTH or _UNSAFE_RAW.search(target):
        return None
    decoded = target
    for _pass in range(_DECODING_PASSES):  # nested encodings (%2509) unwrap one level per pass
        decoded, previous = unquote(decoded), decoded
        if decoded == previous:
            return target if _is_relative_path(target) else None
        if _UNSAFE_DECODED.search(decoded) or not _is_relative_path(decoded):
            return None
    return None  # still encoded after that many passes: no page of ours links like that


_MAX_NEXT_LENGTH = 2000
_DECODING_PASSES = 3
_UNSAFE_RAW = re.compile(r"[\x00-\x20\x7f\\]|\s")
_UNSAFE_DECODED = re.compile(r"[\x00-\x1f\x7f\\]|[^\S ]")


def _is_relative_path(target: str) -> bool:
    if not target.startswith("/") or target[1:2] in ("/", "\\"):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc
