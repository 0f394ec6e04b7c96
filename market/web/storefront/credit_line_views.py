"""The credit lines console of platform finance: every line, a form to open or change one, and
the changes waiting for a second approver (approve or reject), over ``billing.metering.credit_lines``
exactly as the API and ``flask finance credit-line`` use it."""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from wtforms import DecimalField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange

from billing.metering import credit_lines
from billing.models import CreditLineChangeStatus
from market.accounts.authz import Principal
from market.accounts.models import Organization, OrganizationRole, User
from market.web.boundary import BoundedForm
from market.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from market.core.keyset import PageRequest
from market.web.storefront.blueprint import storefront
from market.web.storefront.common import form_error
from market.web.storefront.forms import PAYMENT_METHOD_LABELS, ActionForm
from market.web.storefront.views import signed_in
from market.web.http import billing_settings, db_session
from pricing.errors import PricingError
from pricing.money import Money


class CreditLineForm(BoundedForm):
    """Open a buyer's credit line, or change its limit or payment method."""

    organization_id = SelectField(_l("Buyer organization"), coerce=int, validate_choice=False)
    limit = DecimalField(_l("Credit limit"), places=2,
                         validators=[InputRequired(), NumberRange(min=0)])
    currency = StringField(_l("Currency"), validators=[DataRequired(), Length(min=3, max=3)])
    payment_method = SelectField(_l("Usage invoices paid by"), choices=[
        SelectChoice(method, label) for method, label in PAYMENT_METHOD_LABELS.items()])
    reason = StringField(_l("Reason"), validators=[DataRequired(), Length(max=500)])


class CreditReasonForm(BoundedForm):
    """Close a line or reject a change: the reason goes to the audit log."""

    reason = StringField(_l("Reason"), validators=[DataRequired(), Length(max=500)])


FORM_FIELDS = {"limit.currency": "currency"}


def _render(principal: Principal, *, form: CreditLineForm | None = None,
            failed: tuple[str, int, CreditReasonForm] | None = None, status: int = 200):
    session = db_session()
    lines = credit_lines.list_credit_lines(session, principal).all()
    changes_page = credit_lines.list_changes(session, principal).page(
        PageRequest(cursor=request.args.get("cursor")))
    changes = changes_page.items
    buyers = list(session.scalars(select(Organization).join(OrganizationRole).where(
        OrganizationRole.role == "buyer").order_by(Organization.name)))
    if form is None:
        form = CreditLineForm(formdata=None)
        form.currency.data = current_app.config["DEFAULT_CURRENCY"]
    form.organization_id.choices = [SelectChoice(org.id, org.name) for org in buyers]
    names = {org.id: org.name for org in session.scalars(select(Organization).where(
        Organization.id.in_({line.organization_id for line in lines}
                            | {change.organization_id for change in changes})))}
    people = {user.id: user.name for user in session.scalars(select(User).where(
        User.id.in_({c.requested_by_id for c in changes if c.requested_by_id}
                    | {c.decided_by_id for c in changes if c.decided_by_id})))}

    def reason_form(kind: str, object_id: int) -> CreditReasonForm:
        if failed is not None and failed[:2] == (kind, object_id):
            return failed[2]
        return CreditReasonForm(prefix=f"{kind}-{object_id}", formdata=None)

    return render_template(
        "billing/credit_lines.html", lines=lines, changes=changes, changes_page=changes_page,
        form=form, names=names,
        people=people, close_forms={line.id: reason_form("close", line.id) for line in lines},
        reject_forms={c.id: reason_form("reject", c.id) for c in changes
                      if c.status == CreditLineChangeStatus.PENDING},
        threshold=billing_settings().credit_line_approval_threshold or "",
        me=principal.user_id), status


@storefront.get("/finance/credit-lines")
@signed_in("credit_lines:manage")
def credit_lines_page(principal: Principal):
    return _render(principal)


@storefront.post("/finance/credit-lines")
@signed_in("credit_lines:manage")
def request_credit_line_change(principal: Principal):
    form = CreditLineForm()
    form.organization_id.choices = []
    if form.validate_on_submit():
        try:
            currency = form.currency.data.strip().upper()
            limit = Money(form.limit.data, currency)
            change = credit_lines.request_change(
                db_session(), principal, form.organization_id.data, limit=limit,
                payment_method=form.payment_method.data, reason=form.reason.data,
                approval_threshold=credit_lines.approval_threshold(billing_settings(),
                                                                   currency))
        except (InvalidInput, Conflict, NotFound) as exc:
            form_error(form, exc, FORM_FIELDS)
        except PricingError as exc:  # an unknown currency code
            form.currency.errors = list(form.currency.errors) + [str(exc)]
        else:
            if change.status == CreditLineChangeStatus.PENDING:
                flash(_("The change waits for a second finance person to approve it."),
                      "warning")
            else:
                flash(_("The credit line is changed."), "success")
            return redirect(url_for("storefront.credit_lines_page"))
    return _render(principal, form=form, status=422)


def _with_reason(principal: Principal, action: str, object_id: int, step, done: str):
    """A step that takes a reason from its form (closing a line, rejecting a change): done, or
    the page again with the form's errors."""
    form = CreditReasonForm(prefix=f"{action}-{object_id}")
    if form.validate_on_submit():
        try:
            step(db_session(), principal, object_id, reason=form.reason.data)
        except (InvalidInput, Conflict) as exc:
            form_error(form, exc)
        else:
            flash(done, "success")
            return redirect(url_for("storefront.credit_lines_page"))
    return _render(principal, failed=(action, object_id, form), status=422)


@storefront.post("/finance/credit-lines/<int:credit_line_id>/close")
@signed_in("credit_lines:manage")
def close_credit_line(principal: Principal, credit_line_id: int):
    return _with_reason(principal, "close", credit_line_id, credit_lines.close_credit_line,
                        _("The credit line is closed."))


@storefront.post("/finance/credit-line-changes/<int:change_id>/approve")
@signed_in("credit_lines:manage")
def approve_credit_line_change(principal: Principal, change_id: int):
    if not ActionForm().validate_on_submit():
        return redirect(url_for("storefront.credit_lines_page"))
    try:
        credit_lines.approve_change(db_session(), principal, change_id)
    except (Forbidden, Conflict) as exc:
        flash(exc.detail, "error")
        return redirect(url_for("storefront.credit_lines_page"))
    flash(_("Approved: the credit line is changed."), "success")
    return redirect(url_for("storefront.credit_lines_page"))


@storefront.post("/finance/credit-line-changes/<int:change_id>/reject")
@signed_in("credit_lines:manage")
def reject_credit_line_change(principal: Principal, change_id: int):
    return _with_reason(principal, "reject", change_id, credit_lines.reject_change,
                        _("The change is rejected."))

