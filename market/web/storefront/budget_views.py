"""The buyer's budget pages: its budgets, each budget's execution (by line, with charts of
approved against spent and of spending by month, and by supplier, sector and dataset), the
records behind every figure, the exports and the alerts fired; and, for the people who manage
budgets (owner, finance), the forms that set up a budget, add its lines and amend them.

The figures come from ``billing.budgets.reports`` and the changes from ``billing.budgets.lines``; these
views only choose what to show, and show a service's refusal next to the field it names.
"""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import func, select

from billing.budgets import alerts as budget_alerts
from billing.budgets import reports
from billing.budgets import lines as budgets, webhook_targets
from billing.models import Budget, BudgetAlert, BudgetLine
from market.accounts.authz import Principal
from market.accounts.models import Organization
from market.catalog.models import Dataset
from market.catalog.taxonomy import SECTORS
from market.core.db import business_calendar, utcnow
from market.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from market.web.storefront.blueprint import storefront
from market.web.storefront.common import form_error, is_zh
from market.web.storefront.budget_forms import (
    AlertWebhookForm, AmendmentForm, BudgetForm, BudgetLineForm,
)
from market.web.storefront.forms import ActionForm
from market.web.storefront.views import signed_in
from market.web.http import db_session
from pricing.errors import PricingError
from pricing.money import Money

RECENT_ALERTS = 20
MANAGE = "budgets:manage"
# The services' field names that are not the forms' own.
LINE_FIELDS = {"approved.currency": "approved"}
AMENDMENT_FIELDS = {"amount.currency": "amount"}
SERVICE_ERRORS = (InvalidInput, Conflict, Forbidden, NotFound)


def _budget(principal: Principal, budget_id: int) -> Budget:
    """The principal's own budget, its 404 in the page's language."""
    try:
        return budgets.get_budget(db_session(), principal, budget_id)
    except NotFound:
        raise NotFound(_("No such budget.")) from None


def _budget_form(principal: Principal) -> BudgetForm:
    """An empty budget form: this year, in the organization's default currency."""
    organization = db_session().get(Organization, principal.organization_id)
    return BudgetForm(formdata=None,
                      fiscal_year=business_calendar(db_session()).year_of(utcnow()),
                      currency=organization.default_currency)


@storefront.get("/budgets")
@signed_in("billing:read")
def budget_list(principal: Principal):
    return _render_list(principal)


@storefront.post("/budgets")
@signed_in(MANAGE)
def create_budget(principal: Principal):
    form = BudgetForm()
    if form.validate_on_submit():
        try:
            budget = budgets.create_budget(
                db_session(), principal, fiscal_year=form.fiscal_year.data,
                currency=form.currency.data.strip().upper(), name=form.name.data,
                enforcement=form.enforcement.data,
                require_purchase_order=form.require_purchase_order.data,
                thresholds=form.threshold_values(),
                alert_email=(form.alert_email.data or "").strip() or None)
        except SERVICE_ERRORS as exc:
            form_error(form, exc)
        else:
            flash(_("Budget %(name)s created: add its lines.", name=budget.name), "success")
            return redirect(url_for("storefront.budget_detail", budget_id=budget.id))
    return _render_list(principal, form, 422)


def _render_list(principal: Principal, form: BudgetForm | None = None, status: int = 200):
    session = db_session()
    budget_rows = budgets.list_budgets(session, principal).all()
    sums = {budget_id: (int(approved), int(committed), int(spent))
            for budget_id, approved, committed, spent in session.execute(
                select(BudgetLine.budget_id, func.sum(BudgetLine.approved_minor),
                       func.sum(BudgetLine.committed_minor), func.sum(BudgetLine.spent_minor))
                .where(BudgetLine.organization_id == principal.organization_id)
                .group_by(BudgetLine.budget_id))}
    rows = [(budget, *sums.get(budget.id, (0, 0, 0))) for budget in budget_rows]
    if form is None and principal.can(MANAGE):
        form = _budget_form(principal)
    return render_template("budgets/list.html", rows=rows, form=form,
                           execution_rate=reports.execution_rate), status


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
    return _render_detail(principal, _budget(principal, budget_id))


def _lines_of(budget: Budget) -> list[BudgetLine]:
    return sorted(budget.lines, key=lambda line: line.code)


def _amendment_form(line: BudgetLine, lines: list[BudgetLine], *,
                    from_request: bool) -> AmendmentForm:
    extra = {} if from_request else {"formdata": None}
    return AmendmentForm(prefix=f"line-{line.id}",
                         other_lines=[other for other in lines if other.id != line.id], **extra)


def _render_detail(principal: Principal, budget: Budget, *,
                   line_form: BudgetLineForm | None = None,
                   failed: tuple[int, AmendmentForm] | None = None,
                   webhook_form: AlertWebhookForm | None = None,
                   new_secret: str | None = None, status: int = 200):
    """The budget's page; with its forms for those who manage budgets (a form that failed
    shown again with its errors)."""
    session = db_session()
    manage = principal.can(MANAGE)
    lines = _lines_of(budget)
    amendment_forms = {}
    if manage:
        webhook_form = webhook_form or AlertWebhookForm(formdata=None, url=budget.webhook_url)
        line_form = line_form or BudgetLineForm(formdata=None)
        amendment_forms = {line.id: (failed[1] if failed and failed[0] == line.id else
                                     _amendment_form(line, lines, from_request=False))
                           for line in lines}
    report = {by: reports.budget_report(session, budget, by) for by in reports.GROUPINGS}
    alerts = session.execute(
        select(BudgetAlert, BudgetLine).join(BudgetLine, BudgetLine.id == BudgetAlert.line_id)
        .where(BudgetLine.budget_id == budget.id)
        .order_by(BudgetAlert.fired_at.desc(), BudgetAlert.id.desc())
        .limit(RECENT_ALERTS)).all()
    return render_template("budgets/detail.html", budget=budget, report=report,
                           alerts=alerts, chart=_chart_data(report["line"], report["month"]),
                           zh=is_zh(), manage=manage, budget_lines=lines, line_form=line_form,
                           amendment_forms=amendment_forms, webhook_form=webhook_form,
                           new_secret=new_secret,
                           max_webhook_attempts=budget_alerts.MAX_WEBHOOK_ATTEMPTS), status


