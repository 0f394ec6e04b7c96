"""The settings billing needs, gathered once by whoever runs it (the app, a job, a command)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from pricing.money import Money


@dataclass(frozen=True)
class BillingSettings:
    platform_fee_bps: int = 500
    invoice_due_days: int = 15
    payee_bank_account: str = ""
    # Signs transaction certificates; derived from the app's secret so it needs no setting.
    certificate_key: bytes = b""
    token_pack_price_per_million: Money | None = None
    dunning_retry_days: tuple[int, ...] = (1, 3, 7)
    dunning_cancel_days: int = 14
    # Days an exchange has to review a statement after its period is closed.
    statement_review_days: int = 5
    # From this amount (in the money's own currency) a second person must approve.
    dual_control_threshold: Decimal = Decimal("10000.00")

    def needs_second_approver(self, amount: Money) -> bool:
        """Whether money of this size waits for a checker (maker-checker)."""
        return abs(amount.amount) >= self.dual_control_threshold

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "BillingSettings":
        secret = str(settings.get("SECRET_KEY") or "")
        price = settings.get("TOKEN_PACK_PRICE_PER_MILLION") or ""
        currency = settings.get("DEFAULT_CURRENCY", "CNY")
        retry = str(settings.get("DUNNING_RETRY_DAYS", "1,3,7"))
        return cls(
            platform_fee_bps=int(settings.get("PLATFORM_FEE_BPS", 500)),
            invoice_due_days=int(settings.get("INVOICE_DUE_DAYS", 15)),
            payee_bank_account=str(settings.get("PAYEE_BANK_ACCOUNT", "")),
            certificate_key=hashlib.sha256(b"certificates:" + secret.encode()).digest(),
            token_pack_price_per_million=Money(price, currency) if price else None,
            dunning_retry_days=tuple(int(d) for d in retry.split(",") if d.strip()),
            dunning_cancel_days=int(settings.get("DUNNING_CANCEL_DAYS", 14)),
            statement_review_days=int(settings.get("STATEMENT_REVIEW_DAYS", 5)),
            dual_control_threshold=_threshold(settings.get("DUAL_CONTROL_THRESHOLD", "10000.00")),
        )


def _threshold(raw: Any) -> Decimal:
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ValueError(f"DUAL_CONTROL_THRESHOLD must be an amount, not {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError("DUAL_CONTROL_THRESHOLD must be zero or more")
    return value
