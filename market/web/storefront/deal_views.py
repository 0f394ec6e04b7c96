"""Storefront pages for custom data (定制模式): a buyer's demands and the quotes on them (and
cancelling a demand), the open demands suppliers quote on (and withdrawing a quote), and a
deal's milestones, delivery and acceptance.

Thin views over the same services as ``market.web.api.deals``: parse a form, call one service,
render; a service's error is shown on the page the form came from.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import select

from billing import deals
from billing.deals import DIMENSIONS
from billing.models import Deal, DemandStatus
from market.accounts.authz import Principal
from market.catalog.models import Dataset
from market.catalog.taxonomy import MODALITIES, SECTORS
from market.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from market.web.storefront.blueprint import storefront
from market.web.storefront.common import dataset_title, form_error
from market.web.storefront.deal_forms import (
    DIMENSION_LABELS, AcceptDeliveryForm, AcceptQuoteForm, CancelDemandForm, DeliveryForm,
    DemandForm, DisputeForm, QuoteForm, WithdrawQuoteForm,
)
from market.web.storefront.views import signed_in
from market.web.http import db_session, gateway

SERVICE_ERRORS = (InvalidInput, Conflict, Forbidden, NotFound)


def _term(vocabulary, code: str) -> str:
    term = vocabulary.get(code)
    return term.label(str(get_locale())) if term else code


def _page_context() -> dict:
    return {"sector_label": lambda code: _term(SECTORS, code),
            "modality_label": lambda code: _term(MODALITIES, code),
            "dimension_labels": DIMENSION_LABELS, "dataset_title": dataset_title,
            "quote_terms": deals.quote_terms, "gross_total": deals.gross_total,
            "over_budget": deals.over_budget}


def _field_map(prefix: str, service_prefix: str) -> dict[str, str]:
    return {f"{service_prefix}.{d}": f"{prefix}_{d}" for d in DIMENSIONS}


DEMAND_FIELDS = {"budget.amount": "budget_amount", "budget.currency": "currency",
                 "budget": "budget_amount", "thresholds": "threshold_overall",
                 **_field_map("threshold", "thresholds")}
QUOTE_FIELDS = {"milestones": "acceptance", "criteria": "criterion_overall",
                **_field_map("criterion", "criteria")}


# Demands (the buyer) ----------------------------------------------------------------------------

def _render_demands(principal: Principal, form: DemandForm | None = None, status: int = 200):
    return render_template("deals/demands.html",
                           demands=deals.list_own_demands(db_session(), principal).all(),
                           form=form or DemandForm(formdata=None),
                           **_page_context()), status


@storefront.get("/demands")
@signed_in("billing:read")
def demand_list(principal: Principal):
    return _render_demands(principal)


@storefront.post("/demands")
@signed_in("billing:write")
def post_demand(principal: Principal):
    form = DemandForm()
    if form.validate_on_submit():
        values = {"title": form.title.data, "description": form.description.data or "",
                  "sector": form.sector.data, "modality": form.modality.data,
                  "volume": form.volume.data, "thresholds": form.thresholds(),
                  "budget": {"amount": format(form.budget_amount.data, "f"),
                             "currency": form.currency.data.strip().upper()},
                  "deadline": form.deadline.data}
        try:
            demand = deals.post_demand(db_session(), principal, values)
        except SERVICE_ERRORS as exc:
            form_error(form, exc, DEMAND_FIELDS)
        else:
            flash(_("Demand posted: suppliers can now quote on it."), "success")
            return redirect(url_for("storefront.demand_page", demand_id=demand.id))
    return _render_demands(principal, form, 422)


def _deal_of(demand_id: int, principal: Principal) -> Deal | None:
    deal = db_session().scalar(select(Deal).where(Deal.demand_id == demand_id))
    if deal is None or principal.organization_id not in (deal.buyer_id, deal.supplier_id):
        return None
    return deal


def _render_demand(principal: Principal, demand, *, error: str | None = None,
                   cancel: CancelDemandForm | None = None,
                   withdraw: WithdrawQuoteForm | None = None, status: int = 200):
    quotes = deals.visible_quotes(demand, principal)
    ids = {q.dataset_id for q in quotes}
    datasets = {d.id: d for d in db_session().scalars(
        select(Dataset).where(Dataset.id.in_(ids)))} if ids else {}
    buyer = demand.organization_id == principal.organization_id
    accept_forms = {q.id: AcceptQuoteForm(formdata=None, prefix=f"quote-{q.id}",
                                          card_enabled=gateway() is not None)
                    for q in quotes} if buyer else {}
    own_quote = next((q for q in quotes if q.organization_id == principal.organization_id),
                     None)
    return render_template("deals/demand.html", demand=demand, quotes=quotes,
                           datasets=datasets, buyer=buyer, accept_forms=accept_forms,
                           deal=_deal_of(demand.id, principal), error=error,
                           own_quote=own_quote,
                           cancel_form=cancel or CancelDemandForm(formdata=None, prefix="cancel"),
                           withdraw_form=withdraw or WithdrawQuoteForm(formdata=None,
                                                                       prefix="withdraw"),
                           **_page_context()), status


@storefront.get("/demands/<int:demand_id>")
@signed_in("billing:read")
def demand_page(principal: Principal, demand_id: int):
    return _render_demand(principal, deals.get_demand(db_session(), principal, demand_id))


@storefront.post("/quotes/<int:quote_id>/accept")
@signed_in("billing:write")
def accept_quote(principal: Principal, quote_id: int):
    session_ = db_session()
    quote = deals.get_quote_for_buyer(session_, principal, quote_id)
    form = AcceptQuoteForm(prefix=f"quote-{quote.id}", card_enabled=gateway() is not None)
    if not form.validate_on_submit():
        return _render_demand(principal, quote.demand,
                              error=_("Choose how you will pay the milestones."), status=422)
    try:
        deal = deals.accept_quote(session_, principal, quote,
                                  payment_method=form.payment_method.data)
    except SERVICE_ERRORS as exc:
        return _render_demand(principal, quote.demand, error=exc.detail, status=exc.status)
    flash(_("Quote accepted: pay the deposit to start the work."), "success")
    return redirect(url_for("storefront.deal_page", deal_id=deal.id))


@storefront.post("/demands/<int:demand_id>/cancel")
@signed_in("billing:write")
def cancel_demand(principal: Principal, demand_id: int):
    session_ = db_session()
    demand = deals.get_demand(session_, principal, demand_id, for_update=True)
    form = CancelDemandForm(prefix="cancel")
    if form.validate_on_submit():
        try:
            deals.cancel_demand(session_, principal, demand, reason=form.reason.data)
        except SERVICE_ERRORS as exc:
            if exc.field != "reason":  # no longer open, or not the buyer's: said on the page
                return _render_demand(principal, demand, error=exc.detail, status=exc.status)
            form_error(form, exc)
        else:
            flash(_("Demand cancelled: it takes no more quotes, and the quotes awaiting your "
                    "decision were declined."), "success")
            return redirect(url_for("storefront.demand_page", demand_id=demand.id))
    return _render_demand(principal, demand, cancel=form, status=422)


# Open demands (suppliers) -----------------------------------------------------------------------

def _own_datasets(principal: Principal) -> list[tuple[Dataset, str]]:
    return [(d, dataset_title(d)) for d in db_session().scalars(
        select(Dataset).where(Dataset.organization_id == principal.organization_id)
        .order_by(Dataset.id))]


def _quote_form(principal: Principal, demand_id: int, *, from_request: bool,
                datasets=None) -> QuoteForm:
    extra = {} if from_request else {"formdata": None}
    return QuoteForm(prefix=f"demand-{demand_id}",
                     datasets=datasets if datasets is not None else _own_datasets(principal),
                     **extra)


def _render_open_demands(principal: Principal, failed: tuple[int, QuoteForm] | None = None,
                         status: int = 200):
    open_demands = deals.list_open_demands(db_session(), principal).all()
    datasets = _own_datasets(principal)
    quoted = {d.id for d in open_demands
              if any(q.organization_id == principal.organization_id for q in d.quotes)}
    forms = {d.id: (failed[1] if failed and failed[0] == d.id else
                    _quote_form(principal, d.id, from_request=False, datasets=datasets))
             for d in open_demands if d.id not in quoted}
    return render_template("deals/open_demands.html", demands=open_demands, forms=forms,
                           quoted=quoted, has_datasets=bool(datasets),
                           **_page_context()), status


@storefront.get("/demands/open")
@signed_in("deals:supply")
def open_demands(principal: Principal):
    return _render_open_demands(principal)


@storefront.post("/demands/<int:demand_id>/quotes")
@signed_in("deals:supply")
def submit_quote(principal: Principal, demand_id: int):
    session_ = db_session()
    demand = deals.get_demand(session_, principal, demand_id)
    form = _quote_form(principal, demand.id, from_request=True)
    if form.validate_on_submit():
        values = {"dataset_id": form.dataset_id.data,
                  "milestones": form.milestones(demand.currency),
                  "criteria": form.criteria(), "note": form.note.data or ""}
        try:
            deals.submit_quote(session_, principal, demand, values)
        except SERVICE_ERRORS as exc:
            form_error(form, exc, QUOTE_FIELDS)
        else:
            flash(_("Quote sent to the buyer."), "success")
            return redirect(url_for("storefront.demand_page", demand_id=demand.id))
    if demand.status != DemandStatus.OPEN or demand.organization_id == principal.organization_id:
        return _render_demand(principal, demand, error="; ".join(
            form.form_errors) or _("The demand takes no more quotes."), status=409)
    return _render_open_demands(principal, failed=(demand.id, form), status=422)


@storefront.post("/quotes/<int:quote_id>/withdraw")
@signed_in("deals:supply")
def withdraw_quote(principal: Principal, quote_id: int):
    session_ = db_session()
    quote = deals.get_quote(session_, principal, quote_id)
    form = WithdrawQuoteForm(prefix="withdraw")
    if form.validate_on_submit():
        try:
            deals.withdraw_quote(session_, principal, quote, reason=form.reason.data or "")
        except SERVICE_ERRORS as exc:
            if exc.field != "reason":  # decided on already, or not this supplier's quote
                return _render_demand(principal, quote.demand, error=exc.detail,
                                      status=exc.status)
            form_error(form, exc)
        else:
            flash(_("Quote withdrawn: the buyer can no longer accept it."), "success")
            return redirect(url_for("storefront.demand_page", demand_id=quote.demand_id))
    return _render_demand(principal, quote.demand, withdraw=form, status=422)


# Deals (both parties) ---------------------------------------------------------------------------

def _render_deal(principal: Principal, deal: Deal, *, delivery: DeliveryForm | None = None,
                 accept: AcceptDeliveryForm | None = None, dispute: DisputeForm | None = None,
                 status: int = 200):
    session_ = db_session()
    summary = deals.deal_summary(session_, deal)
    return render_template(
        "deals/deal.html", deal=deal, summary=summary,
        dataset=session_.get(Dataset, deal.dataset_id),
        buyer=principal.organization_id == deal.buyer_id,
        supplier=principal.organization_id == deal.supplier_id,
        delivery_form=delivery or DeliveryForm(formdata=None),
        accept_form=accept or AcceptDeliveryForm(formdata=None),
        dispute_form=dispute or DisputeForm(formdata=None),
        **_page_context()), status


@storefront.get("/deals/<int:deal_id>")
@signed_in("billing:read")
def deal_page(principal: Principal, deal_id: int):
    return _render_deal(principal, deals.get_deal(db_session(), principal, deal_id))


def _deal_step(principal: Principal, deal_id: int, form, form_name: str, step, done: str):
    """One party's step on a deal from its form: the deal locked, ``step(session, deal, form)``
    taken, and back to the deal page; a refused step shows the page again with the form's
    errors."""
    session_ = db_session()
    deal = deals.get_deal(session_, principal, deal_id, for_update=True)
    if form.validate_on_submit():
        try:
            step(session_, deal, form)
        except SERVICE_ERRORS as exc:
            form_error(form, exc)
        else:
            flash(done, "success")
            return redirect(url_for("storefront.deal_page", deal_id=deal.id))
    return _render_deal(principal, deal, status=422, **{form_name: form})


@storefront.post("/deals/<int:deal_id>/deliver")
@signed_in("deals:supply")
def deliver(principal: Principal, deal_id: int):
    return _deal_step(
        principal, deal_id, DeliveryForm(), "delivery",
        lambda session_, deal, form: deals.deliver(session_, principal, deal,
                                                   version_number=form.version.data),
        _("Delivered: the acceptance check has run."))


@storefront.post("/deals/<int:deal_id>/accept")
@signed_in("billing:write")
def accept_delivery(principal: Principal, deal_id: int):
    return _deal_step(
        principal, deal_id, AcceptDeliveryForm(), "accept",
        lambda session_, deal, form: deals.accept_delivery(
            session_, principal, deal, waiver_reason=form.waiver_reason.data or None),
        _("Delivery accepted: the acceptance payment is now due."))


@storefront.post("/deals/<int:deal_id>/dispute")
@signed_in("billing:write")
def dispute_deal(principal: Principal, deal_id: int):
    return _deal_step(
        principal, deal_id, DisputeForm(), "dispute",
        lambda session_, deal, form: deals.dispute(session_, principal, deal,
                                                   reason=form.reason.data),
        _("Deal disputed."))
