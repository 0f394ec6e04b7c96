"""The buyer's budget pages: its budgets, each budget's execution (by line, with charts of
approved against spent and of spending by month, and by supplier, sector and dataset), the
records behind every figure, the exports and the alerts fired.

The figures come from ``billing.budget_reports``; these views only choose what to show.
"""

from __future__ import annotations

from flask import render_template, request
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import func, select

from billing import budget_reports as reports
from billing.models import Budget, BudgetAlert, BudgetLine
from market.accounts.authz import Principal
from market.accounts.models import Organization
from market.catalog.models import Dataset
from market.catalog.taxonomy import SECTORS
from market.errors import NotFound
from market.storefront.blueprint import storefront
from market.storefront.views import signed_in
from market.web import db_session
from pricing.money import Money

RECENT_ALERTS = 20


def _is_zh() -> bool:
    # Babel parses zh_CN as zh_Hans_CN, so compare the language alone.
    return get_locale().language == "zh"


def _budget(principal: Principal, budget_id: int) -> Budget:
    budget = db_session().get(Budget, budget_id)
    if budget is None or budget.organization_id != principal.organization_id:
        raise NotFound(_("No such budget."))
    return budget


@storefront.get("/budgets")
@signed_in("billing:read")
def budget_list(principal: Principal):
    session = db_session()
    budgets = session.scalars(select(Budget).where(
        Budget.organization_id == principal.organization_id)
        .order_by(Budget.fiscal_year.desc(), Budget.currency)).all()
    sums = {budget_id: (int(approved), int(committed), int(spent))
            for budget_id, approved, committed, spent in session.execute(
                select(BudgetLine.budget_id, func.sum(BudgetLine.approved_minor),
                       func.sum(BudgetLine.committed_minor), func.sum(BudgetLine.spent_minor))
                .where(BudgetLine.organization_id == principal.organization_id)
                .group_by(BudgetLine.budget_id))}
    rows = [(budget, *sums.get(budget.id, (0, 0, 0))) for budget in budgets]
    return render_template("budgets/list.html", rows=rows,
                           execution_rate=reports.execution_rate)


def _chart_number(minor: int, currency: str) -> str:
    # A decimal string: the script turns it into a number for drawing only.
    return str(Money.from_minor(minor, currency).amount)


def _chart_data(lines: reports.BudgetReport, months: reports.BudgetReport) -> dict:
    """What budget-charts.js draws: approved and spent per line; committed and spent a month."""
    currency = lines.currency
    return {
        "currency": currency,
        "labels": {"approved": _("Approved"), "spent": _("Spent"),
                   "committed": _("Committed")},
        "lines": {"codes": [row.code for row in lines.rows],
                  "names": [row.label for row in lines.rows],
                  "approved": [_chart_number(row.approved_minor or 0, currency)
                               for row in lines.rows],
                  "spent": [_chart_number(row.spent_minor, currency) for row in lines.rows]},
        "months": {"labels": [row.key for row in months.rows],
                   "committed": [_chart_number(row.committed_minor, currency)
                                 for row in months.rows],
                   "spent": [_chart_number(row.spent_minor, currency) for row in months.rows]},
    }


@storefront.get("/budgets/<int:budget_id>")
@signed_in("billing:read")
def budget_detail(principal: Principal, budget_id: int):
    session = db_session()
    budget = _budget(principal, budget_id)
    report = {by: reports.budget_report(session, budget, by) for by in reports.GROUPINGS}
    alerts = session.execute(
        select(BudgetAlert, BudgetLine).join(BudgetLine, BudgetLine.id == BudgetAlert.line_id)
        .where(BudgetLine.budget_id == budget.id)
        .order_by(BudgetAlert.fired_at.desc(), BudgetAlert.id.desc())
        .limit(RECENT_ALERTS)).all()
    return render_template("budgets/detail.html", budget=budget, report=report,
                           alerts=alerts, chart=_chart_data(report["line"], report["month"]),
                           zh=_is_zh())


@storefront.get("/budgets/<int:budget_id>/records")
@signed_in("billing:read")
def budget_records(principal: Principal, budget_id: int):
    session = db_session()
    budget = _budget(principal, budget_id)
    filters = {name: request.args.get(name, "").strip() for name in reports.DRILL_FILTERS}
    filters = {name: value for name, value in filters.items() if value}
    page = request.args.get("page", "1")
    page = int(page) if page.isdigit() and int(page) > 0 else 1
    try:
        result = reports.budget_records(session, budget, filters, page=page)
    except ValueError as error:
        return render_template("budgets/records.html", budget=budget, result=None,
                               describe=[], error=_("This filter is not valid: %(name)s.",
                                                    name=str(error))), 422
    return render_template("budgets/records.html", budget=budget, result=result,
                           describe=_describe(session, budget, filters), error=None)


def _describe(session, budget: Budget, filters: dict[str, str]) -> list[tuple[str, str]]:
    """The filters as a reader names them: the line's code and name, the supplier's name..."""
    names = {"line": _("Line"), "supplier": _("Supplier"), "sector": _("Sector"),
             "dataset": _("Dataset"), "month": _("Month")}
    zh = _is_zh()
    labels: dict[str, str] = {}
    for by, value in filters.items():
        if by == "line":
            line = session.get(BudgetLine, int(value)) if value.isdigit() else None
            labels[by] = f"{line.code} {line.name}" if line and line.budget_id == budget.id \
                else value
        elif value == reports.NONE:
            labels[by] = _("(none)")
        elif by == "supplier":
            organization = session.get(Organization, int(value)) if value.isdigit() else None
            labels[by] = organization.name if organization else value
        elif by == "dataset":
            dataset = session.get(Dataset, int(value)) if value.isdigit() else None
            labels[by] = (dataset.title_zh if zh else dataset.title_en) if dataset else value
        elif by == "sector":
            term = SECTORS.get(value)
            labels[by] = (term.zh if zh else term.en) if term else value
        else:
            labels[by] = value
    return [(names[by], labels[by]) for by in reports.DRILL_FILTERS if by in labels]
