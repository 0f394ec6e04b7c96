"""The exchange console for settlement statements, and the participant's view of its own.

Staff with ``statements:manage`` get the review queue (sorted by when the review is due), can
close a period, take each statement through issue → review → approve (maker-checker) → paid,
and resolve disputes; a participant sees its statements and may dispute one. Thin views over
``billing.settlement.workflow``: a service's refusal re-renders the page with its message and status.
The CSV, XLSX and PDF links point at the API's exports, which accept the signed-in session.
"""

from __future__ import annotations

import datetime as dt
import re

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from sqlalchemy import select
from wtforms import DecimalField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, Regexp

from billing.payments import anomalies
from billing.errors import GatewayUnavailable
from billing.settlement import exports, reconciliation, workflow
from billing.models.statements import AdjustmentStatus, SettlementStatement, StatementStatus
from market.accounts.authz import Principal, oversees
from market.accounts.models import Organization
from market.web.boundary import BoundedForm
from market.core.db import business_calendar, last_closed_month, utcnow
from market.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from market.core.keyset import PageRequest
from market.web.storefront.blueprint import storefront
from market.web.storefront.common import form_error, is_zh
from market.web.storefront.forms import ActionForm
from market.web.storefront.views import signed_in
from market.web.http import billing_settings, db_session, gateway
from pricing.errors import PricingError
from pricing.money import Money
from pricing.periods import MONTH_PATTERN, is_month

# What a service may refuse with; anything else is a bug and reaches the error page.
REFUSALS = (InvalidInput, Conflict, Forbidden, NotFound)


# Forms ------------------------------------------------------------------------------------------

class ClosePeriodForm(BoundedForm):
    period = StringField(_l("Period (YYYY-MM)"), validators=[
        DataRequired(), Regexp(f"^{MONTH_PATTERN}$", message=_l("Give the period as YYYY-MM."))])


class DisputeForm(BoundedForm):
    reason = TextAreaField(_l("What is wrong"), validators=[DataRequired(), Length(max=2000)])


REASON_CODE_LABELS = {
    "share_error": _l("The supply chain's share was applied wrongly"),
    "price_error": _l("The line's gross was priced wrongly"),
    "duplicate_line": _l("A sale or usage counted twice"),
    "refund_not_reflected": _l("A refund the line does not show"),
    "usage_error": _l("Metered usage counted wrongly"),
    "other": _l("Other (say what in the resolution)"),
}
LINES_PATTERN = r"^\s*\d{1,9}(\s*,\s*\d{1,9})*\s*$"


class ResolveForm(BoundedForm):
    amount = DecimalField(_l("Correction (positive: more is owed to the participant)"),
                          places=None, validators=[InputRequired()])
    reason_code = SelectField(_l("Reason"), choices=[SelectChoice(code, label) for code, label in REASON_CODE_LABELS.items()],
                              default="other")
    lines = StringField(_l("Lines corrected (their numbers, e.g. 1, 3)"), validators=[
        Length(max=2000),
        Regexp(LINES_PATTERN, message=_l("Give line numbers separated by commas."))])
    document = StringField(_l("Supporting document (reference)"),
                           validators=[Length(max=300)])
    reason = TextAreaField(_l("Resolution"), validators=[DataRequired(), Length(max=2000)])


class DecisionForm(BoundedForm):
    note = TextAreaField(_l("Note (required to reject)"), validators=[Length(max=2000)])


class PayStatementForm(BoundedForm):
    bank_reference = StringField(_l("Bank reference of the payout"),
                                 validators=[DataRequired(), Length(max=100)])




def _names(organization_ids) -> dict[int, str]:
    ids = {i for i in organization_ids if i is not None}
    return {org.id: org.name for org in db_session().scalars(
        select(Organization).where(Organization.id.in_(ids)))} if ids else {}


def _by_due_date(items: list[SettlementStatement]) -> list[SettlementStatement]:
    # Statements without a due date (drafts not yet issued) come after the dated ones.
    return sorted(items, key=lambda s: (s.review_due_on is None,
                                        s.review_due_on or dt.date.max, s.period, s.id))


def _period_arg() -> str | None:
    period = request.args.get("period", "").strip()
    return period if is_month(period) else None


# The queue and the participant's list --------------------------------------------------------

def _render_queue(principal: Principal, close_form: ClosePeriodForm | None = None,
                  status: int = 200):
    period = _period_arg()
    items = workflow.list_statements(db_session(), principal, period=period).all()
    staff = principal.can("statements:manage")
    platform = staff and principal.is_platform
    if close_form is None and platform:
        close_form = ClosePeriodForm(formdata=None, period=last_closed_month(db_session()))
    return render_template(
        "statements/list.html", statements=_by_due_date(items) if staff else items,
        staff=staff, platform=platform, close_form=close_form, period=period or "",
        names=_names([s.organization_id for s in items] + [s.exchange_id for s in items]),
        today=business_calendar(db_session()).day_of(utcnow())), status


