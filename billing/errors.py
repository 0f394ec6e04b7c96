"""Errors of billing that more than one of its packages raise."""

from __future__ import annotations

from market.core.errors import MarketError


class PaymentRequired(MarketError):
    """Nothing may pay for this: no allowance, wallet or credit left, or a budget refuses it."""

    status = 402
    title = "Payment required"
    default_code = "payment_required"
