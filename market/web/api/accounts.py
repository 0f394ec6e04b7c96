"""API: the principal, its organization and members, API keys, and the audit log."""

from __future__ import annotations

from flask import current_app, g, url_for
from sqlalchemy import select, text

from market.accounts import services as accounts
from market.accounts.authz import Principal, get_owned
from market.accounts.models import ApiKey, Invitation, Membership, Organization, User
from market.accounts.services import KeyLimits
from market.web.api.blueprint import api
from market.web.api.endpoint import Created
from market.web.api.pagination import PageQuerySchema, page_request, page_schema
from market.web.api.schemas import (
    ApiKeyCreatedSchema, ApiKeyCreateSchema, ApiKeySchema, ApiKeyUpdateSchema,
    AccountSchema, AuditEntrySchema, AuditQuerySchema, HealthSchema, InvitationAcceptSchema,
    InvitationCreatedSchema, InvitationCreateSchema, InvitationSchema, MemberSchema, MeSchema,
    OrganizationSchema, RegistrationConfirmSchema, RegistrationSchema, RegistrationSentSchema,
    TaxStatusSchema,
)
from market.core import audit
from market.core.keyset import Keyset, asc, desc
from market.web.http import db_session, mail_registration, passwords

ACCOUNT = ["Account"]
KEYS = ["API keys"]


@api.operation("/health", "GET", summary="Liveness and database check", permission=None,
               response=HealthSchema, tags=["Service"])
def health():
    """Answers 200 when the application can reach its database."""
    db_session().execute(text("SELECT 1"))
    return {"status": "ok", "database": "ok"}


@api.operation("/accounts", "POST", summary="Register a person and their organization",
               permission=None, body=RegistrationSchema, response=RegistrationSentSchema,
               status=202, tags=ACCOUNT, errors=(422,))
def register(body: dict):
    """Every address that passes the checks gets this same answer, so registering tells no one
    which e-mails have an account. A link is mailed to the address; opening it (or sending its
    token to ``POST /accounts/confirm``) creates the account, whose person becomes the owner of
    the new organization. An address that has an account is mailed a note instead. Exchanges
    and the platform are set up by the operator."""
    requested = accounts.request_registration(
        db_session(), passwords(), email=body["email"], password=body["password"],
        name=body["name"], organization_name=body["organization_name"], roles=body["roles"],
        currency=current_app.config["DEFAULT_CURRENCY"])
    mail_registration(requested)
    return {"email": requested.email, "status": "confirmation_sent"}


@api.operation("/accounts/confirm", "POST", summary="Confirm a registration",
               permission=None, body=RegistrationConfirmSchema, response=AccountSchema,
               status=201, tags=ACCOUNT, errors=(404, 409))
def confirm_registration(body: dict):
    """``token`` is the last part of the mailed link; it works once, within 24 hours."""
    return accounts.complete_registration(db_session(), body["token"])


@api.operation("/me", "GET", summary="Who is calling", permission="self:read",
               response=MeSchema, tags=ACCOUNT)
def me(principal: Principal):
    """The organization the caller acts for, and as whom (a person or an API key)."""
    session = db_session()
    user = session.get(User, principal.user_id) if principal.user_id else None
    key = g.get("api_key")
    return {
        "organization": session.get(Organization, principal.organization_id),
        "user_id": principal.user_id,
        "email": user.email if user else None,
        "member_role": principal.member_role,
        "api_key_prefix": key.prefix if key is not None else None,
        "scopes": sorted(principal.scopes),
    }


@api.operation("/organizations/<int:organization_id>", "GET", summary="An organization",
               permission="org:read", response=OrganizationSchema, tags=ACCOUNT, errors=(404,))
def get_organization(principal: Principal, organization_id: int):
    """Only the caller's own organization is visible; any other id answers 404."""
    return get_owned(db_session(), Organization, organization_id, principal)


@api.operation("/organizations/<int:organization_id>/tax-status", "PUT",
               summary="Set an organization's verified tax status (platform finance)",
               permission="tax_status:manage", body=TaxStatusSchema,
               response=OrganizationSchema, tags=ACCOUNT, errors=(404, 422))
def set_tax_status(principal: Principal, organization_id: int, body: dict):
    """general, small_scale or exempt, with the evidence checked; audited. Checkout prices
    every order of the organization by it and refuses a tax status sent with an order."""
    return accounts.set_tax_status(db_session(), principal, organization_id, **body)


def _organization_page(principal: Principal, organization_id: int, model, order, query: dict):
    """A page of an organization's rows of ``model`` (members, invitations), for one who may
    see the organization."""
    session = db_session()
    org = get_owned(session, Organization, organization_id, principal)
    return Keyset(session, select(model).where(model.organization_id == org.id),
                  [order]).page(page_request(query))


@api.operation("/organizations/<int:organization_id>/members", "GET",
               summary="Members of an organization", permission="org:read",
               query=PageQuerySchema, response=page_schema(MemberSchema), tags=ACCOUNT,
               errors=(404,))
def list_members(principal: Principal, organization_id: int, query: dict):
    """In the order they joined."""
    return _organization_page(principal, organization_id, Membership, asc(Membership.id), query)


@api.operation("/organizations/<int:organization_id>/invitations", "POST",
               summary="Invite an e-mail address to become a member",
               permission="members:manage", body=InvitationCreateSchema,
               response=InvitationCreatedSchema, status=201, tags=ACCOUNT,
               errors=(404, 422))
