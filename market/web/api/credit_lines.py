"""API: credit lines, run by platform finance — open, change and close a buyer organization's
postpaid credit line; a raise above ``CREDIT_LINE_APPROVAL_THRESHOLD`` waits for a second
approver (``billing.metering.credit_lines``)."""

from __future__ import annotations

from flask import url_for
from marshmallow import Schema, fields, validate

from billing.metering import credit_lines
from billing.models import CreditLineChangeStatus
from billing.orders import PAYMENT_METHODS
from market.accounts.authz import Principal
from market.web.api.billing_schemas import MoneyField, MoneyInputSchema
from market.web.api.blueprint import api
from market.web.api.endpoint import Created
from market.web.api.pagination import PageQuerySchema, page_request, page_schema
from market.web.http import billing_settings, db_session
from pricing.money import Money

CREDIT = ["Credit lines"]


class CreditLineSchema(Schema):
    id = fields.Integer()
    organization_id = fields.Integer()
    currency = fields.String()
    limit = MoneyField("limit_minor")
    used = MoneyField("used_minor", metadata={"description": "On credit, not yet paid."})
    payment_method = fields.String()
    closed_at = fields.AwareDateTime(attribute="suspended_at", allow_none=True)
    created_at = fields.AwareDateTime()


class CreditLineChangeSchema(Schema):
    id = fields.Integer()
    organization_id = fields.Integer()
    credit_line_id = fields.Integer(allow_none=True)
    kind = fields.String(metadata={"description": "open, change or close."})
    status = fields.String(metadata={
        "description": "applied, or pending until a second finance person approves it, or "
                       "rejected."})
    limit = MoneyField("limit_minor")
    limit_before = fields.Method("_limit_before")
    payment_method = fields.String()
    reason = fields.String()
    requested_by_id = fields.Integer(allow_none=True)
    requested_at = fields.AwareDateTime()
    decided_by_id = fields.Integer(allow_none=True)
    decided_at = fields.AwareDateTime(allow_none=True)
    decision_note = fields.String(allow_none=True)

    def _limit_before(self, change):
        if change.limit_before_minor is None:
            return None
        return Money.from_minor(change.limit_before_minor, change.currency).to_dict()


class CreditLineRequestSchema(Schema):
    organization_id = fields.Integer(required=True)
    limit = fields.Nested(MoneyInputSchema, required=True)
    payment_method = fields.String(load_default="bank_transfer",
                                   validate=validate.OneOf(PAYMENT_METHODS))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


class CreditLineReasonSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


class ChangeQuerySchema(PageQuerySchema):
    status = fields.String(load_default=None,
                           validate=validate.OneOf(tuple(CreditLineChangeStatus)))


@api.operation("/credit-lines", "GET", summary="Every credit line (platform finance)",
               permission="credit_lines:manage", query=PageQuerySchema,
               response=page_schema(CreditLineSchema), tags=CREDIT)
def list_credit_lines(principal: Principal, query: dict):
    """Oldest first."""
    return credit_lines.list_credit_lines(db_session(), principal).page(page_request(query))


@api.operation("/credit-lines", "POST",
               summary="Open a credit line or change its limit (platform finance)",
               permission="credit_lines:manage", body=CreditLineRequestSchema,
               response=CreditLineChangeSchema, status=201, tags=CREDIT,
               errors=(404, 409, 422))
def request_credit_line_change(principal: Principal, body: dict):
    """Applied at once (``status: applied``) unless it raises the limit by more than
    ``CREDIT_LINE_APPROVAL_THRESHOLD``: then ``pending`` until another finance person approves
    it."""
    limit = Money(body["limit"]["amount"], body["limit"]["currency"])
    change = credit_lines.request_change(
        db_session(), principal, body["organization_id"], limit=limit,
        payment_method=body["payment_method"], reason=body["reason"],
        approval_threshold=credit_lines.approval_threshold(billing_settings(),
                                                           limit.currency))
    return Created(change, url_for("api.list_credit_line_changes"))


@api.operation("/credit-lines/<int:credit_line_id>/close", "POST",
               summary="Close a credit line (platform finance)",
               permission="credit_lines:manage", body=CreditLineReasonSchema,
               response=CreditLineChangeSchema, tags=CREDIT, errors=(404, 409, 422))
def close_credit_line(principal: Principal, credit_line_id: int, body: dict):
    """No further API calls on credit; what was used is still invoiced."""
    return credit_lines.close_credit_line(db_session(), principal, credit_line_id,
                                          reason=body["reason"])


@api.operation("/credit-line-changes", "GET",
               summary="Credit line changes, newest first (platform finance)",
               permission="credit_lines:manage", query=ChangeQuerySchema,
               response=page_schema(CreditLineChangeSchema), tags=CREDIT)
def list_credit_line_changes(principal: Principal, query: dict):
    return credit_lines.list_changes(db_session(), principal,
                                     status=query["status"]).page(page_request(query))


@api.operation("/credit-line-changes/<int:change_id>/approve", "POST",
               summary="Approve a pending credit line change (a second finance person)",
               permission="credit_lines:manage", response=CreditLineChangeSchema, tags=CREDIT,
               errors=(403, 404, 409))
def approve_credit_line_change(principal: Principal, change_id: int):
    """Never by the person who asked for it (403); refused (409) when the line has changed
    since it was asked for."""
    return credit_lines.approve_change(db_session(), principal, change_id)


@api.operation("/credit-line-changes/<int:change_id>/reject", "POST",
               summary="Reject a pending credit line change", permission="credit_lines:manage",
               body=CreditLineReasonSchema, response=CreditLineChangeSchema, tags=CREDIT,
               errors=(404, 409, 422))
def reject_credit_line_change(principal: Principal, change_id: int, body: dict):
    return credit_lines.reject_change(db_session(), principal, change_id,
                                      reason=body["reason"])
