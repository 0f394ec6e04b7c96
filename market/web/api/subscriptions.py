"""API: subscriptions — start one (the first period is paid up front), change plan, cancel at
the period end or resume."""

from __future__ import annotations

from flask import url_for
from marshmallow import Schema, fields, validate

from billing import subscriptions
from billing.orders import PAYMENT_METHODS
from market.accounts.authz import Principal
from market.web.api.billing_schemas import OrderSchema, TaxFromTheRecord
from market.web.api.blueprint import api
from market.web.api.endpoint import Created
from market.web.api.pagination import PageQuerySchema, page_request, page_schema
from market.web.http import billing_settings, db_session

SUBSCRIBING = ["Subscriptions"]


class SubscribeSchema(TaxFromTheRecord):
    offer_id = fields.Integer(required=True)
    payment_method = fields.String(required=True, validate=validate.OneOf(PAYMENT_METHODS))
    budget_line_id = fields.Integer(load_default=None, allow_none=True, metadata={
        "description": "The budget line the subscription is charged to (required when the "
                       "organization has a budget for the year and currency)."})
    purchase_order_number = fields.String(load_default=None, allow_none=True,
                                          validate=validate.Length(min=1, max=64))


class ChangePlanSchema(TaxFromTheRecord):
    offer_id = fields.Integer(required=True, metadata={
        "description": "The new plan: dearer ones apply now, prorated; cheaper ones at the "
                       "period's end."})


class SubscriptionSchema(Schema):
    id = fields.Integer()
    dataset_id = fields.Integer()
    offer_id = fields.Integer()
    pending_offer_id = fields.Integer(allow_none=True)
    status = fields.String()
    payment_method = fields.String()
    current_period_start = fields.Date()
    current_period_end = fields.Date(metadata={"description": "The first day not covered."})
    included_tokens = fields.Integer()
    rollover_tokens = fields.Integer()
    tokens_used = fields.Integer()
    tokens_remaining = fields.Integer()
    cancel_at_period_end = fields.Boolean()
    dunning_attempts = fields.Integer()
    next_retry_at = fields.AwareDateTime(allow_none=True)
    created_at = fields.AwareDateTime()
    cancelled_at = fields.AwareDateTime(allow_none=True)


class SubscriptionStartSchema(Schema):
    subscription = fields.Nested(SubscriptionSchema)
    order = fields.Nested(OrderSchema, metadata={"description": "The first period's order: "
                                                                "pay it to activate."})


class PlanChangeSchema(Schema):
    subscription = fields.Nested(SubscriptionSchema)
    outcome = fields.String(metadata={"description": "upgraded, awaiting_payment (pay the "
                                                     "order), scheduled or kept."})
    order = fields.Nested(OrderSchema, allow_none=True)


@api.operation("/subscriptions", "POST", summary="Subscribe to a dataset's plan",
               permission="billing:write", body=SubscribeSchema,
               response=SubscriptionStartSchema, status=201, tags=SUBSCRIBING,
               errors=(404, 409, 422))
def subscribe(principal: Principal, body: dict):
    """The subscription starts ``incomplete``; paying its first order (``POST
    /orders/{id}/pay``) makes it active and grants the period's tokens and access."""
    session = db_session()
    sub = subscriptions.subscribe(session, principal, body["offer_id"],
                                  payment_method=body["payment_method"],
                                  settings=billing_settings(),
                                  budget_line_id=body["budget_line_id"],
                                  purchase_order_number=body["purchase_order_number"])
    order = subscriptions.first_order(session, sub)
    return Created({"subscription": sub, "order": order},
                   url_for("api.get_subscription", subscription_id=sub.id))


@api.operation("/subscriptions", "GET", summary="The organization's subscriptions",
               permission="billing:read", query=PageQuerySchema,
               response=page_schema(SubscriptionSchema), tags=SUBSCRIBING)
def list_subscriptions(principal: Principal, query: dict):
    """Newest first."""
    return subscriptions.list_subscriptions(db_session(), principal).page(page_request(query))


@api.operation("/subscriptions/<int:subscription_id>", "GET", summary="A subscription",
               permission="billing:read", response=SubscriptionSchema, tags=SUBSCRIBING,
               errors=(404,))
def get_subscription(principal: Principal, subscription_id: int):
    return subscriptions.get_subscription(db_session(), principal, subscription_id)


@api.operation("/subscriptions/<int:subscription_id>/change-plan", "POST",
               summary="Upgrade or downgrade", permission="billing:write",
               body=ChangePlanSchema, response=PlanChangeSchema, tags=SUBSCRIBING,
               errors=(404, 409, 422))
def change_plan(principal: Principal, subscription_id: int, body: dict):
    change = subscriptions.change_plan(db_session(), principal, subscription_id,
                                       body["offer_id"])
    return {"subscription": change.subscription, "outcome": change.outcome,
            "order": change.order}


@api.operation("/subscriptions/<int:subscription_id>/cancel", "POST",
               summary="Cancel at the end of the current period", permission="billing:write",
               response=SubscriptionSchema, tags=SUBSCRIBING, errors=(404, 409))
def cancel_subscription(principal: Principal, subscription_id: int):
    return subscriptions.cancel(db_session(), principal, subscription_id)


@api.operation("/subscriptions/<int:subscription_id>/resume", "POST",
               summary="Undo a cancellation before the period ends", permission="billing:write",
               response=SubscriptionSchema, tags=SUBSCRIBING, errors=(404, 409))
def resume_subscription(principal: Principal, subscription_id: int):
    return subscriptions.resume(db_session(), principal, subscription_id)
