"""Storefront pages for subscriptions: subscribe (a confirmation page shows the plan and takes
how it is paid and the budget line it is charged to; the first period's order is then paid on
its order page), the organization's subscriptions, cancel and resume.

Thin views over the same services as ``market.web.api.subscriptions``.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select

from billing import orders, subscriptions
from billing.budgets import lines as budgets
from billing.models import SubscriptionStatus
from market.accounts.authz import Principal
from market.catalog.models import Dataset, Offer
from market.core.db import business_calendar, utcnow
from market.core.errors import Conflict, InvalidInput, NotFound
from market.web.storefront.billing_forms import SubscriptionCheckoutForm
from market.web.storefront.blueprint import storefront
from market.web.storefront.common import (
    budget_lines, dataset_title, form_error, require_action_form, same_site,
)
from market.web.storefront.deal_forms import SubscribeForm
from market.web.storefront.views import signed_in
from market.web.http import billing_settings, db_session, gateway
from pricing.quotes import quote

SERVICE_ERRORS = (InvalidInput, Conflict, NotFound)
# The plan is a hidden field of the confirmation form: its errors are the form's.
CONFIRMATION_FIELDS = {"offer_id": None}


def _fiscal_year() -> int:
    """This fiscal year on the business calendar."""
    return business_calendar(db_session()).year_of(utcnow())


@storefront.app_context_processor
def _subscription_context():
    """Whether the dataset page's subscribe form offers card payment."""
    return {"card_payments_enabled": gateway() is not None}


def _plan_offer(principal: Principal, offer_id: int | None) -> Offer:
    """A subscription plan the principal may subscribe to (404, 409 or 422 otherwise)."""
    if offer_id is None:
        raise NotFound(_("No such offer."))
    return orders.sellable_offer(db_session(), principal, offer_id, kinds=("subscription",),
                                 field="offer_id")


def _confirmation_form(principal: Principal, offer: Offer, **kwargs) -> SubscriptionCheckoutForm:
    currency = subscriptions.plan_of(offer).currency
    return SubscriptionCheckoutForm(card_enabled=gateway() is not None,
                                    budget_lines=budget_lines(principal, currency), **kwargs)


def _render_confirmation(principal: Principal, offer: Offer, form: SubscriptionCheckoutForm,
                         status: int = 200):
    plan = subscriptions.plan_of(offer)
    budget = budgets.budget_for(db_session(), principal.organization_id, _fiscal_year(),
                                plan.currency)
    return render_template("billing/subscribe.html", offer=offer, plan=plan,
                           priced=quote(plan), budget=budget, form=form,
                           title=dataset_title(offer.dataset),
                           card_enabled=gateway() is not None), status


@storefront.get("/subscriptions/new")
@signed_in("billing:write")
def new_subscription(principal: Principal):
    """The confirmation page: the plan, and the form that subscribes to it."""
    offer = _plan_offer(principal, request.args.get("offer_id", type=int))
    method = request.args.get("payment_method")
    form = _confirmation_form(principal, offer, formdata=None, offer_id=offer.id,
                              **({"payment_method": method} if method else {}))
    return _render_confirmation(principal, offer, form)


@storefront.post("/subscriptions")
@signed_in("billing:write")
def subscribe(principal: Principal):
    if "confirmed" in request.form:
        return _subscribe_confirmed(principal)
    return _subscribe_from_dataset_page(principal)


def _subscribe_confirmed(principal: Principal):
    """The confirmation page's post: a refusal is shown on that page, at its field (the 422
    rolls back whatever the service wrote before refusing)."""
    offer = _plan_offer(principal, request.form.get("offer_id", type=int))
    form = _confirmation_form(principal, offer)
    if form.validate_on_submit():
        session_ = db_session()
        try:
            sub = subscriptions.subscribe(
                session_, principal, offer.id, payment_method=form.payment_method.data,
                settings=billing_settings(), budget_line_id=form.budget_line_id.data,
                purchase_order_number=form.purchase_order_number.data)
        except SERVICE_ERRORS as exc:
            form_error(form, exc, CONFIRMATION_FIELDS)
        else:
            return _started(session_, sub)
    return _render_confirmation(principal, offer, form, 422)


