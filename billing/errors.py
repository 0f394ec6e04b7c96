"""Errors of billing that more than one of its packages raise."""

from __future__ import annotations

from market.core.errors import Conflict, MarketError


class PaymentRequired(MarketError):
    """Nothing may pay for this: no allowance, wallet or credit left, or a budget refuses it."""

    status = 402
    title = "Payment required"
    default_code = "payment_required"


class GatewayUnavailable(MarketError):
    """The card processor did not answer: whether it took the payment is for reconciliation."""

    status = 502
    title = "Payment processor unavailable"
    default_code = "processor_unavailable"


class CardPaymentInFlight(Conflict):
    """An order whose card payment is still under way is not invoiced for bank transfer."""

    def __init__(self) -> None:
        super().__init__("A card payment for this order is in progress.", field="order")
