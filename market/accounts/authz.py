"""Authorization in one place: who is asking, what they may do, and which objects they may see.

Every object belongs to an organization. A principal acts for exactly one organization; asking
for another organization's object answers 404, so its existence never leaks. A principal that
may see an object but lacks the role or scope for an action gets 403.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.orm import Session

from market.accounts.models import MemberRole, Organization
from market.audit import Actor
from market.errors import Forbidden, NotFound, Unauthorized

# What an API key may be granted. People are limited by their role instead.
SCOPES: dict[str, str] = {
    "org:read": "Read the organization and its members.",
    "catalog:read": "Browse datasets, versions and offers.",
    "catalog:write": "Publish datasets, versions, offers and supply chains.",
    "data:read": "Read records of datasets the organization is entitled to (metered).",
    "usage:read": "Read token usage and its cost.",
    "usage:write": "Report usage events (royalty tokens).",
    "billing:read": "Read orders, invoices, statements and budgets.",
    "billing:write": "Place orders and manage budgets.",
    "keys:manage": "Create, change and revoke API keys.",
    "audit:read": "Read the organization's audit log.",
}

ALL_MEMBER_ROLES = frozenset(r.value for r in MemberRole)


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str]  # member roles that may do it when signed in as a person
    scope: str | None      # the key scope that grants it to a machine; None: people only
    # The organization must hold one of these marketplace roles (None: any organization).
    org_roles: frozenset[str] | None = None


ANY_KEY = "*"  # a Rule.scope that every valid key of the organization satisfies


PERMISSIONS: dict[str, Rule] = {
    "self:read": Rule(ALL_MEMBER_ROLES, ANY_KEY),
    "org:read": Rule(ALL_MEMBER_ROLES, "org:read"),
    "members:manage": Rule(frozenset({"owner"}), None),
    "keys:read": Rule(frozenset({"owner"}), "keys:manage"),
    "keys:manage": Rule(frozenset({"owner"}), "keys:manage"),
    "audit:read": Rule(frozenset({"owner", "finance", "reviewer"}), "audit:read"),
    "catalog:read": Rule(ALL_MEMBER_ROLES, "catalog:read"),
    "catalog:write": Rule(frozenset({"owner", "member"}), "catalog:write",
                          frozenset({"supplier", "processor"})),
    "listings:review": Rule(frozenset({"owner", "reviewer"}), None, frozenset({"exchange"})),
    # The metered data API: machines only, since every call is charged to a key's limits.
    "data:read": Rule(frozenset(), "data:read"),
    "usage:read": Rule(ALL_MEMBER_ROLES, "usage:read"),
    "usage:write": Rule(frozenset(), "usage:write"),
    # Buying: orders, payments, subscriptions, demands. Finance staff pay what others ordered.
    "billing:read": Rule(ALL_MEMBER_ROLES, "billing:read"),
    "billing:write": Rule(frozenset({"owner", "member", "finance"}), "billing:write"),
    # Budgets: set up and amended by the organization's owner or finance people; read with
    # billing:read.
    "budgets:manage": Rule(frozenset({"owner", "finance"}), "billing:write"),
    # Refunds and recorded bank receipts move the platform's money: its own finance people only.
    "payments:manage": Rule(frozenset({"owner", "finance"}), None,
                            frozenset({"platform", "exchange"})),
    # Quoting on custom demands and delivering them.
    "deals:supply": Rule(frozenset({"owner", "member"}), "catalog:write",
                         frozenset({"supplier", "processor"})),
    # The platform's own finance people: a buyer's verified tax status, and credit lines.
    "tax_status:manage": Rule(frozenset({"owner", "finance"}), None, frozenset({"platform"})),
    "credit_lines:manage": Rule(frozenset({"owner", "finance"}), None, frozenset({"platform"})),
    # Settlement statements: closing periods, reviewing, resolving disputes (maker-checker).
    "statements:manage": Rule(frozenset({"owner", "finance", "reviewer"}), None,
                              frozenset({"platform", "exchange"})),
}


@dataclass(frozen=True)
class Principal:
    """The one organization a request acts for, and as whom."""

    organization_id: int
    user_id: int | None = None
    member_role: str | None = None
    api_key_id: int | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    org_roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def actor(self) -> Actor:
        return Actor(user_id=self.user_id, api_key_id=self.api_key_id)

    @property
    def is_key(self) -> bool:
        return self.api_key_id is not None

    def can(self, permission: str) -> bool:
        rule = PERMISSIONS[permission]
        if rule.org_roles is not None and not rule.org_roles & self.org_roles:
            return False
        if self.is_key:
            return rule.scope == ANY_KEY or (rule.scope is not None and rule.scope in self.scopes)
        return self.member_role in rule.roles


def authorize(principal: Principal | None, permission: str) -> Principal:
    """Raise 401 for nobody and 403 for a principal without the permission."""
    if permission not in PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}")
    if principal is None:
        raise Unauthorized("Sign in or send an API key.")
    if not principal.can(permission):
        scope = PERMISSIONS[permission].scope
        if principal.is_key and scope not in (None, ANY_KEY) and scope not in principal.scopes:
            raise Forbidden(f"This API key lacks the {scope!r} scope.", field="scopes")
        raise Forbidden(f"This needs the {permission!r} permission.")
    return principal


T = TypeVar("T")


def get_owned(session: Session, model: type[T], object_id: int, principal: Principal) -> T:
    """Load an object of the principal's organization, or 404 whether it exists elsewhere or not."""
    obj = session.get(model, object_id)
    owner_id = obj.id if isinstance(obj, Organization) else getattr(obj, "organization_id", None)
    if obj is None or owner_id != principal.organization_id:
        raise NotFound(f"No such {model.__name__.lower()}.")
    return obj
