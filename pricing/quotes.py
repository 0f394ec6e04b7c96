"""Quotes: what a buyer will pay for an offer, line by line, with tax.

``quote(offer, quantity=..., tokens=..., buyer=..., tax_mode=...)`` returns a
``Quote``: its lines (each with net, tax and gross), the subtotal (sum of
nets), the tax (sum of line taxes) and the total (sum of grosses). Tax is
rounded per line (see ``pricing.tax``), so the lines always add up to the
totals shown.

What is quoted, per kind of offer:

=================  ==========================================================
subscription       ``quantity`` periods of the plan's fee; or, with
                   ``tokens``, one period rated with overage (``rating``)
mall package       ``quantity`` copies of the package (``tokens`` refused)
custom             one line per milestone (``quantity`` must be 1)
metered, royalty   ``tokens`` rated on the card (``quantity`` must be 1)
=================  ==========================================================

Worked example (tax exclusive, 6%): a mall package at CNY 1,999.00, 2 copies
-> net 3,998.00, tax 239.88, total 4,237.88. The same package tax inclusive
-> gross 3,998.00, net round(3,998.00 / 1.06) = 3,771.70, tax 226.30.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ._fields import mapping, parse_enum, require, whole_number
from .errors import InvalidAmount, InvalidQuantity, UnsupportedOffer, field_prefix
from .money import Money, UnitPrice
from .offers import CustomQuote, MallPackage, MeteredRateCard, RoyaltyRateCard, SubscriptionPlan
from .rating import LineItem, Usage, rate
from .tax import BuyerTaxStatus, TaxedAmount, TaxMode, apply_tax, parse_tax_rate

__all__ = ["QuoteLine", "Quote", "quote"]


@dataclass(frozen=True)
class QuoteLine:
    """A line item and its tax."""

    item: LineItem
    taxed: TaxedAmount

    def display_amount(self, mode: TaxMode) -> Money:
        """The amount to print next to the line: gross if prices are shown
        tax-inclusive, net if tax-exclusive."""
        return self.taxed.gross if mode is TaxMode.INCLUSIVE else self.taxed.net

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: money as decimal strings, never floats."""
        return {**self.item.to_dict(), **self.taxed.to_dict()}


