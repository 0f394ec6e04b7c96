"""API: the principal, its organization and members, API keys, and the audit log."""

from __future__ import annotations

from flask import current_app, g, url_for
from sqlalchemy import select, text

from market.accounts import services as accounts
from market.accounts.authz import Principal, get_owned
from market.accounts.models import ApiKey, Organization, User
from market.accounts.services import KeyLimits
from market.api.blueprint import api
from market.api.endpoint import Created
from market.api.schemas import (
    ApiKeyCreatedSchema, ApiKeyCreateSchema, ApiKeyListSchema, ApiKeySchema, ApiKeyUpdateSchema,
    AccountSchema, AuditPageSchema, AuditQuerySchema, HealthSchema, RegistrationSchema, MemberAddSchema, MemberSchema, MeSchema,
    OrganizationSchema, TaxStatusSchema,
)
from market.audit import AuditEntry
from market.web import db_session, passwords

ACCOUNT = ["Account"]
KEYS = ["API keys"]


@api.operation("/health", "GET", summary="Liveness and database check", permission=None,
               response=HealthSchema, tags=["Service"])
def health():
    """Answers 200 when the application can reach its database."""
    db_session().execute(text("SELECT 1"))
    return {"status": "ok", "database": "ok"}


@api.operation("/accounts", "POST", summary="Register a person and their organization",
               permission=None, body=RegistrationSchema, response=AccountSchema, status=201,
               tags=ACCOUNT, errors=(409, 422))
def register(body: dict):
    """The person becomes the owner of the new organization, then signs in on the storefront
    and creates API keys. Exchanges and the platform are set up by the operator."""
    return accounts.register(
        db_session(), passwords(), email=body["email"], password=body["password"],
        name=body["name"], organization_name=body["organization_name"], roles=body["roles"],
        currency=current_app.config["DEFAULT_CURRENCY"])


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


@api.operation("/organizations/<int:organization_id>/members", "GET",
               summary="Members of an organization", permission="org:read",
               response=MemberSchema, many=True, tags=ACCOUNT, errors=(404,))
def list_members(principal: Principal, organization_id: int):
    return get_owned(db_session(), Organization, organization_id, principal).memberships


@api.operation("/organizations/<int:organization_id>/members", "POST",
               summary="Add a registered person as a member", permission="members:manage",
               body=MemberAddSchema, response=MemberSchema, status=201, tags=ACCOUNT,
               errors=(404, 409, 422))
def add_member(principal: Principal, organization_id: int, body: dict):
    """Owners only. The person must already be registered."""
    session = db_session()
    org = get_owned(session, Organization, organization_id, principal)
    return accounts.add_member(session, principal, org, email=body["email"], role=body["role"])


@api.operation("/keys", "GET", summary="The organization's API keys", permission="keys:read",
               response=ApiKeyListSchema, tags=KEYS)
def list_keys(principal: Principal):
    """Prefix, scopes, limits, created and last used; never the secret."""
    keys = db_session().scalars(select(ApiKey).where(
        ApiKey.organization_id == principal.organization_id).order_by(ApiKey.id)).all()
    return {"items": keys}


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
               permission="audit:read", query=AuditQuerySchema, response=AuditPageSchema,
               tags=["Audit"])
def audit_log(principal: Principal, query: dict):
    """Entries in order, paged by ``after`` (a seq); each carries its chain hash."""
    stmt = (select(AuditEntry).where(AuditEntry.organization_id == principal.organization_id,
                                     AuditEntry.seq > query["after"])
            .order_by(AuditEntry.seq).limit(query["limit"] + 1))
    if query["action"]:
        stmt = stmt.where(AuditEntry.action == query["action"])
    entries = db_session().scalars(stmt).all()
    page = entries[:query["limit"]]
    return {"items": page, "next_cursor": page[-1].seq if len(entries) > len(page) else None}