def _amount(form_amount, currency: str, field) -> Money | None:
    """The typed amount as Money of the budget's currency; None (the error at the field) when
    the currency has fewer decimals than typed."""
    try:
        return Money(form_amount, currency)
    except PricingError as exc:
        field.errors = list(field.errors) + [str(exc)]
        return None


# The alert webhook: the page that generates a secret shows it, once (no redirect: the secret
# never goes into the session cookie a flash message would travel in).

@storefront.post("/budgets/<int:budget_id>/alert-webhook")
@signed_in(MANAGE)
def set_alert_webhook(principal: Principal, budget_id: int):
    budget = _budget(principal, budget_id)
    form = AlertWebhookForm()
    if form.validate_on_submit():
        try:
            secret = budget_alerts.set_webhook(
                db_session(), principal, budget, form.url.data,
                production=webhook_targets.is_production(current_app.config))
        except SERVICE_ERRORS as exc:
            form_error(form, exc)
        else:
            if secret is None:
                flash(_("Alerts now go to this webhook, signed with the same secret."),
                      "success")
                return redirect(url_for("storefront.budget_detail", budget_id=budget.id)
                                + "#alert-webhook")
            return _render_detail(principal, budget, new_secret=secret)
    return _render_detail(principal, budget, webhook_form=form, status=422)


@storefront.post("/budgets/<int:budget_id>/alert-webhook/rotate-secret")
@signed_in(MANAGE)
def rotate_alert_webhook_secret(principal: Principal, budget_id: int):
    budget = _budget(principal, budget_id)
    if not ActionForm().validate_on_submit():
        return redirect(url_for("storefront.budget_detail", budget_id=budget.id))
    try:
        secret = budget_alerts.rotate_webhook_secret(db_session(), principal, budget)
    except Conflict as exc:
        flash(exc.detail, "error")
        return redirect(url_for("storefront.budget_detail", budget_id=budget.id))
    return _render_detail(principal, budget, new_secret=secret)


@storefront.post("/budgets/<int:budget_id>/alert-webhook/remove")
@signed_in(MANAGE)
def remove_alert_webhook(principal: Principal, budget_id: int):
    budget = _budget(principal, budget_id)
    if ActionForm().validate_on_submit():
        try:
            budget_alerts.remove_webhook(db_session(), principal, budget)
        except Conflict as exc:
            flash(exc.detail, "error")
        else:
            flash(_("Alerts are no longer sent to a webhook."), "success")
    return redirect(url_for("storefront.budget_detail", budget_id=budget.id))


@storefront.post("/budgets/<int:budget_id>/lines")
@signed_in(MANAGE)
def add_budget_line(principal: Principal, budget_id: int):
    session = db_session()
    budget = _budget(principal, budget_id)
    form = BudgetLineForm()
    if form.validate_on_submit():
        approved = _amount(form.approved.data, budget.currency, form.approved)
        if approved is not None:
            try:
                line = budgets.add_line(
                    session, principal, budget, code=form.code.data, name=form.name.data,
                    category=form.category.data, approved=approved,
                    project=(form.project.data or "").strip() or None,
                    sector=form.sector.data or None,
                    default_for_api=form.default_for_api.data)
            except SERVICE_ERRORS as exc:
                form_error(form, exc, LINE_FIELDS)
            else:
                flash(_("Line %(code)s added.", code=line.code), "success")
                return redirect(url_for("storefront.budget_detail", budget_id=budget.id))
    return _render_detail(principal, budget, line_form=form, status=422)


@storefront.post("/budgets/<int:budget_id>/lines/<int:line_id>/amendments")
@signed_in(MANAGE)
def amend_budget_line(principal: Principal, budget_id: int, line_id: int):
    session = db_session()
    budget = _budget(principal, budget_id)
    line = next((line for line in budget.lines if line.id == line_id), None)
    if line is None:
        raise NotFound(_("No such budget line."))
    form = _amendment_form(line, _lines_of(budget), from_request=True)
    if form.validate_on_submit():
        amount = _amount(form.amount.data, budget.currency, form.amount)
        if amount is not None:
            try:
                to_line = (budgets.get_line(session, principal, form.to_line_id.data,
                                            field="to_line_id")
                           if form.kind.data == "transfer" and form.to_line_id.data else None)
                budgets.amend(session, principal, line, kind=form.kind.data, amount=amount,
                              reason=form.reason.data, to_line=to_line)
            except SERVICE_ERRORS as exc:
                form_error(form, exc, AMENDMENT_FIELDS)
            else:
                flash(_("Line %(code)s amended: approved %(approved)s.", code=line.code,
                        approved=budgets.money_text(line.approved_minor, budget.currency)),
                      "success")
                return redirect(url_for("storefront.budget_detail", budget_id=budget.id)
                                + f"#line-{line.id}")
    return _render_detail(principal, budget, failed=(line.id, form), status=422)


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
    zh = is_zh()
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