def invite_member(principal: Principal, organization_id: int, body: dict):
    """Owners only. The invitee joins only by accepting, signed in with the invited e-mail.
    The answer is the same whether anyone is registered with the address or not, and names
    no one."""
    session = db_session()
    org = get_owned(session, Organization, organization_id, principal)
    invitation, secret = accounts.invite_member(session, principal, org, email=body["email"],
                                                role=body["role"])
    return Created(_NewInvitation(invitation, secret),
                   url_for("api.list_invitations", organization_id=org.id))


class _NewInvitation:
    """An invitation as just created, with the link that this one response shows."""

    def __init__(self, invitation, secret: str) -> None:
        self._invitation = invitation
        self.accept_url = url_for("storefront.invitation", token=secret, _external=True)

    def __getattr__(self, name: str):
        return getattr(self._invitation, name)


@api.operation("/organizations/<int:organization_id>/invitations", "GET",
               summary="Invitations of an organization", permission="members:manage",
               query=PageQuerySchema, response=page_schema(InvitationSchema), tags=ACCOUNT,
               errors=(404,))
def list_invitations(principal: Principal, organization_id: int, query: dict):
    """Newest first."""
    return _organization_page(principal, organization_id, Invitation, desc(Invitation.id),
                              query)


@api.operation("/invitations/<int:invitation_id>/revoke", "POST",
               summary="Withdraw an invitation", permission="members:manage",
               response=InvitationSchema, tags=ACCOUNT, errors=(404, 409))
def revoke_invitation(principal: Principal, invitation_id: int):
    session = db_session()
    return accounts.revoke_invitation(session, principal,
                                      get_owned(session, Invitation, invitation_id, principal))


@api.operation("/invitations/accept", "POST", summary="Accept an invitation",
               permission="invitations:accept", body=InvitationAcceptSchema,
               response=MemberSchema, status=201, tags=ACCOUNT, errors=(403, 404, 409))
def accept_invitation(principal: Principal, body: dict):
    """People only, signed in with the invited e-mail; ``token`` is the last part of the
    invitation's link. An unknown, used, withdrawn or expired invitation answers 404."""
    session = db_session()
    return accounts.accept_invitation(session, session.get(User, principal.user_id),
                                      body["token"])


@api.operation("/keys", "GET", summary="The organization's API keys", permission="keys:read",
               query=PageQuerySchema, response=page_schema(ApiKeySchema), tags=KEYS)
def list_keys(principal: Principal, query: dict):
    """Prefix, scopes, limits, created and last used; never the secret. Oldest first."""
    return Keyset(db_session(), select(ApiKey).where(
        ApiKey.organization_id == principal.organization_id),
        [asc(ApiKey.id)]).page(page_request(query))


@api.operation("/keys", "POST", summary="Create an API key", permission="keys:manage",
               body=ApiKeyCreateSchema, response=ApiKeyCreatedSchema, status=201, tags=KEYS,
               errors=(422,))
def create_key(principal: Principal, body: dict):
    """The response carries the whole key in ``secret``, once; only its hash is stored."""
    key, secret = accounts.create_api_key(
        db_session(), principal, name=body["name"], scopes=body["scopes"],
        limits=KeyLimits(body["requests_per_minute"], body["tokens_per_minute"],
                         body["monthly_token_cap"]),
        mode=current_app.config["API_KEY_MODE"], expires_at=body["expires_at"])
    return Created(_NewKey(key, secret), url_for("api.get_key", key_id=key.id))


class _NewKey:
    """A key as just created, with the secret that this one response shows."""

    def __init__(self, key: ApiKey, secret: str) -> None:
        self._key, self.secret = key, secret

    def __getattr__(self, name: str):
        return getattr(self._key, name)


@api.operation("/keys/<int:key_id>", "GET", summary="One API key", permission="keys:read",
               response=ApiKeySchema, tags=KEYS, errors=(404,))
def get_key(principal: Principal, key_id: int):
    return get_owned(db_session(), ApiKey, key_id, principal)


@api.operation("/keys/<int:key_id>", "PATCH", summary="Rename a key or change its limits",
               permission="keys:manage", body=ApiKeyUpdateSchema, response=ApiKeySchema,
               tags=KEYS, errors=(404, 409, 422))
def update_key(principal: Principal, key_id: int, body: dict):
    session = db_session()
    key = get_owned(session, ApiKey, key_id, principal)
    name = body.pop("name", None)
    return accounts.update_api_key(session, principal, key, name=name, limits=body)


@api.operation("/keys/<int:key_id>/revoke", "POST", summary="Revoke an API key",
               permission="keys:manage", response=ApiKeySchema, tags=KEYS, errors=(404,))
def revoke_key(principal: Principal, key_id: int):
    """Takes effect at once; revoking a revoked key changes nothing."""
    session = db_session()
    return accounts.revoke_api_key(session, principal, get_owned(session, ApiKey, key_id,
                                                                 principal))


@api.operation("/audit-log", "GET", summary="The organization's audit log",
               permission="audit:read", query=AuditQuerySchema,
               response=page_schema(AuditEntrySchema), tags=["Audit"])
def audit_log(principal: Principal, query: dict):
    """Entries in the chain's order (by ``seq``); each carries its chain hash."""
    return audit.organization_entries(db_session(), principal.organization_id,
                                      action=query["action"] or None).page(page_request(query))
