"""Demo data for a first look at the marketplace; running it twice changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from market.accounts import services as accounts
from market.accounts.models import Membership, Organization, User
from market.accounts.passwords import Passwords

DEMO_PASSWORD = "demo-market-2026"


@dataclass(frozen=True)
class DemoOrg:
    slug: str
    name: str
    roles: tuple[str, ...]
    people: tuple[tuple[str, str, str], ...]  # (e-mail, name, member role)


DEMO_ORGS = (
    DemoOrg("demo-buyer", "华东能源集团 East China Energy Group", ("buyer",), (
        ("buyer@demo.market", "Li Na", "owner"),
        ("finance@demo.market", "Zhou Min", "finance"))),
    DemoOrg("demo-model-co", "Lingxi Models", ("buyer",), (
        ("models@demo.market", "Chen Yu", "owner"),)),
    DemoOrg("demo-supplier", "Grid Sensor Data Co.", ("supplier",), (
        ("supplier@demo.market", "Wang Lei", "owner"),)),
    DemoOrg("demo-processor", "Precise Annotation Studio", ("processor",), (
        ("processor@demo.market", "Zhao Qing", "owner"),)),
    DemoOrg("demo-exchange", "Demo Data Exchange", ("exchange",), (
        ("exchange@demo.market", "Sun Hao", "owner"),
        ("reviewer@demo.market", "Xu Jing", "reviewer"))),
    DemoOrg("demo-channel", "Channel Partners Ltd.", ("channel",), (
        ("channel@demo.market", "He Fang", "owner"),)),
    DemoOrg("demo-platform", "Marketplace Platform", ("platform",), (
        ("platform@demo.market", "Operator", "owner"),)),
)


@dataclass(frozen=True)
class DemoCredential:
    email: str
    password: str
    organization: str
    roles: tuple[str, ...]
    member_role: str


def seed_demo(session: Session, passwords: Passwords) -> list[DemoCredential]:
    """Get or create every demo organization and person; existing ones are left as they are."""
    credentials = []
    for spec in DEMO_ORGS:
        org = session.scalar(select(Organization).where(Organization.slug == spec.slug))
        if org is None:
            org = accounts.create_organization(session, name=spec.name, roles=spec.roles,
                                               slug=spec.slug)
        for email, name, role in spec.people:
            user = session.scalar(select(User).where(User.email == email))
            if user is None:
                user = User(email=email, name=name, password_hash=passwords.hash(DEMO_PASSWORD))
                session.add(user)
            if not any(m.organization is org for m in user.memberships):
                user.memberships.append(Membership(organization=org, role=role))
            credentials.append(DemoCredential(email, DEMO_PASSWORD, spec.name, spec.roles, role))
    return credentials
