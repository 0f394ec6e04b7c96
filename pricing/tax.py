"""Tax on a line: rates, inclusive and exclusive prices, exempt buyers.

Every offer carries its own ``tax_rate`` (a ``Decimal`` fraction, default
``DATA_SERVICES_VAT_CN`` = 0.06, the usual VAT rate for data services in
China; the catalogue can set any rate in [0, 1), e.g. 0 for an export of
services or 0.13 for goods).

Tax is computed per line and rounded once per line, half-up (line-level
rounding): the quote's tax is the sum of the lines' taxes, never a tax
recomputed on the subtotal, so every line shown to the buyer adds up.

Tax modes (how a listed price is read), worked at 6% on CNY 100.00:

===========  ========  ======  =======  ======  ==============================
mode         buyer     net     tax      gross   rule
===========  ========  ======  =======  ======  ==============================
exclusive    standard  100.00    6.00   106.00  tax = round(net * rate)
inclusive    standard   94.34    5.66   100.00  net = round(gross / (1 + rate))
exclusive    exempt    100.00    0.00   100.00  no tax
inclusive    exempt     94.34    0.00    94.34  the tax share is removed
===========  ========  ======  =======  ======  ==============================

An exempt buyer pays the net price in both modes, so the same offer costs an
exempt buyer the same whichever way the storefront displays prices.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from fractions import Fraction
from typing import Any, Mapping

from ._fields import parse_enum
from .errors import InvalidAmount, InvalidTaxRate
from .money import Money, round_half_up, to_decimal

__all__ = [
    "DATA_SERVICES_VAT_CN",
    "TaxMode",
    "BuyerTaxStatus",
    "TaxpayerStatus",
    "TaxedAmount",
    "parse_tax_rate",
    "offer_tax_rate",
    "apply_tax",
]

DATA_SERVICES_VAT_CN = Decimal("0.06")

# Real rates have at most a few decimals (7.25%, 8.875%); more is a typo.
MAX_RATE_PLACES = 6


class TaxMode(str, Enum):
    """How listed prices are read: before tax (exclusive) or including it."""

    EXCLUSIVE = "exclusive"
    INCLUSIVE = "inclusive"


class BuyerTaxStatus(str, Enum):
    """Whether the buyer is charged tax (standard) or not (exempt)."""

    STANDARD = "standard"
    EXEMPT = "exempt"


class TaxpayerStatus(str, Enum):
    """A buyer organization's VAT standing, as platform finance verified it.

    General (一般纳税人) and small-scale (小规模纳税人) taxpayers are both charged the offer's
    VAT (they differ in the invoice they can deduct from, not in what they pay); an exempt
    organization (免税) is charged none.
    """

    GENERAL = "general"
    SMALL_SCALE = "small_scale"
    EXEMPT = "exempt"

    @property
    def buyer_tax_status(self) -> BuyerTaxStatus:
        return BuyerTaxStatus.EXEMPT if self is TaxpayerStatus.EXEMPT else BuyerTaxStatus.STANDARD


def parse_tax_rate(value: Any, field: str = "tax_rate") -> Decimal:
    """Return a tax rate as a ``Decimal`` fraction (0.06 for 6%).

    Rule: a Decimal, int or string in [0, 1) with at most 6 decimal places;
    floats raise ``FloatNotAllowed``, anything else ``InvalidTaxRate``.
    """
    try:
        rate = to_decimal(value, field)
    except InvalidAmount as exc:
        raise InvalidTaxRate(
            f"tax rate must be a decimal fraction such as '0.06': {exc}", field=field
        ) from None
    if not (0 <= rate < 1):
        raise InvalidTaxRate(
            f"tax rate {rate} must be a fraction in [0, 1), e.g. 0.06 for 6%", field=field
        )
    if (Fraction(rate) * 10**MAX_RATE_PLACES).denominator != 1:
        raise InvalidTaxRate(f"tax rate {rate} has more than {MAX_RATE_PLACES} decimal places", field=field)
    return rate


def offer_tax_rate(terms: Mapping[str, Any] | None) -> Decimal:
    """The tax rate an offer's stored terms set, ``DATA_SERVICES_VAT_CN`` when they set none
    or nothing is offered (a platform-wide token pack, usage with no rate card left)."""
    return parse_tax_rate((terms or {}).get("tax_rate", DATA_SERVICES_VAT_CN))


@dataclass(frozen=True, slots=True)
class TaxedAmount:
    """One line's amounts before tax (net), the tax, and after tax (gross)."""

    net: Money
    tax: Money
    gross: Money
    rate: Decimal

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: money as decimal strings, never floats."""
        return {
            "net": self.net.to_dict(),
            "tax": self.tax.to_dict(),
            "gross": self.gross.to_dict(),
            "rate": format(self.rate, "f"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TaxedAmount":
        """Inverse of ``to_dict``, validated like the constructor."""
        return cls(
            net=Money.from_dict(data["net"]),
            tax=Money.from_dict(data["tax"]),
            gross=Money.from_dict(data["gross"]),
            rate=parse_tax_rate(data["rate"], "rate"),
        )


def apply_tax(
    amount: Money,
    rate: Any,
    mode: TaxMode | str = TaxMode.EXCLUSIVE,
    buyer: BuyerTaxStatus | str = BuyerTaxStatus.STANDARD,
) -> TaxedAmount:
    """Split one line's listed ``amount`` into net, tax and gross.

    Rule: one half-up rounding per line (see the module table); an exempt
    buyer pays the net price and no tax; net + tax == gross exactly.
    """
    rate = parse_tax_rate(rate)
    mode = parse_enum(TaxMode, mode, "tax_mode")
    buyer = parse_enum(BuyerTaxStatus, buyer, "buyer_tax_status")
    currency = amount.currency
    if mode is TaxMode.EXCLUSIVE:
        net = amount
    else:
        # Extract the tax share from the exact value, not from a rounded net.
        net = Money.from_minor(
            round_half_up(Fraction(amount.minor) / (1 + Fraction(rate))), currency
        )
    if buyer is BuyerTaxStatus.EXEMPT:
        tax = Money.zero(currency)
    elif mode is TaxMode.EXCLUSIVE:
        tax = Money.from_minor(round_half_up(Fraction(net.minor) * Fraction(rate)), currency)
    else:
        tax = amount - net
    return TaxedAmount(net=net, tax=tax, gross=net + tax, rate=rate)
