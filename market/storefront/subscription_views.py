"""Storefront pages for subscriptions: subscribe from the dataset page (the first period's order
is then paid on its order page), the organization's subscriptions, cancel and resume.

Thin views over the same services as ``market.api.subscriptions``.
"""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select

from billing import subscriptions
from market.accounts.authz import Principal
from market.catalog.models import Dataset, Offer
from market.errors import Conflict, InvalidInput, NotFound
from market.storefront.billing_views import (
    _dataset_title, _gateway, _require_action_form, _same_site, _settings,
)
from market.storefront.blueprint import storefront
from market.storefront.deal_forms import SubscribeForm
from market.storefront.views import signed_in
from market.web import db_session


@storefront.app_context_processor
def _subscription_context():
    """Whether the dataset page's subscribe form offers card payment."""
    return {"card_payments_enabled": current_app.extensions.get("market.gateway") is not None}


@storefront.post("/subscriptions")
@signed_in("billing:write")
def subscribe(principal: Principal):
    form = SubscribeForm(card_enabled=_gateway() is not None)
    back = (request.referrer if _same_site(request.referrer)
            else url_for("storefront.subscription_list"))
    if not form.validate_on_submit():
        flash(_("Choose a plan and how you will pay."), "error")
        return redirect(back)
    session_ = db_session()
    try:
        sub = subscriptions.subscribe(session_, principal, form.offer_id.data,
                                      payment_method=form.payment_method.data,
                                      settings=_settings())
    except (InvalidInput, Conflict, NotFound) as exc:
        flash(exc.detail, "error")
        return redirect(back)
    order = subscriptions.first_order(session_, sub)
    flash(_("Subscription started: pay order %(number)s to activate it.", number=order.number),
          "success")
    return redirect(url_for("storefront.order_page", order_id=order.id))


def _render_subscriptions(principal: Principal, status: int = 200):
    session_ = db_session()
    subs = subscriptions.list_subscriptions(session_, principal)
    dataset_ids = {s.dataset_id for s in subs}
    offer_ids = {s.offer_id for s in subs} | {s.pending_offer_id for s in subs
                                             if s.pending_offer_id}
    datasets = {d.id: d for d in session_.scalars(
        select(Dataset).where(Dataset.id.in_(dataset_ids)))} if dataset_ids else {}
    offers = {o.id: o for o in session_.scalars(
        select(Offer).where(Offer.id.in_(offer_ids)))} if offer_ids else {}
    return render_template("billing/subscriptions.html", subscriptions=subs,
                           datasets=datasets, offers=offers,
                           dataset_title=_dataset_title), status


@storefront.get("/subscriptions")
@signed_in("billing:read")
def subscription_list(principal: Principal):
    return _render_subscriptions(principal)


@storefront.post("/subscriptions/<int:subscription_id>/cancel")
@signed_in("billing:write")
def cancel_subscription(principal: Principal, subscription_id: int):
    _require_action_form()
    try:
        sub = subscriptions.cancel(db_session(), principal, subscription_id)
    except Conflict as exc:
        flash(exc.detail, "error")
        return _render_subscriptions(principal, 409)
    if sub.status == "cancelled":
        flash(_("Subscription cancelled."), "success")
    else:
        flash(_("The subscription ends on %(date)s; resume it before then to keep it.",
                date=sub.current_period_end.isoformat()), "success")
    return redirect(url_for("storefront.subscription_list"))


@storefront.post("/subscriptions/<int:subscription_id>/resume")
@signed_in("billing:write")
def resume_subscription(principal: Principal, subscription_id: int):
    _require_action_form()
    try:
        subscriptions.resume(db_session(), principal, subscription_id)
    except Conflict as exc:
        flash(exc.detail, "error")
        return _render_subscriptions(principal, 409)
    flash(_("Subscription resumed."), "success")
    return redirect(url_for("storefront.subscription_list"))
