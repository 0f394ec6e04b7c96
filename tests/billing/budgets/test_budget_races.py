"""Checkouts racing for one budget line on really committed data (PostgreSQL): each request
from its own client and connection, lined up on a barrier. The line's conditional UPDATE
re-checks what is left under its row lock, so a "block" line is never committed beyond its
approved amount, however many orders race for it.
"""

from __future__ import annotations


import pytest
from sqlalchemy import func, select

from billing.budgets import lines as budgets
from billing.models import BudgetAlert, BudgetLine, BudgetRecord, Order
from market.core.db import utcnow
from pricing.money import Money
from tests.billing.shop import buyer, listed_dataset
from tests.concurrency import at_once, fresh_app, postgresql_only
from tests.factories import english_client, make_key

TOTAL = 1_038_800  # one package of 9,800.00 with 6% VAT

pytestmark = postgresql_only(
    "row locks and concurrent money movements only mean something on PostgreSQL")


@pytest.fixture(scope="module")
def racing_app(database_url, tmp_path_factory):
    """One fresh, really committed database for the module; each test builds its own shop."""
    with fresh_app(database_url, tmp_path_factory.mktemp("budget-races")) as app:
        yield app


def _shop(app, approved_minor: int, keys: int) -> dict:
    """A listed package, a buyer with a block-mode budget line of ``approved_minor``, and
    ``keys`` API keys of the buyer that may place orders; committed."""
    database = app.extensions["market.db"]
    passwords = app.extensions["market.passwords"]
    with database.session() as session, session.begin():
        made = listed_dataset(session, passwords, package_price="9800.00")
        buyer_org, _, principal = buyer(session, passwords)
        budget = budgets.create_budget(session, principal, fiscal_year=utcnow().year,
                                       currency="CNY", name="Data purchases",
                                       thresholds=(50, 100))
        line = budgets.add_line(session, principal, budget, code="RACE-01", name="Race",
                                category="data_purchase",
                                approved=Money.from_minor(approved_minor, "CNY"))
        secrets = [make_key(session, buyer_org, scopes=("billing:read", "billing:write"))[1]
                   for _ in range(keys)]
        return {"offer_id": made["package"].id, "line_id": line.id, "keys": secrets}


def _checkouts(app, shop):
    def checkout(secret):
        client = english_client(app)
        return lambda: client.post("/api/v1/orders",
                                   headers={"Authorization": f"Bearer {secret}"},
                                   json={"items": [{"offer_id": shop["offer_id"]}],
                                         "payment_method": "bank_transfer",
                                         "budget_line_id": shop["line_id"]})

    return at_once([checkout(secret) for secret in shop["keys"]])


def _line_state(app, shop):
    with app.extensions["market.db"].session() as session:
        line = session.get(BudgetLine, shop["line_id"])
        commitments = session.scalar(select(func.coalesce(func.sum(BudgetRecord.amount_minor), 0))
                                     .where(BudgetRecord.line_id == line.id,
                                            BudgetRecord.kind == "commitment"))
        orders = session.scalar(select(func.count()).select_from(Order).where(
            Order.budget_line_id == line.id))
        alerts = session.scalars(select(BudgetAlert.threshold).where(
            BudgetAlert.line_id == line.id).order_by(BudgetAlert.threshold)).all()
        return line.approved_minor, line.committed_minor, commitments, orders, alerts


def test_two_checkouts_that_fit_only_one_at_a_time_one_passes(racing_app):
    shop = _shop(racing_app, approved_minor=TOTAL + TOTAL // 2, keys=2)

    responses = _checkouts(racing_app, shop)

    assert sorted(r.status_code for r in responses) == [201, 409], \
        [r.get_json() for r in responses]
    loser = next(r for r in responses if r.status_code == 409).get_json()
    assert "Line RACE-01 has CNY 5,194.00 left" in loser["detail"]
    assert "short by CNY 5,194.00" in loser["detail"]
    approved, committed, commitments, orders, alerts = _line_state(racing_app, shop)
    assert committed == commitments == TOTAL and orders == 1
    assert alerts == [50]  # fired once, by the order that passed


def test_eight_checkouts_never_overspend_a_line(racing_app):
    shop = _shop(racing_app, approved_minor=3 * TOTAL + 500_000, keys=8)

    responses = _checkouts(racing_app, shop)

    assert sorted(r.status_code for r in responses) == [201] * 3 + [409] * 5, \
        [r.get_json() for r in responses]
    approved, committed, commitments, orders, alerts = _line_state(racing_app, shop)
    assert committed == commitments == 3 * TOTAL <= approved and orders == 3
    assert alerts == [50]
