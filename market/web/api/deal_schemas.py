"""Schemas of the custom-deal API (定制模式): demands, quotes, deals."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from billing.deals import DIMENSIONS, gross_total, over_budget, quote_terms
from market.web.api.pagination import PageQuerySchema
from market.catalog.taxonomy import MODALITIES, SECTORS
from pricing.money import Money

_SCORES = ("Minimum quality-report score (0-100) per dimension: "
           + ", ".join(DIMENSIONS) + ".")


class DemandBudgetSchema(Schema):
    amount = fields.String(required=True, metadata={"description": "A decimal string."})
    currency = fields.String(required=True, validate=validate.Length(equal=3))


class DemandWriteSchema(Schema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="", validate=validate.Length(max=20_000))
    sector = fields.String(required=True, validate=validate.OneOf(list(SECTORS)))
    modality = fields.String(required=True, validate=validate.OneOf(list(MODALITIES)))
    volume = fields.String(required=True, validate=validate.Length(min=1, max=200),
                           metadata={"description": "e.g. \"50,000 records\"."})
    # Checked by the service, so that an error names the dimension (thresholds.overall).
    thresholds = fields.Dict(load_default=dict, metadata={"description": _SCORES})
    budget = fields.Nested(DemandBudgetSchema, required=True)
    deadline = fields.Date(required=True)


class DemandQuerySchema(PageQuerySchema):
    role = fields.String(load_default="buyer", validate=validate.OneOf(["buyer", "supplier"]),
                         metadata={"description": "buyer: the organization's own demands; "
                                                  "supplier: open demands to quote on."})
    sector = fields.String(load_default=None, validate=validate.OneOf(list(SECTORS)))
    modality = fields.String(load_default=None, validate=validate.OneOf(list(MODALITIES)))


def _money(minor: int, currency: str) -> dict[str, str]:
    return Money.from_minor(minor, currency).to_dict()


class DemandSchema(Schema):
    id = fields.Integer()
    title = fields.String()
    description = fields.String()
    sector = fields.String()
    modality = fields.String()
    volume = fields.String()
    thresholds = fields.Dict()
    budget = fields.Function(lambda d: _money(d.budget_minor, d.currency))
    deadline = fields.Date()
    status = fields.String()
    created_at = fields.AwareDateTime()


class DealQuoteSchema(Schema):
    id = fields.Integer()
    demand_id = fields.Integer()
    dataset_id = fields.Integer()
    status = fields.String()
    terms = fields.Dict(metadata={"description": "The milestones as pricing serializes a "
                                                 "custom quote."})
    criteria = fields.Dict(metadata={"description": _SCORES})
    note = fields.String()
    total = fields.Function(lambda q: gross_total(quote_terms(q)).to_dict(),
                            metadata={"description": "All milestones, tax included."})
    over_budget = fields.Function(over_budget)
    created_at = fields.AwareDateTime()


class DemandDetailSchema(Schema):
    demand = fields.Nested(DemandSchema)
    quotes = fields.List(fields.Nested(DealQuoteSchema),
                         metadata={"description": "The buyer sees every quote; a supplier "
                                                  "its own."})


class QuoteWriteSchema(Schema):
    dataset_id = fields.Integer(required=True, metadata={
        "description": "The supplier's dataset the delivery will be a version of."})
    milestones = fields.List(fields.Dict(), required=True, metadata={
        "description": "[{kind: deposit|delivery|acceptance, amount: {amount, currency}, "
                       "description}], in that order, ending with acceptance."})
    tax_rate = fields.String(load_default=None, allow_none=True)
    # Checked by the service, so that an error names the dimension (criteria.overall).
    criteria = fields.Dict(load_default=dict, metadata={"description": _SCORES})
    note = fields.String(load_default="", validate=validate.Length(max=5_000))


class QuoteAcceptSchema(Schema):
    payment_method = fields.String(load_default="bank_transfer",
                                   validate=validate.OneOf(["bank_transfer", "card"]))


class DemandCancelSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2_000), metadata={
        "description": "Why the demand is cancelled; kept in the audit log."})


class QuoteWithdrawSchema(Schema):
    reason = fields.String(load_default="", validate=validate.Length(max=2_000), metadata={
        "description": "Optional: why the quote is withdrawn; kept in the audit log."})


class DeliverySchema(Schema):
    version = fields.Integer(required=True, validate=validate.Range(min=1),
                             metadata={"description": "Version number of the quoted dataset."})


class DeliveryAcceptSchema(Schema):
    waiver_reason = fields.String(load_default=None, allow_none=True,
                                  validate=validate.Length(max=2_000), metadata={
                                      "description": "Required when a criterion failed: why "
                                                     "the buyer accepts anyway."})


class DisputeSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2_000))


class MilestoneOrderSchema(Schema):
    milestone = fields.String()
    order_id = fields.Integer(attribute="id")
    number = fields.String()
    status = fields.String()
    total = fields.Function(lambda o: _money(o.total_minor, o.currency))
    payable_at = fields.AwareDateTime(allow_none=True)
    paid_at = fields.AwareDateTime(allow_none=True)


class DealSchema(Schema):
    id = fields.Integer(attribute="deal.id")
    status = fields.String(attribute="deal.status")
    demand_id = fields.Integer(attribute="deal.demand_id")
    quote_id = fields.Integer(attribute="deal.quote_id")
    dataset_id = fields.Integer(attribute="deal.dataset_id")
    delivered_version = fields.Function(
        lambda s: s["version"].number if s["version"] is not None else None)
    acceptance = fields.Dict(attribute="deal.acceptance", metadata={
        "description": "Per criterion: threshold, score, passed (and waived: the reason)."})
    failed = fields.List(fields.String())
    dispute_reason = fields.String(attribute="deal.dispute_reason", allow_none=True)
    milestones = fields.List(fields.Nested(MilestoneOrderSchema), attribute="orders")
    created_at = fields.AwareDateTime(attribute="deal.created_at")
    delivered_at = fields.AwareDateTime(attribute="deal.delivered_at", allow_none=True)
    decided_at = fields.AwareDateTime(attribute="deal.decided_at", allow_none=True)
