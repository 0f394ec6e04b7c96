"""Schemas of the budgets API: budgets, their lines, amendments and the records behind them.
Money is a decimal string with its currency, as everywhere in the API."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from billing.budgets.lines import AMENDMENT_KINDS, DEFAULT_THRESHOLDS, ENFORCEMENTS
from billing.models.budgets import BUDGET_CATEGORIES, RECORD_KINDS
from market.web.api.billing_schemas import MoneyField, MoneyInputSchema
from market.web.api.pagination import PageQuerySchema
from market.web.boundary import Month
from pricing.money import Money


class LineMoneyField(MoneyField):
    """An amount of a budget line, in its budget's currency."""

    def _serialize(self, value, attr, obj, **kwargs):
        return Money.from_minor(getattr(obj, self.minor), obj.budget.currency).to_dict()


class BudgetCreateSchema(Schema):
    fiscal_year = fields.Integer(required=True, validate=validate.Range(min=2000, max=2100))
    currency = fields.String(required=True, validate=validate.Length(equal=3))
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    enforcement = fields.String(load_default="block", validate=validate.OneOf(ENFORCEMENTS),
                                metadata={"description": "block: refuse a purchase beyond a "
                                                         "line; warn: allow it, flagged."})
    require_purchase_order = fields.Boolean(load_default=False)
    thresholds = fields.List(fields.Integer(validate=validate.Range(min=1, max=100)),
                             load_default=list(DEFAULT_THRESHOLDS),
                             validate=validate.Length(min=1, max=10))
    alert_email = fields.Email(load_default=None, allow_none=True)


class BudgetLineCreateSchema(Schema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=40),
                         metadata={"example": "2026-DATA-01"})
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    category = fields.String(required=True, validate=validate.OneOf(BUDGET_CATEGORIES))
    approved = fields.Nested(MoneyInputSchema, required=True)
    project = fields.String(load_default=None, allow_none=True,
                            validate=validate.Length(max=200))
    sector = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=40))
    default_for_api = fields.Boolean(load_default=False, metadata={
        "description": "The line metered API usage is charged to (one per budget)."})


class AmendmentCreateSchema(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(AMENDMENT_KINDS))
    amount = fields.Nested(MoneyInputSchema, required=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2_000))
    to_line_id = fields.Integer(load_default=None, allow_none=True,
                                metadata={"description": "A transfer's receiving line."})


class BudgetLineSchema(Schema):
    id = fields.Integer()
    budget_id = fields.Integer()
    code = fields.String()
    name = fields.String()
    category = fields.String()
    project = fields.String(allow_none=True)
    sector = fields.String(allow_none=True)
    original = LineMoneyField("original_minor")
    approved = LineMoneyField("approved_minor", metadata={
        "description": "The original amount plus every amendment."})
    committed = LineMoneyField("committed_minor", metadata={"description": "Ordered, unpaid."})
    spent = LineMoneyField("spent_minor", metadata={"description": "Paid, net of refunds."})
    remaining = LineMoneyField("remaining_minor")
    default_for_api = fields.Boolean()
    created_at = fields.AwareDateTime()


class BudgetSchema(Schema):
    id = fields.Integer()
    fiscal_year = fields.Integer()
    currency = fields.String()
    name = fields.String()
    enforcement = fields.String()
    require_purchase_order = fields.Boolean()
    thresholds = fields.List(fields.Integer())
    alert_email = fields.String(allow_none=True)
    webhook_url = fields.String(allow_none=True, metadata={
        "description": "Set with PUT /budgets/{id}/alert-webhook; its secret is never shown "
                       "here."})
    webhook_secret_created_at = fields.AwareDateTime(allow_none=True)
    created_at = fields.AwareDateTime()
    lines = fields.List(fields.Nested(BudgetLineSchema))


class AlertWebhookSetSchema(Schema):
    url = fields.String(required=True, validate=validate.Length(min=1, max=500), metadata={
        "description": "https:// (in production to a public address only); outside production "
                       "also http:// to a receiver on this machine."})


class AlertWebhookSchema(Schema):
    url = fields.String(allow_none=True)
    secret = fields.String(allow_none=True, metadata={
        "description": "The signing secret (HMAC-SHA256 of the X-Market-Signature header): "
                       "present only in the answer that generated it, never again."})
    secret_created_at = fields.AwareDateTime(allow_none=True)


class AmendmentSchema(Schema):
    id = fields.Integer()
    line_id = fields.Integer()
    kind = fields.String()
    amount_minor = fields.Integer()
    counterpart_line_id = fields.Integer(allow_none=True)
    reason = fields.String()
    created_at = fields.AwareDateTime()


class AmendmentResultSchema(Schema):
    line = fields.Nested(BudgetLineSchema)
    to_line = fields.Nested(BudgetLineSchema, allow_none=True)
    amendments = fields.List(fields.Nested(AmendmentSchema))


class LineRecordQuerySchema(PageQuerySchema):
    kind = fields.String(load_default=None, validate=validate.OneOf(RECORD_KINDS))
    month = Month(load_default=None)
    dataset_id = fields.Integer(load_default=None)
    supplier_id = fields.Integer(load_default=None)
    sector = fields.String(load_default=None, validate=validate.Length(max=40))


class BudgetRecordFieldsSchema(Schema):
    """What a line's records and a report's records both show of a budget record: its line,
    what it came from and the month it counts in; each adds its kind, amount and time."""

    id = fields.Integer()
    line_id = fields.Integer()
    order_id = fields.Integer(allow_none=True)
    dataset_id = fields.Integer(allow_none=True)
    supplier_id = fields.Integer(allow_none=True)
    sector = fields.String(allow_none=True)
    month = fields.String()
    source = fields.String()
    reference = fields.String()
    note = fields.String()


class LineRecordSchema(BudgetRecordFieldsSchema):
    kind = fields.String()
    amount = MoneyField("amount_minor")
    occurred_at = fields.AwareDateTime()
