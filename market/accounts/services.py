"""Account services: registration, sign-in with throttling, memberships, API keys.

They take a session and never commit; the caller's unit of work does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from typing import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from market import audit
from market.accounts.authz import SCOPES, Principal
from market.accounts.models import (
    TAXPAYER_STATUSES, ApiKey, LoginAttempt, MemberRole, Membership, Organization,
    OrganizationRole, OrgRole, User,
)
from market.accounts.passwords import Passwords, check_strength
from market.db import utcnow
from market.errors import Conflict, Forbidden, InvalidInput, NotFound, TooManyRequests

KEY_PREFIXES = {"live": "dmk_live_", "test": "dmk_test_"}
_PREFIX_RANDOM_CHARS = 8  # shown in lists; enough to tell keys apart at a glance
_SECRET_CHARS = 43  # base62: about 256 bits
_ALPHABET = string.ascii_letters + string.digits
_SLUG_STRIP = re.compile(r"[^a-z0-9]+")


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _slugify(name: str) -> str:
    slug = _SLUG_STRIP.sub("-", name.lower()).strip("-")[:48]
    return slug or "org"


def _unique_slug(session: Session, name: str) -> str:
    base = _slugify(name)
    slug, n = base, 1
    while session.scalar(select(Organization.id).where(Organization.slug == slug)) is not None:
        n += 1
        slug = f"{base}-{n}"
    return slug


def create_organization(session: Session, *, name: str, roles: Iterable[str],
                        currency: str = "CNY", registration_number: str | None = None,
                        slug: str | None = None) -> Organization:
    roles = sorted(set(roles))
    unknown = [r for r in roles if r not in {x.value for x in OrgRole}]
    if not roles or unknown:
        raise InvalidInput("Choose at least one known organization role.", field="roles")
    org = Organization(
        name=name.strip(), slug=slug or _unique_slug(session, name),
        default_currency=currency, registration_number=registration_number,
        roles=[OrganizationRole(role=r) for r in roles],
    )
    session.add(org)
    return org


def register(session: Session, passwords: Passwords, *, email: str, password: str, name: str,
             organization_name: str, roles: Iterable[str], currency: str = "CNY") -> User:
    """Create a person and their organization, with the person as its owner.

    An e-mail can register once; the password must pass ``check_strength``.
    """
    email = normalize_email(email)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict("This e-mail is already registered.", field="email")
    check_strength(password, email=email)
    org = create_organization(session, name=organization_name, roles=roles, currency=currency)
    user = User(email=email, name=name.strip(), password_hash=passwords.hash(password))
    user.memberships.append(Membership(organization=org, role=MemberRole.OWNER.value))
    session.add(user)
    # Flushed so the audit entry can name the new ids.
    session.flush()
    audit.record(session, "account.registered", actor=audit.Actor(user_id=user.id),
                 organization_id=org.id, object_type="user", object_id=user.id,
                 data={"organization": org.slug, "roles": org.role_names})
    return user


@dataclass(frozen=True)
class LoginPolicy:
    max_failures: int = 5
    max_failures_per_ip: int = 30
    window_seconds: int = 900


def authenticate(session: Session, passwords: Passwords, *, email: str, password: str,
                 remote_addr: str, policy: LoginPolicy) -> User | None:
    """Check a password, refusing with 429 once an e-mail or an address failed too often.

    Returns None on a wrong e-mail or password (the caller records the failure); the same
    answer for both, so sign-in never tells which e-mails exist.
    """
    email = normalize_email(email)
    since = utcnow() - dt.timedelta(seconds=policy.window_seconds)
    by_email = session.scalar(select(func.count()).select_from(LoginAttempt).where(
        LoginAttempt.email == email, LoginAttempt.attempted_at >= since))
    by_addr = session.scalar(select(func.count()).select_from(LoginAttempt).where(
        LoginAttempt.remote_addr == remote_addr, LoginAttempt.attempted_at >= since))
    if by_email >= policy.max_failures or by_addr >= policy.max_failures_per_ip:
        raise TooManyRequests("Too many failed sign-ins. Try again later.",
                              retry_after=policy.window_seconds, field="email")
    user = session.scalar(select(User).where(User.email == email))
    if user is None:
        passwords.hash(password)  # spend the same time as a real check
        return None
    if not user.is_active or not passwords.verify(user.password_hash, password):
        return None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash(password)
    user.last_login_at = utcnow()
    return user


def record_failed_login(session: Session, *, email: str, remote_addr: str) -> None:
    session.add(LoginAttempt(email=normalize_email(email), remote_addr=remote_addr[:64]))


def principal_for_user(user: User, organization_id: int | None = None) -> Principal | None:
    """The principal of a signed-in person, for the chosen organization or their first one."""
    for membership in user.memberships:
        if organization_id is None or membership.organization_id == organization_id:
            return Principal(organization_id=membership.organization_id, user_id=user.id,
                             member_role=membership.role, scopes=frozenset(SCOPES),
                             org_roles=frozenset(membership.organization.role_names))
    return None


def add_member(session: Session, principal: Principal, organization: Organization, *,
               email: str, role: str) -> Membership:
    """Add an already registered person to the organization with a role."""
    if role not in {r.value for r in MemberRole}:
        raise InvalidInput("Unknown member role.", field="role")
    user = session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise InvalidInput("No one is registered with this e-mail.", field="email")
    if any(m.organization_id == organization.id for m in user.memberships):
        raise Conflict("This person is already a member.", field="email")
    membership = Membership(user=user, organization=organization, role=role)
    session.add(membership)
    session.flush()  # the audit entry names the membership
    audit.record(session, "member.added", actor=principal.actor, organization_id=organization.id,
                 object_type="membership", object_id=membership.id,
                 data={"user_id": user.id, "role": role})
    return membership


# Tax profile ------------------------------------------------------------------------------------

def set_tax_status(session: Session, principal: Principal, organization_id: int, *,
                   status: str, evidence: str) -> Organization:
    """Record an organization's verified VAT standing (general, small-scale or exempt).

    Rule: only the platform's finance people set it, each time with the evidence they checked
    (a certificate or registration number); checkout prices every order by it, so the change
    is audited with what it was before.
    """
    if "platform" not in principal.org_roles or principal.member_role not in ("owner", "finance"):
        raise Forbidden("Only the platform's finance staff verify tax status.")
    if status not in TAXPAYER_STATUSES:
        raise InvalidInput(f"The tax status is one of {', '.join(TAXPAYER_STATUSES)}.",
                           field="status")
    evidence = (evidence or "").strip()
    if not evidence:
        raise InvalidInput("Name the certificate or registration the status was verified "
                           "from.", field="evidence")
    organization = session.get(Organization, organization_id, with_for_update=True)
    if organization is None:
        raise NotFound("No such organization.", field="organization_id")
    before = organization.tax_status
    organization.tax_status = status
    organization.tax_status_evidence = evidence[:200]
    organization.tax_status_verified_at = utcnow()
    organization.tax_status_verified_by_id = principal.user_id
    audit.record(session, "organization.tax_status_set", actor=principal.actor,
                 organization_id=organization.id, object_type="organization",
                 object_id=organization.id,
                 data={"status": status, "status_before": before, "evidence": evidence[:200]})
    return organization


# API keys ---------------------------------------------------------------------------------------

def hash_key(secret: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyLimits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    monthly_token_cap: int | None = None


def create_api_key(session: Session, principal: Principal, *, name: str, scopes: Iterable[str],
                   limits: KeyLimits = KeyLimits(), mode: str = "live",
                   expires_at: dt.datetime | None = None) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never stored and never shown again.

    A key can grant only known scopes. A key creating a key (its parent) can neither outrank
    nor outlive it: no scope it does not hold, an expiry no later than its own (and always an
    expiry: a machine mints temporary credentials), and no limit looser than its own; revoking
    the parent revokes it too.
    """
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise InvalidInput(f"Unknown or missing scopes: {', '.join(unknown) or 'none given'}.",
                           field="scopes")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("The expiry must be in the future.", field="expires_at")
    parent = None
    if principal.is_key:
        parent = session.get(ApiKey, principal.api_key_id)
        _check_within_parent(parent, scopes=scopes, expires_at=expires_at, limits=limits)
    prefix = KEY_PREFIXES[mode] + _random_text(_PREFIX_RANDOM_CHARS)
    secret = f"{prefix}_{_random_text(_SECRET_CHARS)}"
    key = ApiKey(
        organization_id=principal.organization_id, created_by_id=principal.user_id,
        parent_key_id=parent.id if parent is not None else None, name=name.strip(),
        prefix=prefix, secret_hash=hash_key(secret), scopes=scopes,
        requests_per_minute=limits.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute,
        monthly_token_cap=limits.monthly_token_cap, expires_at=expires_at,
    )
    session.add(key)
    session.flush()  # the audit entry names the key
    audit.record(session, "api_key.created", actor=principal.actor,
                 organization_id=principal.organization_id, object_type="api_key",
                 object_id=key.id, data={"prefix": prefix, "scopes": scopes,
                                         "limits": _limits_dict(key)})
    return key, secret