@storefront.get("/statements")
@signed_in("billing:read")
def statement_list(principal: Principal):
    return _render_queue(principal)


@storefront.post("/statements/close")
@signed_in("statements:manage")
def close_statement_period(principal: Principal):
    form = ClosePeriodForm()
    if form.validate_on_submit():
        try:
            closed = workflow.close_period(db_session(), form.period.data, actor=principal,
                                           settings=billing_settings())
        except REFUSALS as exc:
            form_error(form, exc)
        else:
            flash(ngettext("Period %(period)s closed: %(num)d statement.",
                           "Period %(period)s closed: %(num)d statements.", len(closed),
                           period=form.period.data), "success")
            return redirect(url_for("storefront.statement_list", period=form.period.data))
    return _render_queue(principal, form, 422)


@storefront.get("/statements/participants/<int:organization_id>")
@signed_in("billing:read")
def participant_statements(principal: Principal, organization_id: int):
    history = workflow.participant_history(db_session(), principal, organization_id)
    participant = db_session().get(Organization, organization_id)
    if participant is None:
        raise NotFound(_("No such participant."))
    return render_template("statements/participant.html", participant=participant,
                           statements=history, names=_names(s.exchange_id for s in history))


# One statement ----------------------------------------------------------------------------------

def _actions(principal: Principal, statement: SettlementStatement) -> set[str]:
    """The steps the page offers (``billing.settlement.workflow`` decides again when one is taken)."""
    reviewer = principal.can("statements:manage") and oversees(principal, statement.exchange_id)
    own = statement.organization_id == principal.organization_id
    actions = set()
    if reviewer:
        actions |= {StatementStatus.DRAFT: {"issue"}, StatementStatus.ISSUED: {"review"},
                    StatementStatus.UNDER_REVIEW: {"approve"},
                    StatementStatus.DISPUTED: {"resolve"}}.get(statement.status, set())
        if statement.status == StatementStatus.APPROVED and principal.is_platform and \
                principal.can("payments:manage") and principal.user_id != statement.approved_by_id:
            actions.add("pay")
    if statement.status in (StatementStatus.ISSUED, StatementStatus.UNDER_REVIEW) and (
            reviewer or (own and principal.is_finance)):
        actions.add("dispute")
    return actions


def _forms(statement: SettlementStatement, failed: dict | None = None) -> dict:
    forms = {"dispute": DisputeForm(formdata=None, prefix="dispute"),
             "resolve": ResolveForm(formdata=None, prefix="resolve"),
             "pay": PayStatementForm(formdata=None, prefix="pay")}
    forms.update(failed or {})
    return forms


def _render_statement(principal: Principal, statement: SettlementStatement, *,
                      failed: dict | None = None, error: str | None = None, status: int = 200):
    names = _names([statement.organization_id, statement.exchange_id])
    # Babel parses zh_CN as zh_Hans_CN, so compare the language alone.
    parties = exports.parties_of(db_session(), statement, zh=is_zh())
    return render_template(
        "statements/statement.html", statement=statement, forms=_forms(statement, failed),
        actions=_actions(principal, statement), error=error, names=names,
        adjustments=workflow.adjustments_of(statement), reason_codes=REASON_CODE_LABELS,
        decision_form=DecisionForm(formdata=None),
        datasets=parties.dataset_titles, staff=principal.can("statements:manage"),
        is_maker=principal.user_id in workflow.makers_of(db_session(), statement)), status


@storefront.get("/statements/<int:statement_id>")
@signed_in("billing:read")
def statement_page(principal: Principal, statement_id: int):
    statement = workflow.get_statement(db_session(), principal, statement_id)
    return _render_statement(principal, statement)


def _take(principal: Principal, statement_id: int, step, form: BoundedForm | None, name: str,
          done: str, *args_of_form):
    """Run one step of the statement's review from a posted form, or re-render with why not
    (the service's status: 403 for the maker approving, 409 for a step out of turn)."""
    session_ = db_session()
    statement = workflow.get_statement(session_, principal, statement_id)
    if form is None:  # a button: nothing to fill in but the CSRF token
        if not ActionForm().validate_on_submit():
            abort(400)
    elif not form.validate_on_submit():
        return _render_statement(principal, statement, failed={name: form},
                                 error=_("Check the form."), status=422)
    try:
        step(session_, principal, statement, *[arg(form) for arg in args_of_form])
    except (*REFUSALS, PricingError) as exc:
        # What the step changed before refusing is rolled back with the request; show the
        # statement as it is stored.
        session_.expire(statement)
        detail = exc.detail if hasattr(exc, "detail") else str(exc)
        if form is not None:
            if isinstance(exc, PricingError):  # more decimals than the currency has
                form.amount.errors = list(form.amount.errors) + [detail]
            else:
                form_error(form, exc)
        return _render_statement(principal, statement, failed={name: form} if form else None,
                                 error=detail, status=getattr(exc, "status", 422))
    flash(done, "success")
    return redirect(url_for("storefront.statement_page", statement_id=statement.id))


