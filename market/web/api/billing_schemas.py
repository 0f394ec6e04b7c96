"""Schemas of the buying and payment API use cases. Money is always a decimal string with its
currency (``{"amount": "9800.00", "currency": "CNY"}``), never a JSON number."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, pre_load, validate

from billing.orders import MAX_QUANTITY, MAX_TOKEN_PACK_MILLIONS, PAYMENT_METHODS
from pricing.money import Money


class MoneyField(fields.Field):
    """Minor units on the model, ``{"amount", "currency"}`` on the wire."""

    def __init__(self, minor: str, currency: str = "currency", **kwargs):
        super().__init__(dump_only=True, **kwargs)
        self.minor, self.currency = minor, currency

    def _serialize(self, value, attr, obj, **kwargs):
        minor = getattr(obj, self.minor)
        return Money.from_minor(minor, getattr(obj, self.currency)).to_dict()

    def get_value(self, obj, attr, accessor=None, default=None):
        return obj


class MoneyInputSchema(Schema):
    amount = fields.Decimal(required=True, as_string=True, places=None,
                            metadata={"example": "9800.00"})
    currency = fields.String(required=True, validate=validate.Length(equal=3))


class CartItemSchema(Schema):
    offer_id = fields.Integer(required=True)
    quantity = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_QUANTITY))


TAX_FROM_THE_RECORD = ("The buyer's tax status is not sent with an order: it is part of the "
                       "organization's verified profile, set by platform finance "
                       "(PUT /organizations/{id}/tax-status).")


class TaxFromTheRecord(Schema):
    """A purchase body: a tax status sent by the client is refused, never silently used or
    ignored, so a buyer cannot declare itself exempt."""

    @pre_load
    def refuse_client_tax_status(self, data, **kwargs):
        if isinstance(data, dict) and "buyer_tax_status" in data:
            raise ValidationError(TAX_FROM_THE_RECORD, field_name="buyer_tax_status")
        return data


class CheckoutSchema(TaxFromTheRecord):
    items = fields.List(fields.Nested(CartItemSchema), required=True,
                        validate=validate.Length(min=1, max=50))
    payment_method = fields.String(required=True, validate=validate.OneOf(PAYMENT_METHODS))
    note = fields.String(load_default="", validate=validate.Length(max=500))
    budget_line_id = fields.Integer(
        load_default=None, allow_none=True,
        metadata={"description": "The budget line the order is charged to; required when the "
                                 "organization has a budget for this year and currency."})
    purchase_order_number = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=64),
        metadata={"description": "Required when the budget says so."})


class TokenPackSchema(TaxFromTheRecord):
    millions = fields.Integer(required=True,
                              validate=validate.Range(min=1, max=MAX_TOKEN_PACK_MILLIONS))
    dataset_id = fields.Integer(load_default=None, allow_none=True,
                                metadata={"description": "None: tokens for any dataset."})
    payment_method = fields.String(required=True, validate=validate.OneOf(PAYMENT_METHODS))
    budget_line_id = fields.Integer(load_default=None, allow_none=True)
    purchase_order_number = fields.String(load_default=None, allow_none=True,
                                          validate=validate.Length(max=64))


class PaySchema(Schema):
    method = fields.String(required=True, validate=validate.OneOf(PAYMENT_METHODS))
    payment_method = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=3, max=100),
        metadata={"description": "A card confirmed by Stripe.js (pm_...); default: the saved "
                                 "card."})


class OrderLineSchema(Schema):
    id = fields.Integer()
    position = fields.Integer()
    kind = fields.String()
    description = fields.String()
    offer_id = fields.Integer(allow_none=True)
    dataset_id = fields.Integer(allow_none=True)
    version_id = fields.Integer(allow_none=True)
    quantity = fields.Integer()
    tokens = fields.Integer()
    tax_rate = fields.String()
    subtotal = MoneyField("subtotal_minor", metadata={"description": "Before tax."})
    tax = MoneyField("tax_minor")
    total = MoneyField("total_minor")
    supply_chain_revision_id = fields.Integer(allow_none=True)
    shares = fields.List(fields.List(fields.Raw()),
                         metadata={"description": "[participant, basis points] as sold."})


class BankReceiptSchema(Schema):
    id = fields.Integer()
    invoice_id = fields.Integer()
    amount = MoneyField("amount_minor")
    received_on = fields.Date()
    bank_reference = fields.String()
    status = fields.String(metadata={"description": "confirmed; pending_approval (from the "
                                                    "dual-control threshold: nothing posted "
                                                    "until a second person confirms it); "
                                                    "rejected"})
    excess = MoneyField("excess_minor", metadata={"description": "Kept as the buyer's credit."})
    recorded_by_id = fields.Integer(allow_none=True)
    decided_by_id = fields.Integer(allow_none=True)
    decided_at = fields.AwareDateTime(allow_none=True)
    decision_note = fields.String()
    created_at = fields.AwareDateTime()


class ReceiptDecisionSchema(Schema):
    note = fields.String(load_default="", validate=validate.Length(max=500),
                         metadata={"description": "Required to reject."})


class InvoiceSchema(Schema):
    id = fields.Integer()
    number = fields.String()
    order_id = fields.Integer()
    status = fields.String()
    amount_due = MoneyField("amount_due_minor")
    amount_received = MoneyField("amount_received_minor")
    outstanding = MoneyField("outstanding_minor")
    payment_reference = fields.String(
        metadata={"description": "Write this on the bank transfer."})
    due_on = fields.Date()
    issued_at = fields.AwareDateTime()
    paid_at = fields.AwareDateTime(allow_none=True)
    receipts = fields.List(fields.Nested(BankReceiptSchema))


class PaymentSchema(Schema):
    id = fields.Integer()
    order_id = fields.Integer()
    method = fields.String()
    status = fields.String()
    amount = MoneyField("amount_minor")
    refunded = MoneyField("refunded_minor")
    failure_code = fields.String(allow_none=True)
    failure_message = fields.String(allow_none=True)
    split = fields.Dict(keys=fields.String(), values=fields.String())
    created_at = fields.AwareDateTime()
    succeeded_at = fields.AwareDateTime(allow_none=True)


class OrderSchema(Schema):
    id = fields.Integer()
    number = fields.String()
    kind = fields.String()
    status = fields.String()
    currency = fields.String()
    subtotal = MoneyField("subtotal_minor")
    tax = MoneyField("tax_minor")
    total = MoneyField("total_minor")
    paid = MoneyField("paid_minor")
    refunded = MoneyField("refunded_minor")
    payment_method = fields.String()
    budget_line_id = fields.Integer(allow_none=True)
    purchase_order_number = fields.String(allow_none=True)
    warnings = fields.List(fields.String(), attribute="budget_warnings", metadata={
        "description": "What the budget says of this order as placed (a warn-mode line "
                       "passed); present only in the response that places it."})
    created_at = fields.AwareDateTime()
    paid_at = fields.AwareDateTime(allow_none=True)
    lines = fields.List(fields.Nested(OrderLineSchema))
    payments = fields.List(fields.Nested(PaymentSchema))
    invoice = fields.Nested(InvoiceSchema, allow_none=True)


class PayResultSchema(Schema):
    order = fields.Nested(OrderSchema)
    payment = fields.Nested(PaymentSchema, allow_none=True)
    invoice = fields.Nested(InvoiceSchema, allow_none=True)
    client_secret = fields.String(
        allow_none=True, metadata={"description": "For Stripe.js when the card needs 3-D "
                                                  "Secure (status requires_action)."})


class ReceiptSchema(Schema):
    amount = fields.Nested(MoneyInputSchema, required=True)
    received_on = fields.Date(required=True)
    bank_reference = fields.String(required=True, validate=validate.Length(min=1, max=100))


class RefundRequestSchema(Schema):
    amount = fields.Nested(MoneyInputSchema, load_default=None, allow_none=True,
                           metadata={"description": "Omit for all that remains."})
    reason = fields.String(load_default="", validate=validate.Length(max=500))
    bank_reference = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1, max=100),
        metadata={"description": "For a bank-transfer payment: the transfer back."})


class RefundSchema(Schema):
    id = fields.Integer()
    payment_id = fields.Integer()
    order_id = fields.Integer()
    status = fields.String()
    amount = MoneyField("amount_minor")
    reason = fields.String()
    parts = fields.Dict(keys=fields.String(), values=fields.String(),
                        metadata={"description": "What each part of the split gave back."})
    created_at = fields.AwareDateTime()


class RefundDetailSchema(RefundSchema):
    failure_message = fields.String(allow_none=True, metadata={
        "description": "Why it failed, or that the processor has not answered yet."})
    completed_at = fields.AwareDateTime(allow_none=True)


class PaymentAnomalySchema(Schema):
    id = fields.Integer()
    kind = fields.String(metadata={"description": "stranger_intent, intent_mismatch, "
                                   "unknown_refund, outside_refund or refund_reversed."})
    gateway = fields.String()
    object_ref = fields.String(allow_none=True, metadata={
        "description": "The processor's intent or refund."})
    payment_id = fields.Integer(allow_none=True)
    refund_id = fields.Integer(allow_none=True)
    event_id = fields.String(allow_none=True)
    amount_minor = fields.Integer(allow_none=True)
    currency = fields.String(allow_none=True)
    message = fields.String()
    detail = fields.Dict()
    created_at = fields.AwareDateTime()


class EntitlementSchema(Schema):
    id = fields.Integer()
    dataset_id = fields.Integer()
    version_id = fields.Integer(allow_none=True)
    covers = fields.String(metadata={"description": "pinned: version_id only; reviewed: every "
                                                    "version that passed the exchange's review"})
    kind = fields.String()
    order_line_id = fields.Integer(allow_none=True)
    subscription_id = fields.Integer(allow_none=True)
    valid_from = fields.AwareDateTime()
    valid_until = fields.AwareDateTime(allow_none=True)
    revoked_at = fields.AwareDateTime(allow_none=True)


class WalletSchema(Schema):
    id = fields.Integer()
    scope = fields.String()
    dataset_id = fields.Integer(allow_none=True)
    balance_tokens = fields.Integer()
    updated_at = fields.AwareDateTime()


class HoldingsSchema(Schema):
    entitlements = fields.List(fields.Nested(EntitlementSchema))
    wallets = fields.List(fields.Nested(WalletSchema))


class CertificateSchema(Schema):
    number = fields.String()
    payload = fields.Dict(metadata={"description": "What the certificate states."})
    digest = fields.String(metadata={"description": "SHA-256 of the payload's canonical JSON."})
    signature = fields.String()
    issued_at = fields.AwareDateTime()


class VerifiedCertificateSchema(CertificateSchema):
    disclosure = fields.String(metadata={
        "description": "`public`: the payload holds only what proves the transaction (number, "
                       "dates, amount, the version's content SHA-256); `party`: the caller "
                       "belongs to the buyer or the seller and sees all of it."})


class VerificationSchema(Schema):
    valid = fields.Boolean()
    reason = fields.String()
    certificate = fields.Nested(VerifiedCertificateSchema, allow_none=True)


class VerifyQuerySchema(Schema):
    digest = fields.String(load_default=None, validate=validate.Length(equal=64))


class CardSetupSchema(Schema):
    setup_intent = fields.String()
    client_secret = fields.String()
    publishable_key = fields.String()


class SaveCardSchema(Schema):
    payment_method = fields.String(required=True, validate=validate.Length(min=3, max=100))


class PaymentProfileSchema(Schema):
    gateway = fields.String()
    card_brand = fields.String(allow_none=True)
    card_last4 = fields.String(allow_none=True)
    updated_at = fields.AwareDateTime()
