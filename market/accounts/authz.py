"""Authorization in one place: who is asking, what they may do, and which objects they may see.

Every object belongs to an organization. A principal acts for exactly one organization; asking
for another organization's object answers 404, so its existence never leaks. A principal that
may see an object but lacks the role or scope for an action gets 403.

Segregation of duties is kept here too, as two rules every money-moving and review action calls:

- ``refuse_party``: no organization confirms money into, approves, adjusts or reviews an item it
  is a party to — as buyer, seller or supply-chain participant (each item says who its parties
  are: ``billing.orders.order_parties``, a statement's participant, a listing's supplier).
- ``require_checker`` (maker-checker): the second person of a money-moving action is a person,
  never one of the item's makers, submitters or reviewers, and comes from another organization
  or, in the maker's own, holds another member role of the same rank (finance checks a
  reviewer) or a higher one (the owner); never a lower one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, TypeVar

from sqlalchemy.orm import Session

from market.accounts.models import MemberRole, Organization, OrgRole
from market.core.audit import Actor
from market.core.errors import Forbidden, NotFound, Unauthorized

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
# The people who hold an organization's purse: they pay, dispute and, at the platform, open
# credit lines and verify tax status.
FINANCE_ROLES = frozenset({MemberRole.OWNER.value, MemberRole.FINANCE.value})
PLATFORM = OrgRole.PLATFORM.value
EXCHANGE = OrgRole.EXCHANGE.value
# The organizations paid a share of what a dataset earns, through settlement statements.
PAYEE_ROLES = frozenset({OrgRole.SUPPLIER.value, OrgRole.PROCESSOR.value, OrgRole.CHANNEL.value})


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
    # Joining an organization is a person's own consent: never a key's.
    "invitations:accept": Rule(ALL_MEMBER_ROLES, None),
    "keys:read": Rule(frozenset({"owner"}), "keys:manage"),
    "keys:manage": Rule(frozenset({"owner"}), "keys:manage"),
    "audit:read": Rule(frozenset({"owner", "finance", "reviewer"}), "audit:read"),
    "catalog:read": Rule(ALL_MEMBER_ROLES, "catalog:read"),
    "catalog:write": Rule(frozenset({"owner", "member"}), "catalog:write",
                          frozenset({"supplier", "processor"})),
    "listings:review": Rule(frozenset({"owner", "reviewer"}), None, frozenset({EXCHANGE})),
    # The metered data API: machines only, since every call is charged to a key's limits.
    "data:read": Rule(frozenset(), "data:read"),
    "usage:read": Rule(ALL_MEMBER_ROLES, "usage:read"),
    "usage:write": Rule(frozenset(), "usage:write"),
    # Buying: orders, payments, subscriptions, demands. Finance staff pay what others ordered.
    "billing:read": Rule(ALL_MEMBER_ROLES, "billing:read"),
    "billing:write": Rule(frozenset({"owner", "member", "finance"}), "billing:write"),
    # Budgets: set up and amended by the organization's owner or finance people; read with
    # billing:read.
    "budgets:manage": Rule(FINANCE_ROLES, "billing:write"),
    # Refunds and recorded bank receipts move the platform's money: its own finance people only.
    "payments:manage": Rule(FINANCE_ROLES, None,
                            frozenset({PLATFORM, EXCHANGE})),
    # Quoting on custom demands and delivering them.
    "deals:supply": Rule(frozenset({"owner", "member"}), "catalog:write",
                         frozenset({"supplier", "processor"})),
    # The platform's own finance people: a buyer's verified tax status, and credit lines.
    "tax_status:manage": Rule(FINANCE_ROLES, None, frozenset({PLATFORM})),
    "credit_lines:manage": Rule(FINANCE_ROLES, None, frozenset({PLATFORM})),
    # Settlement statements: closing periods, reviewing, resolving disputes (maker-checker).
    "statements:manage": Rule(frozenset({"owner", "finance", "reviewer"}), None,
                              frozenset({PLATFORM, EXCHANGE})),
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

    @property
    def is_platform(self) -> bool:
        """Acts for the platform, whose staff see across every participant (closing periods,
        reconciliation, payment anomalies, every statement and order)."""
        return PLATFORM in self.org_roles

    @property
    def is_exchange(self) -> bool:
        """Acts for an exchange, which reviews what is listed through it."""
        return EXCHANGE in self.org_roles

    @property
    def is_payee(self) -> bool:
        """Acts for an organization paid shares (a supplier, processor or channel)."""
        return bool(PAYEE_ROLES & self.org_roles)

    @property
    def is_finance(self) -> bool:
        """A person of the organization's finance (its owner or a finance member); a key never
        is."""
        return not self.is_key and self.member_role in FINANCE_ROLES

    @property
    def is_platform_finance(self) -> bool:
        """A person of the platform's finance: credit lines, tax status, paying statements."""
        return self.is_platform and self.is_finance

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


def refuse_party(principal: Principal, parties: Collection[int], *, item: str,
                 action: str) -> None:
    """403 when the principal's organization is a party to the item it would act on."""
    if principal.organization_id in parties:
        raise Forbidden(f"Your organization is a party to this {item}, so another organization "
                        f"must {action} it.", field="party", code="party_to_item")


# Higher is more senior; roles of one rank are different teams (finance checks reviewers).
MEMBER_RANK = {"member": 0, "finance": 1, "reviewer": 1, "owner": 2}


@dataclass(frozen=True)
class Maker:
    """Who made an item that a second person must check: a person acting for an organization
    in a member role (recorded with the item, since roles may change later)."""

    user_id: int | None
    organization_id: int | None
    member_role: str | None


def require_checker(principal: Principal, maker: Maker, *, excluded: Collection[int] = (),
                    item: str) -> None:
    """The checker of a maker-checker pair: a person, not the maker nor anyone in ``excluded``
    (the item's submitters and reviewers), of another team or a higher role."""
    if principal.user_id is None:
        raise Forbidden(f"A person approves this {item}, not an API key.", field="approver",
                        code="checker_required")
    if principal.user_id == maker.user_id or principal.user_id in excluded:
        raise Forbidden(f"Whoever made, submitted or reviewed this {item} cannot also approve "
                        "it; another person must.", field="approver", code="checker_required")
    if principal.organization_id != maker.organization_id:
        return
    mine = MEMBER_RANK.get(principal.member_role or "", -1)
    theirs = MEMBER_RANK.get(maker.member_role or "", -1)
    if mine < theirs or (mine == theirs and principal.member_role == maker.member_role):
        raise Forbidden(f"This {item} is approved by someone of another team or a higher role "
                        f"than its maker ({maker.member_role}).", field="approver",
                        code="checker_required")


def oversees(principal: Principal, exchange_id: int | None) -> bool:
    """Whether the principal reviews an item listed through ``exchange_id``: the platform
    reviews every item, an exchange those listed through it."""
    return principal.is_platform or (principal.is_exchange
                                     and exchange_id == principal.organization_id)


T = TypeVar("T")


def get_owned(session: Session, model: type[T], object_id: int, principal: Principal) -> T:
    """Load an object of the principal's organization, or 404 whether it exists elsewhere or not."""
    obj = session.get(model, object_id)
    owner_id = obj.id if isinstance(obj, Organization) else getattr(obj, "organization_id", None)
    if obj is None or owner_id != principal.organization_id:
        raise NotFound(f"No such {model.__name__.lower()}.")
    return obj