@storefront.post("/statements/<int:statement_id>/issue")
@signed_in("statements:manage")
def issue_statement(principal: Principal, statement_id: int):
    return _take(principal, statement_id, workflow.issue, None, "issue",
                 _("Statement issued to the participant."))


@storefront.post("/statements/<int:statement_id>/review")
@signed_in("statements:manage")
def review_statement(principal: Principal, statement_id: int):
    return _take(principal, statement_id, workflow.start_review, None, "review",
                 _("Statement submitted for approval."))


@storefront.post("/statements/<int:statement_id>/approve")
@signed_in("statements:manage")
def approve_statement(principal: Principal, statement_id: int):
    return _take(principal, statement_id, workflow.approve, None, "approve",
                 _("Statement approved."))


@storefront.post("/statements/<int:statement_id>/dispute")
@signed_in("billing:read")
def dispute_statement(principal: Principal, statement_id: int):
    return _take(principal, statement_id, workflow.dispute, DisputeForm(prefix="dispute"),
                 "dispute", _("Statement disputed."), lambda form: form.reason.data)


def _resolve(session_, principal: Principal, statement: SettlementStatement, form: ResolveForm):
    adjustment = workflow.resolve_dispute(
        session_, principal, statement, Money(form.amount.data, statement.currency),
        form.reason.data, reason_code=form.reason_code.data,
        lines=[int(n) for n in re.findall(r"\d+", form.lines.data or "")],
        document=form.document.data or "", settings=billing_settings())
    if adjustment is not None and adjustment.status == AdjustmentStatus.PENDING_APPROVAL:
        flash(_("The adjustment waits for a second person's approval before it is posted."),
              "success")


@storefront.post("/statements/<int:statement_id>/resolve")
@signed_in("statements:manage")
def resolve_statement_dispute(principal: Principal, statement_id: int):
    return _take(principal, statement_id, _resolve, ResolveForm(prefix="resolve"), "resolve",
                 _("Dispute resolved."), lambda form: form)


def _decide_adjustment(principal: Principal, adjustment_id: int, approve: bool):
    session_ = db_session()
    adjustment = workflow.get_adjustment(session_, principal, adjustment_id)
    statement = session_.get(SettlementStatement, adjustment.statement_id)
    form = DecisionForm()
    if not form.validate_on_submit():
        return _render_statement(principal, statement, error=_("Check the form."), status=422)
    try:
        workflow.decide_adjustment(session_, principal, adjustment, approve=approve,
                                     note=form.note.data or "")
    except REFUSALS as exc:
        session_.expire(adjustment)
        return _render_statement(principal, statement, error=exc.detail,
                                 status=getattr(exc, "status", 422))
    flash(_("Adjustment posted.") if approve else _("Adjustment rejected."), "success")
    return redirect(url_for("storefront.statement_page", statement_id=statement.id))


@storefront.post("/statements/adjustments/<int:adjustment_id>/confirm")
@signed_in("statements:manage")
def confirm_adjustment(principal: Principal, adjustment_id: int):
    return _decide_adjustment(principal, adjustment_id, approve=True)


@storefront.post("/statements/adjustments/<int:adjustment_id>/reject")
@signed_in("statements:manage")
def reject_adjustment(principal: Principal, adjustment_id: int):
    return _decide_adjustment(principal, adjustment_id, approve=False)


def _pay(session_, principal: Principal, statement: SettlementStatement, bank_reference: str):
    return workflow.pay(session_, principal, statement, bank_reference=bank_reference)


@storefront.post("/statements/<int:statement_id>/pay")
@signed_in("statements:manage")
def pay_statement(principal: Principal, statement_id: int):
    return _take(principal, statement_id, _pay, PayStatementForm(prefix="pay"), "pay",
                 _("Statement recorded as paid."), lambda form: form.bank_reference.data)


# Reconciliation ---------------------------------------------------------------------------------

@storefront.get("/reconciliation")
@signed_in("statements:manage")
def statement_reconciliation(principal: Principal):
    """The period's figures; when the card processor does not answer, the ledger's figures
    without its comparison, the reason shown above them, and a 502."""
    period = _period_arg() or last_closed_month(db_session())
    processor_error, status = None, 200
    try:
        figures = reconciliation.reconcile(db_session(), period, actor=principal,
                                           gateway=gateway())
    except Forbidden:
        raise Forbidden(_("The reconciliation covers the whole platform: its staff only.")) \
            from None
    except GatewayUnavailable:
        figures = reconciliation.reconcile(db_session(), period, actor=principal)
        processor_error, status = _("The card processor did not answer, so card payments are "
                                    "not compared with it below; try again shortly."), 502
    return render_template("statements/reconciliation.html", period=period, figures=figures,
                           names=exports.organization_names(db_session(), figures),
                           processor_error=processor_error,
                           anomalies=anomalies.list_anomalies(db_session(), principal).page(
                               PageRequest(cursor=request.args.get("cursor")))), status

