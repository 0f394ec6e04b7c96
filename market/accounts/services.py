"""Account services: registration, sign-in and server-side sessions, memberships, API keys.

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

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload

from market.core import audit
from market.accounts.authz import SCOPES, Principal, refuse_party
from market.accounts.models import (
    TAXPAYER_STATUSES, ApiKey, Invitation, MemberRole, Membership, Organization,
    OrganizationRole, OrgRole, PendingRegistration, User, UserSession,
)
from market.accounts.passwords import Passwords, check_strength
from market.core.db import utcnow
from market.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from market.core.keyset import Keyset, desc

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
    roles = _check_roles(roles)
    org = Organization(
        name=name.strip(), slug=slug or _unique_slug(session, name),
        default_currency=currency, registration_number=registration_number,
        roles=[OrganizationRole(role=r) for r in roles],
    )
    session.add(org)
    return org


def _check_roles(roles: Iterable[str]) -> list[str]:
    roles = sorted(set(roles))
    unknown = [r for r in roles if r not in {x.value for x in OrgRole}]
    if not roles or unknown:
        raise InvalidInput("Choose at least one known organization role.", field="roles")
    return roles


def register(session: Session, passwords: Passwords, *, email: str, password: str, name: str,
             organization_name: str, roles: Iterable[str], currency: str = "CNY") -> User:
    """Create a person and their organization at once, with the person as its owner (the
    operator's and the demo's way; people registering themselves confirm their e-mail first:
    ``request_registration``).

    An e-mail can register once; the password must pass ``check_strength``.
    """
    email = normalize_email(email)
    check_strength(password, email=email)
    return _create_account(session, email=email, password_hash=passwords.hash(password),
                           name=name, organization_name=organization_name, roles=roles,
                           currency=currency)


def _create_account(session: Session, *, email: str, password_hash: str, name: str,
                    organization_name: str, roles: Iterable[str], currency: str) -> User:
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict("This e-mail is already registered.", field="email")
    org = create_organization(session, name=organization_name, roles=roles, currency=currency)
    user = User(email=email, name=name.strip(), password_hash=password_hash)
    user.memberships.append(Membership(organization=org, role=MemberRole.OWNER.value))
    session.add(user)
    # Flushed so the audit entry can name the new ids.
    session.flush()
    audit.record(session, "account.registered", actor=audit.Actor(user_id=user.id),
                 organization_id=org.id, object_type="user", object_id=user.id,
                 data={"organization": org.slug, "roles": org.role_names})
    return user


REGISTRATION_LIFETIME = dt.timedelta(hours=24)


@dataclass(frozen=True)
class RegistrationRequest:
    """What a registration asked for: the link's secret to mail to a new address, or, for an
    address that has an account already, None (its holder is told so by mail instead)."""

    email: str
    secret: str | None


def request_registration(session: Session, passwords: Passwords, *, email: str, password: str,
                         name: str, organization_name: str, roles: Iterable[str],
                         currency: str = "CNY") -> RegistrationRequest:
    """Check a registration and keep it until its e-mail is confirmed.

    Input errors (the password's strength, the roles) are answered at once, as they say
    nothing about the address. Beyond them every address gets the same answer, with the same
    work done (a password hash): a new one gets a link that creates the account, one with an
    account a note saying so, both by mail, so only the address's holder learns which.
    """
    email = normalize_email(email)
    check_strength(password, email=email)
    roles = _check_roles(roles)
    password_hash = passwords.hash(password)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        return RegistrationRequest(email, None)
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(PendingRegistration(
        email=email, token_hash=hash_key(secret), name=name.strip(),
        password_hash=password_hash, organization_name=organization_name.strip(), roles=roles,
        currency=currency, created_at=now, expires_at=now + REGISTRATION_LIFETIME))
    return RegistrationRequest(email, secret)


def pending_registration(session: Session, secret: str) -> PendingRegistration:
    """The pending registration of a link's secret; 404 for an unknown, used or expired one."""
    pending = session.scalar(select(PendingRegistration).where(
        PendingRegistration.token_hash == hash_key(secret)))
    if pending is None or not pending.is_pending:
        raise NotFound("This registration link is unknown, used or expired; register again.")
    return pending


def complete_registration(session: Session, secret: str) -> User:
    """Create the account of a confirmed registration (its link works once)."""
    pending = pending_registration(session, secret)
    user = _create_account(session, email=pending.email, password_hash=pending.password_hash,
                           name=pending.name, organization_name=pending.organization_name,
                           roles=pending.roles, currency=pending.currency)
    pending.completed_at = utcnow()
    return user


def authenticate(session: Session, passwords: Passwords, *, email: str,
                 password: str) -> User | None:
    """The active person with this e-mail and password, else None.

    The same answer, and about the same time, for an unknown e-mail and a wrong password, so
    sign-in never tells which e-mails exist. Throttling is the caller's (``LoginThrottle``):
    it is asked before this is.
    """
    email = normalize_email(email)
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


# Sessions ---------------------------------------------------------------------------------------

def start_session(session: Session, user: User, *, lifetime: dt.timedelta) -> str:
    """Open a server-side session for a person and return its secret, for the cookie only.

    Only the secret's hash is stored, so a copy of the table signs no one in.
    """
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(UserSession(user=user, token_hash=hash_key(secret), created_at=now,
                            last_seen_at=now, expires_at=now + lifetime))
    return secret


def open_session(session: Session, secret: str) -> UserSession | None:
    """The open, unexpired session of a cookie's secret, with its person; else None."""
    record = session.scalar(select(UserSession).where(
        UserSession.token_hash == hash_key(secret)))
    if record is None or not record.is_open or not record.user.is_active:
        return None
    now = utcnow()
    # Written at most once a minute, so browsing does not turn every page view into a write.
    if now - record.last_seen_at > _LAST_USED_RESOLUTION:
        record.last_seen_at = now
    return record


def end_session(session: Session, secret: str) -> None:
    """End the session of a cookie's secret (sign-out); ending an ended one changes nothing."""
    record = session.scalar(select(UserSession).where(
        UserSession.token_hash == hash_key(secret)))
    if record is not None and record.ended_at is None:
        record.ended_at = utcnow()


def end_other_sessions(session: Session, user: User, *, keep_id: int | None = None) -> int:
    """End every open session of a person but ``keep_id``; returns how many were ended."""
    stmt = (update(UserSession)
            .where(UserSession.user_id == user.id, UserSession.ended_at.is_(None))
            .values(ended_at=utcnow()))
    if keep_id is not None:
        stmt = stmt.where(UserSession.id != keep_id)
    return session.execute(stmt, execution_options={"synchronize_session": False}).rowcount


def change_password(session: Session, passwords: Passwords, user: User, *,
                    current_password: str, new_password: str,
                    current_session_id: int | None) -> None:
    """Set a new password after checking the current one; every other session of the person
    ends, so a browser signed in with the old password (perhaps someone else's) is out."""
    if not passwords.verify(user.password_hash, current_password):
        raise InvalidInput("The current password is wrong.", field="current_password")
    try:
        check_strength(new_password, email=user.email)
    except InvalidInput as exc:
        raise InvalidInput(exc.detail, field="new_password") from None
    user.password_hash = passwords.hash(new_password)
    ended = end_other_sessions(session, user, keep_id=current_session_id)
    audit.record(session, "account.password_changed", actor=audit.Actor(user_id=user.id),
                 object_type="user", object_id=user.id, data={"sessions_ended": ended})


def principal_for_user(user: User, organization_id: int | None = None) -> Principal | None:
    """The principal of a signed-in person, for the chosen organization or their first one."""
    for membership in user.memberships:
        if organization_id is None or membership.organization_id == organization_id:
            return Principal(organization_id=membership.organization_id, user_id=user.id,
                             member_role=membership.role, scopes=frozenset(SCOPES),
                             org_roles=frozenset(membership.organization.role_names))
    return None


INVITATION_LIFETIME = dt.timedelta(days=7)


def invite_member(session: Session, principal: Principal, organization: Organization, *,
                  email: str, role: str) -> tuple[Invitation, str]:
    """Invite an e-mail address to the organization with a role; returns the invitation and the
    secret of its link, which is never stored and never shown again.

    The answer is the same whether anyone is registered with the address or not, and names no
    one: nothing here tells the inviter who has an account. A new invitation of the same address
    replaces a pending one.
    """
    if role not in {r.value for r in MemberRole}:
        raise InvalidInput("Unknown member role.", field="role")
    email = normalize_email(email)
    now = utcnow()
    session.execute(
        update(Invitation)
        .where(Invitation.organization_id == organization.id, Invitation.email == email,
               Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
        .values(revoked_at=now), execution_options={"synchronize_session": False})
    secret = secrets.token_urlsafe(32)
    invitation = Invitation(organization=organization, email=email, role=role,
                            token_hash=hash_key(secret), invited_by_id=principal.user_id,
                            created_at=now, expires_at=now + INVITATION_LIFETIME)
    session.add(invitation)
    session.flush()  # the audit entry names the invitation
    audit.record(session, "member.invited", actor=principal.actor,
                 organization_id=organization.id, object_type="invitation",
                 object_id=invitation.id, data={"email": email, "role": role})
    return invitation, secret


def revoke_invitation(session: Session, principal: Principal, invitation: Invitation) -> Invitation:
    """Withdraw a pending invitation; an accepted one stays (remove the member instead)."""
    if invitation.accepted_at is not None:
        raise Conflict("This invitation was already accepted.")
    if invitation.revoked_at is None:
        invitation.revoked_at = utcnow()
        audit.record(session, "member.invitation_revoked", actor=principal.actor,
                     organization_id=invitation.organization_id, object_type="invitation",
                     object_id=invitation.id, data={"email": invitation.email})
    return invitation


def pending_invitation(session: Session, secret: str) -> Invitation:
    """The pending invitation of a link's secret; 404 for an unknown, used, withdrawn or
    expired one (all alike)."""
    invitation = session.scalar(select(Invitation).where(
        Invitation.token_hash == hash_key(secret)))
    if invitation is None or invitation.status != "pending":
        raise NotFound("This invitation is unknown, used, withdrawn or expired.")
    return invitation


def accept_invitation(session: Session, user: User, secret: str) -> Membership:
    """The signed-in invitee joins the organization with the invited role.

    Only the person whose e-mail was invited may accept, once.
    """
    invitation = pending_invitation(session, secret)
    if normalize_email(user.email) != invitation.email:
        raise Forbidden("This invitation is for another e-mail address; sign in with that one.")
    if any(m.organization_id == invitation.organization_id for m in user.memberships):
        raise Conflict("You are already a member of this organization.")
    membership = Membership(user=user, organization=invitation.organization,
                            role=invitation.role)
    session.add(membership)
    invitation.accepted_at, invitation.accepted_by_id = utcnow(), user.id
    session.flush()  # the audit entry names the membership
    audit.record(session, "member.added", actor=audit.Actor(user_id=user.id),
                 organization_id=invitation.organization_id, object_type="membership",
                 object_id=membership.id,
                 data={"user_id": user.id, "role": invitation.role,
                       "invitation_id": invitation.id})
    return membership


# Tax profile ------------------------------------------------------------------------------------

def set_tax_status(session: Session, principal: Principal, organization_id: int, *,
                   status: str, evidence: str) -> Organization:
    """Record an organization's verified VAT standing (general, small-scale or exempt).

    Rule: only the platform's finance people set it, each time with the evidence they checked
    (a certificate or registration number); checkout prices every order by it, so the change
    is audited with what it was before.
    """
    if not principal.is_platform_finance:
        raise Forbidden("Only the platform's finance staff verify tax status.")
    refuse_party(principal, {organization_id}, item="organization's tax status", action="verify")
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


def open_invitations(session: Session, organization_id: int) -> Keyset[Invitation]:
    """The organization's invitations still waiting for their person (neither accepted,
    withdrawn nor expired), the newest first."""
    return Keyset(session, select(Invitation).where(
        Invitation.organization_id == organization_id, Invitation.accepted_at.is_(None),
        Invitation.revoked_at.is_(None), Invitation.expires_at > utcnow()), [desc(Invitation.id)])


def get_user_by_email(session: Session, email: str) -> User:
    user = session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise NotFound("No such user.")
    return user
