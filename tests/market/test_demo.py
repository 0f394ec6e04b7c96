"""``flask market seed-demo`` creates organizations of every role, and is idempotent."""

from __future__ import annotations

from sqlalchemy import func, select

from market.accounts.models import Membership, Organization, OrganizationRole, OrgRole, User
from tests.fixtures import csrf_token


def _counts(session):
    return tuple(session.scalar(select(func.count()).select_from(m))
                 for m in (Organization, User, Membership))


def test_seed_demo_is_idempotent_and_prints_credentials(runner, session):
    first = runner.invoke(args=["market", "seed-demo"])
    assert first.exit_code == 0, first.output
    counts = _counts(session)
    second = runner.invoke(args=["market", "seed-demo"])
    assert second.exit_code == 0 and _counts(session) == counts
    roles = set(session.scalars(select(OrganizationRole.role)))
    assert roles == {r.value for r in OrgRole}
    assert "buyer@demo.market" in first.output and "demo-market-2026" in first.output


def test_printed_credentials_sign_in(runner, client, session):
    runner.invoke(args=["market", "seed-demo"])
    response = client.post("/login", data={"email": "reviewer@demo.market",
                                           "password": "demo-market-2026",
                                           "csrf_token": csrf_token(client, "/login")})
    assert response.status_code == 302
