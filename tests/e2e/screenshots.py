"""The README's screenshots, in English and Chinese, taken from the demo marketplace in Debian's
Chromium. Not part of the suite (the file name is not test_*): run it by name,

    .venv/bin/python -m pytest tests/e2e/screenshots.py -q

and it rewrites docs/screenshots/<page>-<en|zh>.png. Beyond the demo it arranges, through the
real services, a budget with a purchase charged to it and this month's settlement statements
under review, so that every page shown has something on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from billing import invoices, orders
from billing.budgets import lines as budgets
from billing.context import BillingSettings
from billing.payments import bank_transfer
from billing.settlement import workflow
from billing.models.statements import SettlementStatement
from market.accounts import services as accounts
from market.accounts.models import Organization, User
from market.catalog.models import Dataset
from market.core.db import utcnow
from pricing.money import Money

SETTINGS = BillingSettings()  # STATEMENT_REVIEW_DAYS and the rest at their defaults

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
LOCALES = {"en": "en", "zh": "zh-CN"}


@pytest.fixture(scope="module")
def scenery(served, demo) -> dict:
    """A budget with a purchase on it for the demo buyer, and this month's statements closed,
    issued and submitted for approval by the platform."""
    app = served.app
    settings = app.extensions["market.billing"]
    with served.session() as session, session.begin():
        orgs = {o.slug: o for o in session.scalars(select(Organization))}
        people = {u.email: u for u in session.scalars(select(User))}
        buyer = accounts.principal_for_user(people["buyer@demo.market"], orgs["demo-buyer"].id)
        platform = accounts.principal_for_user(people["platform@demo.market"],
                                               orgs["demo-platform"].id)
        year = utcnow().year
        budget = budgets.budget_for(session, buyer.organization_id, year, "CNY")
        if budget is None:
            budget = budgets.create_budget(session, buyer, fiscal_year=year, currency="CNY",
                                           name=f"{year} 数据采购预算 Data procurement")
            line = budgets.add_line(session, buyer, budget, code="DATA-01",
                                    name="训练数据 Training data", category="data_purchase",
                                    approved=Money("200000.00", "CNY"))
            budgets.add_line(session, buyer, budget, code="API-01", name="模型接口 Model APIs",
                             category="model_services", approved=Money("50000.00", "CNY"),
                             default_for_api=True)
            session.flush()  # the line's id, for the order
            dataset = session.scalar(select(Dataset).where(
                Dataset.title_en == "Radiology report summaries"))
            package = next(o for o in dataset.active_offers if o.kind == "mall_package")
            order = orders.place_mall_order(session, buyer, [orders.CartItem(package.id)],
                                            payment_method="bank_transfer",
                                            budget_line_id=line.id,
                                            purchase_order_number="PO-2026-0107")
            invoice = invoices.issue_invoice(session, order, settings, buyer.actor)
            bank_transfer.record_bank_receipt(session, platform, invoice, amount=order.total,
                                              received_on=invoice.issued_at.date(),
                                              bank_reference="DEMO-ICBC-SHOT", settings=settings)
        period = utcnow().strftime("%Y-%m")
        if not workflow.is_closed(session, period):
            workflow.close_period(session, period, actor=platform,
                                  settings=SETTINGS, cutoff=utcnow())
            for statement in session.scalars(select(SettlementStatement).where(
                    SettlementStatement.period == period)):
                workflow.issue(session, platform, statement)
                workflow.start_review(session, platform, statement)
        supplier_statement = session.scalar(select(SettlementStatement.id).where(
            SettlementStatement.period == period,
            SettlementStatement.organization_id == orgs["demo-supplier"].id))
        dataset_id = session.scalar(select(Dataset.id).where(
            Dataset.title_en == "Power grid dispatch Q&A"))
        return {"budget_id": budget.id, "statement_id": supplier_statement,
                "dataset_id": dataset_id}


def shoot(page, name: str, lang: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=SHOTS / f"{name}-{lang}.png")


@pytest.mark.parametrize("lang", LOCALES)
def test_screenshots(signed_in, scenery, lang):
    locale = LOCALES[lang]
    buyer = signed_in("buyer@demo.market", locale)
    buyer.goto("/catalog")
    shoot(buyer, "catalogue", lang)
    buyer.goto(f"/datasets/{scenery['dataset_id']}")
    shoot(buyer, "dataset", lang)
    buyer.locator("form[action$='/cart'] button[type=submit]").first.click()
    buyer.goto("/cart")
    shoot(buyer, "checkout", lang)
    buyer.goto("/orders")
    shoot(buyer, "orders", lang)
    buyer.goto("/holdings")
    shoot(buyer, "holdings", lang)
    buyer.goto(f"/budgets/{scenery['budget_id']}")
    shoot(buyer, "budget-report", lang)

    reviewer = signed_in("reviewer@demo.market", locale)
    reviewer.goto(f"/statements/{scenery['statement_id']}")
    shoot(reviewer, "statement-review", lang)
