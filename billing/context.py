"""The settings billing needs, gathered once by whoever runs it (the app, a job, a command).

Each field is read from one setting of ``market.core.settings.SETTINGS``, and a setting the
mapping lacks takes that table's default, as do the fields of ``BillingSettings()`` itself: a
default is written once, so the app, a job and a test built without the app agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from market.core.settings import SETTINGS
from pricing.money import Money

_SETTING_DEFAULTS = {setting.name: setting.default for setting in SETTINGS}


def _fields(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``BillingSettings`` from app settings (``SETTINGS`` names and forms)."""

    def setting(name: str) -> Any:
        value = settings.get(name)
        return _SETTING_DEFAULTS[name] if value is None else value

    secret = str(setting("SECRET_KEY") or "")
    price = setting("TOKEN_PACK_PRICE_PER_MILLION") or ""
    return dict(
        platform_fee_bps=int(setting("PLATFORM_FEE_BPS")),
        invoice_due_days=int(setting("INVOICE_DUE_DAYS")),
        payee_bank_account=str(setting("PAYEE_BANK_ACCOUNT")),
        certificate_key=hashlib.sha256(b"certificates:" + secret.encode()).digest(),
        token_pack_price_per_million=Money(price, setting("DEFAULT_CURRENCY")) if price else None,
        dunning_retry_days=tuple(int(d) for d in str(setting("DUNNING_RETRY_DAYS")).split(",")
                                 if d.strip()),
        dunning_cancel_days=int(setting("DUNNING_CANCEL_DAYS")),
        statement_review_days=int(setting("STATEMENT_REVIEW_DAYS")),
        dual_control_threshold=_threshold(setting("DUAL_CONTROL_THRESHOLD")),
        credit_line_approval_threshold=_optional_amount(
            "CREDIT_LINE_APPROVAL_THRESHOLD", setting("CREDIT_LINE_APPROVAL_THRESHOLD")),
    )


def _threshold(raw: Any, name: str = "DUAL_CONTROL_THRESHOLD") -> Decimal:
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ValueError(f"{name} must be an amount, not {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name} must be zero or more")
    return value


def _optional_amount(name: str, raw: Any) -> Decimal | None:
    """An amount setting that may be left empty (None: no such limit)."""
    return _threshold(raw, name) if str(raw or "").strip() else None


_DEFAULTS = _fields({})


@dataclass(frozen=True)
class BillingSettings:
    platform_fee_bps: int = _DEFAULTS["platform_fee_bps"]
    invoice_due_days: int = _DEFAULTS["invoice_due_days"]
    payee_bank_account: str = _DEFAULTS["payee_bank_account"]
    # Signs transaction certificates; derived from the app's secret so it needs no setting.
    certificate_key: bytes = _DEFAULTS["certificate_key"]
    token_pack_price_per_million: Money | None = _DEFAULTS["token_pack_price_per_million"]
    dunning_retry_days: tuple[int, ...] = _DEFAULTS["dunning_retry_days"]
    dunning_cancel_days: int = _DEFAULTS["dunning_cancel_days"]
    # Days an exchange has to review a statement after its period is closed.
    statement_review_days: int = _DEFAULTS["statement_review_days"]
    # From this amount (in the money's own currency) a second person must approve.
    dual_control_threshold: Decimal = _DEFAULTS["dual_control_threshold"]
    # A credit line raised by more than this (in the line's currency) waits for a second
    # finance approver; None: none does.
    credit_line_approval_threshold: Decimal | None = _DEFAULTS["credit_line_approval_threshold"]

    def needs_second_approver(self, amount: Money) -> bool:
        """Whether money of this size waits for a checker (maker-checker)."""
        return abs(amount.amount) >= self.dual_control_threshold

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "BillingSettings":
        return cls(**_fields(settings))