def _subscribe_from_dataset_page(principal: Principal):
    """The dataset page's post (a plan and how it is paid, no budget line): an organization
    with a budget for this year in the plan's currency is sent to the confirmation page to
    choose the line; any other subscribes at once."""
    form = SubscribeForm(card_enabled=gateway() is not None)
    back = (request.referrer if same_site(request.referrer)
            else url_for("storefront.subscription_list"))
    if not form.validate_on_submit():
        flash(_("Choose a plan and how you will pay."), "error")
        return redirect(back)
    session_ = db_session()
    offer = session_.get(Offer, form.offer_id.data)
    if offer is not None and offer.kind == "subscription":
        plan = subscriptions.plan_of(offer)
        if budgets.budget_for(session_, principal.organization_id, _fiscal_year(),
                              plan.currency) is not None:
            return redirect(url_for("storefront.new_subscription", offer_id=offer.id,
                                    payment_method=form.payment_method.data))
    try:
        # A savepoint: the redirect below commits the request, and a refusal must leave
        # nothing of the subscription behind.
        with session_.begin_nested():
            sub = subscriptions.subscribe(session_, principal, form.offer_id.data,
                                          payment_method=form.payment_method.data,
                                          settings=billing_settings())
    except SERVICE_ERRORS as exc:
        flash(exc.detail, "error")
        return redirect(back)
    return _started(session_, sub)


def _started(session_, sub):
    order = subscriptions.first_order(session_, sub)
    flash(_("Subscription started: pay order %(number)s to activate it.", number=order.number),
          "success")
    # Set by the service on the order it placed (the same object, from the session's map).
    for warning in getattr(order, "budget_warnings", ()):
        flash(warning, "warning")
    return redirect(url_for("storefront.order_page", order_id=order.id))


def _render_subscriptions(principal: Principal, status: int = 200):
    session_ = db_session()
    subs = subscriptions.list_subscriptions(session_, principal).all()
    dataset_ids = {s.dataset_id for s in subs}
    offer_ids = {s.offer_id for s in subs} | {s.pending_offer_id for s in subs
                                             if s.pending_offer_id}
    datasets = {d.id: d for d in session_.scalars(
        select(Dataset).where(Dataset.id.in_(dataset_ids)))} if dataset_ids else {}
    offers = {o.id: o for o in session_.scalars(
        select(Offer).where(Offer.id.in_(offer_ids)))} if offer_ids else {}
    return render_template("billing/subscriptions.html", subscriptions=subs,
                           datasets=datasets, offers=offers,
                           dataset_title=dataset_title), status


@storefront.get("/subscriptions")
@signed_in("billing:read")
def subscription_list(principal: Principal):
    return _render_subscriptions(principal)


@storefront.post("/subscriptions/<int:subscription_id>/cancel")
@signed_in("billing:write")
def cancel_subscription(principal: Principal, subscription_id: int):
    require_action_form()
    try:
        sub = subscriptions.cancel(db_session(), principal, subscription_id)
    except Conflict as exc:
        flash(exc.detail, "error")
        return _render_subscriptions(principal, 409)
    if sub.status == SubscriptionStatus.CANCELLED:
        flash(_("Subscription cancelled."), "success")
    else:
        flash(_("The subscription ends on %(date)s; resume it before then to keep it.",
                date=sub.current_period_end.isoformat()), "success")
    return redirect(url_for("storefront.subscription_list"))


@storefront.post("/subscriptions/<int:subscription_id>/resume")
@signed_in("billing:write")
def resume_subscription(principal: Principal, subscription_id: int):
    require_action_form()
    try:
        subscriptions.resume(db_session(), principal, subscription_id)
    except Conflict as exc:
        flash(exc.detail, "error")
        return _render_subscriptions(principal, 409)
    flash(_("Subscription resumed."), "success")
    return redirect(url_for("storefront.subscription_list"))