@dataclass(frozen=True)
class Quote:
    """Lines, subtotal, tax and total for one offer and one buyer."""

    offer_kind: str
    offer_code: str
    currency: str
    tax_mode: TaxMode
    buyer_tax_status: BuyerTaxStatus
    lines: tuple[QuoteLine, ...]

    @property
    def subtotal(self) -> Money:
        """Sum of the lines' net amounts."""
        return Money.sum((line.taxed.net for line in self.lines), self.currency)

    @property
    def tax(self) -> Money:
        """Sum of the lines' taxes (each rounded on its line)."""
        return Money.sum((line.taxed.tax for line in self.lines), self.currency)

    @property
    def total(self) -> Money:
        """What the buyer pays: sum of the lines' gross amounts."""
        return Money.sum((line.taxed.gross for line in self.lines), self.currency)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: money as decimal strings, never floats."""
        return {
            "offer": {"kind": self.offer_kind, "code": self.offer_code},
            "currency": self.currency,
            "tax_mode": self.tax_mode.value,
            "buyer_tax_status": self.buyer_tax_status.value,
            "lines": [line.to_dict() for line in self.lines],
            "subtotal": self.subtotal.to_dict(),
            "tax": self.tax.to_dict(),
            "total": self.total.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Quote":
        """Inverse of ``to_dict``; every stored amount must match the
        recomputed one, so a tampered or stale snapshot is refused."""
        data = mapping(data)
        offer = mapping(require(data, "offer"), "offer")
        mode = parse_enum(TaxMode, require(data, "tax_mode"), "tax_mode")
        buyer = parse_enum(BuyerTaxStatus, require(data, "buyer_tax_status"), "buyer_tax_status")
        lines = []
        for i, raw in enumerate(require(data, "lines")):
            with field_prefix(f"lines[{i}]"):
                item = LineItem.from_dict(raw)
                taxed = apply_tax(item.amount, parse_tax_rate(require(raw, "rate"), "rate"), mode, buyer)
                if TaxedAmount.from_dict(raw) != taxed:
                    raise InvalidAmount("stored tax does not match the recomputed tax", field="tax")
            lines.append(QuoteLine(item, taxed))
        result = cls(
            offer_kind=require(offer, "kind"),
            offer_code=require(offer, "code"),
            currency=require(data, "currency"),
            tax_mode=mode,
            buyer_tax_status=buyer,
            lines=tuple(lines),
        )
        for key in ("subtotal", "tax", "total"):
            if key in data:
                with field_prefix(key):
                    stored = Money.from_dict(data[key])
                if stored != getattr(result, key):
                    raise InvalidAmount(f"stored {key} does not match the lines", field=key)
        return result


def _only_one(quantity: int, what: str) -> None:
    if quantity != 1:
        raise InvalidQuantity(f"{what} is quoted once; quantity must be 1", field="quantity")


def _no_tokens(tokens: Optional[int], what: str) -> None:
    if tokens is not None:
        raise InvalidQuantity(f"{what} is not priced by tokens", field="tokens")


def _lines_for(offer: Any, quantity: int, tokens: Optional[int], carried_in_tokens: int) -> tuple[LineItem, ...]:
    if isinstance(offer, SubscriptionPlan):
        if tokens is None:
            return (
                LineItem(
                    code="subscription",
                    description=f"{offer.code}, {quantity} x one {offer.period.value}",
                    quantity=quantity,
                    unit_price=UnitPrice.of(offer.price),
                ),
            )
        _only_one(quantity, "a subscription with token usage")
        return rate(Usage(tokens, carried_in_tokens), offer).lines
    if isinstance(offer, MallPackage):
        _no_tokens(tokens, "a mall package")
        licence = "perpetual licence" if offer.perpetual else f"{offer.licence_months}-month licence"
        return (
            LineItem(
                code="package",
                description=f"{offer.code}, {licence}",
                quantity=quantity,
                unit_price=UnitPrice.of(offer.price),
            ),
        )
    if isinstance(offer, CustomQuote):
        _only_one(quantity, "a custom quote")
        _no_tokens(tokens, "a custom quote")
        return tuple(
            LineItem(
                code=f"milestone_{m.kind.value}",
                description=m.description or f"{offer.code}, {m.kind.value}",
                quantity=1,
                unit_price=UnitPrice.of(m.amount),
            )
            for m in offer.milestones
        )
    if isinstance(offer, (MeteredRateCard, RoyaltyRateCard)):
        _only_one(quantity, "a rate card")
        if tokens is None:
            raise InvalidQuantity("a rate card is quoted for a number of tokens", field="tokens")
        return rate(Usage(tokens, carried_in_tokens), offer).lines
    raise UnsupportedOffer(f"cannot quote {type(offer).__name__}", field="offer")


def quote(
    offer: Any,
    *,
    quantity: int = 1,
    tokens: Optional[int] = None,
    buyer: BuyerTaxStatus | str = BuyerTaxStatus.STANDARD,
    tax_mode: TaxMode | str = TaxMode.EXCLUSIVE,
    carried_in_tokens: int = 0,
) -> Quote:
    """Quote ``offer`` for a buyer: lines, subtotal, tax and total.

    Rule: the offer's own ``tax_rate`` applies to every line; tax is rounded
    per line, half-up; ``tax_mode`` says whether listed prices include tax;
    an exempt buyer pays the net price and no tax.
    """
    whole_number(quantity, "quantity", minimum=1)
    if tokens is not None:
        whole_number(tokens, "tokens")
    mode = parse_enum(TaxMode, tax_mode, "tax_mode")
    status = parse_enum(BuyerTaxStatus, buyer, "buyer_tax_status")
    items = _lines_for(offer, quantity, tokens, carried_in_tokens)
    lines = tuple(QuoteLine(item, apply_tax(item.amount, offer.tax_rate, mode, status)) for item in items)
    return Quote(
        offer_kind=offer.KIND,
        offer_code=offer.code,
        currency=offer.currency,
        tax_mode=mode,
        buyer_tax_status=status,
        lines=lines,
    )