def _check_within_parent(parent: ApiKey, *, scopes: list[str], expires_at: dt.datetime | None,
                         limits: KeyLimits) -> None:
    if not set(scopes) <= set(parent.scopes):
        raise Forbidden("A key cannot grant scopes it does not hold.", field="scopes")
    if expires_at is None:
        raise Forbidden("A key creating a key must give it an expiry.", field="expires_at")
    if parent.expires_at is not None and expires_at > parent.expires_at:
        raise Forbidden("A key cannot create a key that expires after itself.",
                        field="expires_at")
    for field_name in _LIMIT_FIELDS:
        _check_not_looser(field_name, getattr(parent, field_name), getattr(limits, field_name),
                          "A key cannot give a key a looser limit than its own.")


_LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "monthly_token_cap")


def _check_not_looser(field_name: str, bound: int | None, value: int | None,
                      message: str) -> None:
    """None is no limit at all: looser than any number."""
    if bound is not None and (value is None or value > bound):
        raise Forbidden(message, field=field_name)


def _random_text(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _limits_dict(key: ApiKey) -> dict[str, int | None]:
    return {"requests_per_minute": key.requests_per_minute,
            "tokens_per_minute": key.tokens_per_minute,
            "monthly_token_cap": key.monthly_token_cap}


def update_api_key(session: Session, principal: Principal, key: ApiKey, *,
                   name: str | None = None, limits: dict[str, int | None] | None = None) -> ApiKey:
    """Rename a key or change its limits; limit changes are audited.

    A person may set any limit; a key may only tighten one (lower it, or set one where there was
    none), never raise or remove it, on itself or on any other key.
    """
    if key.revoked_at is not None:
        raise Conflict("A revoked key cannot be changed.")
    if principal.is_key:
        for field_name, value in (limits or {}).items():
            _check_not_looser(field_name, getattr(key, field_name), value,
                              "A key can lower a limit but not raise or remove it.")
    if name is not None:
        key.name = name.strip()
    if limits:
        before = _limits_dict(key)
        for field_name, value in limits.items():
            setattr(key, field_name, value)
        audit.record(session, "api_key.limits_changed", actor=principal.actor,
                     organization_id=key.organization_id, object_type="api_key",
                     object_id=key.id, data={"before": before, "after": _limits_dict(key)})
    return key


def revoke_api_key(session: Session, principal: Principal, key: ApiKey) -> ApiKey:
    """Revoke a key at once, and every key it created (theirs too); revoking twice changes
    nothing."""
    pending = [key]
    while pending:
        current = pending.pop()
        if current.revoked_at is None:
            current.revoked_at = utcnow()
            audit.record(session, "api_key.revoked", actor=principal.actor,
                         organization_id=current.organization_id, object_type="api_key",
                         object_id=current.id, data={"prefix": current.prefix})
        pending.extend(session.scalars(select(ApiKey).where(
            ApiKey.parent_key_id == current.id, ApiKey.revoked_at.is_(None))))
    return key


_LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def authenticate_api_key(session: Session, presented: str) -> ApiKey | None:
    """The active key matching a presented secret, compared in constant time; else None."""
    typed = next((p for p in KEY_PREFIXES.values() if presented.startswith(p)), None)
    if typed is None:
        return None
    prefix = presented[:len(typed) + _PREFIX_RANDOM_CHARS]
    # The organization and its roles come with the key: every API call needs them.
    key = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix).options(
        joinedload(ApiKey.organization).joinedload(Organization.roles))).unique().first()
    if key is None or not hmac.compare_digest(key.secret_hash, hash_key(presented)):
        return None
    if not key.is_active:
        return None
    now = utcnow()
    # Written at most once a minute, so a busy key does not turn every read into a write.
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
        key.last_used_at = now
    return key


def principal_for_key(key: ApiKey) -> Principal:
    return Principal(organization_id=key.organization_id, api_key_id=key.id,
                     scopes=frozenset(key.scopes),
                     org_roles=frozenset(key.organization.role_names))


def get_user_by_email(session: Session, email: str) -> User:
    user = session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise NotFound("No such user.")
    return user
