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


def test_seed_demo_buys_and_pays_through_the_real_money_path(runner, session):
    from billing.settlement import ledger
    from billing.models import Invoice, Order, Subscription, TokenWallet

    first = runner.invoke(args=["market", "seed-demo"])
    assert "Demo purchase:" in first.output, first.output
    statuses = sorted(session.scalars(select(Order.status).where(Order.kind != "token_pack")))
    assert statuses == ["awaiting_payment", "paid", "paid"]
    assert session.scalar(select(Subscription.status)) == "active"
    assert session.scalar(select(TokenWallet.balance_tokens)) == 50_000_000
    assert session.scalar(select(func.count()).select_from(Invoice).where(
        Invoice.status == "open")) == 1
    assert set(ledger.trial_balance(session).values()) == {0}
    again = runner.invoke(args=["market", "seed-demo"])
    assert "Demo purchase:" not in again.output
    assert session.scalar(select(func.count()).select_from(Order)) == len(statuses) + 1
