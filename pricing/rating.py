"""Rating: turning a period's token usage into priced line items.

``rate(usage, offer)`` rates a subscription plan, a metered rate card or a
royalty rate card for one period and returns a ``Rating``: its line items,
their total, and the included tokens that roll over to the next period.
Every line is ``quantity * unit_price / per``, rounded once, half-up, at the
line total (never per token), so a buyer can recompute each line from the
numbers printed on it.

Tiers: graduated and volume
---------------------------
Rate card used in both examples (prices per million tokens, CNY)::

    tier 1: 0          - 1,000,000   2.00
    tier 2: 1,000,000  - 10,000,000  1.50
    tier 3: 10,000,000 - (no end)    1.00

*Graduated*: each tier prices only the tokens that fall inside it, like
income-tax brackets. 12,500,000 tokens ->

    1,000,000 x 2.00 / 1M =  2.00
    9,000,000 x 1.50 / 1M = 13.50
    2,500,000 x 1.00 / 1M =  2.50
                    total = 18.00   (one line per tier used)

The charge never falls when usage rises.

*Volume*: the tier that the total lands in prices every token. 12,500,000
tokens land in tier 3 -> 12,500,000 x 1.00 / 1M = 12.50 (one line). A tier's
``up_to`` is inclusive: exactly 10,000,000 tokens are tier 2 (15.00), so a
buyer just under a boundary can pay more than one just over it; that cliff is
the point of volume pricing.

Free allowance, minimum charge, subscriptions
---------------------------------------------
* ``free_tokens`` are taken off the top before the tiers apply (tiers price
  the billable tokens, counted from zero); the free tokens appear as a line
  at 0.00 so the buyer sees them. 1,500,000 tokens with 1,000,000 free on the
  card above -> 500,000 billable x 2.00 / 1M = 1.00.
* ``minimum_charge`` applies to a period with billable tokens: if the tier
  lines total less, a "minimum charge" line makes up the difference. A period
  without billable tokens owes nothing (the free allowance stays free).
* A subscription plan rates as its fee for the period plus overage: tokens
  beyond the allowance at ``overage_per_million``. The allowance is the
  plan's ``included_tokens`` plus, if the plan rolls over, the tokens carried
  in from the previous period, which are used first. Unused included tokens
  of this period carry over to the next (at most ``included_tokens``; carried
  in tokens that are not used expire). Plan 1,000,000 included, overage
  CNY 3.00 / 1M, 200,000 carried in, 1,500,000 used -> 200,000 carried used,
  1,000,000 included used, 300,000 overage x 3.00 / 1M = 0.90; nothing
  carries over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ._fields import mapping, require, whole_number
from .errors import InvalidAmount, InvalidQuantity, UnsupportedOffer, field_prefix
from .money import Money, UnitPrice
from .offers import (
    TOKENS_PER_MILLION,
    MeteredRateCard,
    RoyaltyRateCard,
    SubscriptionPlan,
    Tier,
    TierMode,
)

__all__ = ["LineItem", "Usage", "Rating", "rate", "price_tiers"]


@dataclass(frozen=True)
class LineItem:
    """One priced line: ``quantity * unit_price / per``, rounded once.

    ``per`` is the size of the unit the price is for: 1 for a package or a
    period, 1,000,000 for a price per million tokens, the number of days in
    the period for a prorated fee. A negative quantity is a credit.
    """

    code: str
    description: str
    quantity: int
    unit_price: UnitPrice
    per: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not self.code:
            raise InvalidQuantity("a line needs a code", field="code")
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int):
            raise InvalidQuantity("quantity must be an integer", field="quantity")
        if isinstance(self.per, bool) or not isinstance(self.per, int) or self.per <= 0:
            raise InvalidQuantity("per must be a positive integer", field="per")
        if not isinstance(self.unit_price, UnitPrice):
            raise InvalidAmount("unit_price must be a UnitPrice", field="unit_price")

    @property
    def amount(self) -> Money:
        """The line total: quantity * unit_price / per, rounded once, half-up."""
        return self.unit_price.total(self.quantity, self.per)

    @property
    def currency(self) -> str:
        """The currency every amount of this object is in."""
        return self.unit_price.currency

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: money as decimal strings, never floats."""
        return {
            "code": self.code,
            "description": self.description,
            "quantity": self.quantity,
            "unit_price": self.unit_price.to_dict(),
            "per": self.per,
            "amount": self.amount.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LineItem":
        """Inverse of ``to_dict``; a stored ``amount`` must match the recomputed one."""
        data = mapping(data)
        raw_price = require(data, "unit_price")
        with field_prefix("unit_price"):
            unit_price = UnitPrice.from_dict(raw_price)
        line = cls(
            code=require(data, "code"),
            description=data.get("description", ""),
            quantity=require(data, "quantity"),
            unit_price=unit_price,
            per=data.get("per", 1),
        )
        if "amount" in data:
            with field_prefix("amount"):
                stored = Money.from_dict(data["amount"])
            if stored != line.amount:
                raise InvalidAmount(
                    f"stored amount {stored} does not match {line.amount} recomputed from the line",
                    field="amount",
                )
        return line


@dataclass(frozen=True)
class Usage:
    """Tokens used in one period, and tokens carried in from the previous one.

    ``tokens`` is API tokens consumed for a subscription or metered card, or
    tokens generated by the trained model for a royalty card.
    """

    tokens: int
    carried_in_tokens: int = 0

    def __post_init__(self) -> None:
        whole_number(self.tokens, "tokens")
        whole_number(self.carried_in_tokens, "carried_in_tokens")


@dataclass(frozen=True)
class Rating:
    """The line items of one period, their total, and the tokens rolling over."""

    lines: tuple[LineItem, ...]
    currency: str
    carry_over_tokens: int = 0

    @property
    def total(self) -> Money:
        """The sum of the amounts, in the currency."""
        return Money.sum((line.amount for line in self.lines), self.currency)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: money as decimal strings, never floats."""
        return {
            "lines": [line.to_dict() for line in self.lines],
            "currency": self.currency,
            "carry_over_tokens": self.carry_over_tokens,
            "total": self.total.to_dict(),
        }


def _tokens(n: int) -> str:
    return f"{n:,}"


def _tier_range(tier: Tier) -> str:
    end = "and above" if tier.up_to is None else f"- {_tokens(tier.up_to)}"
    return f"{_tokens(tier.from_tokens)} {end}"


def price_tiers(tokens: int, tiers: Sequence[Tier], mode: TierMode, label: str = "tokens") -> list[LineItem]:
    """Price ``tokens`` on validated tiers: one line per tier used (graduated)
    or a single line at the tier the total lands in (volume).

    Rule: see the module docstring; zero tokens give no lines.
    """
    whole_number(tokens, "tokens")
    lines: list[LineItem] = []
    if tokens == 0:
        return lines
    if mode is TierMode.GRADUATED:
        for i, tier in enumerate(tiers):
            n = tier.tokens_in(tokens)
            if n:
                lines.append(
                    LineItem(
                        code=f"tier_{i + 1}",
                        description=f"{_tokens(n)} {label}, tier {i + 1} ({_tier_range(tier)}) "
                        f"at {tier.price_per_million} per 1M",
                        quantity=n,
                        unit_price=tier.price_per_million,
                        per=TOKENS_PER_MILLION,
                    )
                )
        return lines
    for i, tier in enumerate(tiers):
        if tier.covers(tokens):
            lines.append(
                LineItem(
                    code=f"tier_{i + 1}",
                    description=f"{_tokens(tokens)} {label}, all at tier {i + 1} "
                    f"({_tier_range(tier)}) at {tier.price_per_million} per 1M",
                    quantity=tokens,
                    unit_price=tier.price_per_million,
                    per=TOKENS_PER_MILLION,
                )
            )
            return lines
    raise AssertionError("validated tiers cover every positive token count")  # pragma: no cover


def _rate_card(usage: Usage, card: MeteredRateCard | RoyaltyRateCard) -> Rating:
    if usage.carried_in_tokens:
        raise InvalidQuantity("rate cards do not carry tokens over", field="carried_in_tokens")
    label = "tokens generated" if isinstance(card, RoyaltyRateCard) else "tokens"
    currency = card.currency
    lines: list[LineItem] = []
    free = min(usage.tokens, card.free_tokens)
    if free:
        lines.append(
            LineItem(
                code="free_allowance",
                description=f"{_tokens(free)} {label} free of {_tokens(card.free_tokens)} allowance",
                quantity=free,
                unit_price=UnitPrice("0", currency),
                per=TOKENS_PER_MILLION,
            )
        )
    billable = usage.tokens - free
    tier_lines = price_tiers(billable, card.tiers, card.mode, label)
    lines.extend(tier_lines)
    if billable and card.minimum_charge is not None:
        charged = Money.sum((line.amount for line in tier_lines), currency)
        if charged < card.minimum_charge:
            shortfall = card.minimum_charge - charged
            lines.append(
                LineItem(
                    code="minimum_charge",
                    description=f"minimum charge of {card.minimum_charge} per period",
                    quantity=1,
                    unit_price=UnitPrice.of(shortfall),
                )
            )
    return Rating(lines=tuple(lines), currency=currency)


def _rate_subscription(usage: Usage, plan: SubscriptionPlan, include_fee: bool) -> Rating:
    if usage.carried_in_tokens and not plan.rollover:
        raise InvalidQuantity("this plan does not roll unused tokens over", field="carried_in_tokens")
    if usage.carried_in_tokens > plan.included_tokens:
        raise InvalidQuantity(
            "at most one period's included tokens can be carried in", field="carried_in_tokens"
        )
    lines: list[LineItem] = []
    if include_fee:
        lines.append(
            LineItem(
                code="subscription",
                description=f"{plan.code}, one {plan.period.value}",
                quantity=1,
                unit_price=UnitPrice.of(plan.price),
            )
        )
    from_carried = min(usage.tokens, usage.carried_in_tokens)
    from_included = min(usage.tokens - from_carried, plan.included_tokens)
    overage = usage.tokens - from_carried - from_included
    if overage:
        lines.append(
            LineItem(
                code="overage",
                description=f"{_tokens(overage)} tokens over the {_tokens(plan.included_tokens + usage.carried_in_tokens)} "
                f"allowance at {plan.overage_per_million} per 1M",
                quantity=overage,
                unit_price=plan.overage_per_million,
                per=TOKENS_PER_MILLION,
            )
        )
    carry = plan.included_tokens - from_included if plan.rollover else 0
    return Rating(lines=tuple(lines), currency=plan.currency, carry_over_tokens=carry)


def rate(usage: Usage, offer: Any, *, include_fee: bool = True) -> Rating:
    """Rate one period of ``usage`` on a plan or rate card.

    Rule: subscription = fee (unless ``include_fee=False``, e.g. when the fee
    was billed in advance) + overage beyond included and carried-in tokens;
    rate cards = free allowance, tiers, then the minimum charge. Mall
    packages and custom quotes are not metered (``UnsupportedOffer``).
    """
    if not isinstance(usage, Usage):
        raise InvalidQuantity("usage must be a Usage", field="usage")
    if isinstance(offer, SubscriptionPlan):
        return _rate_subscription(usage, offer, include_fee)
    if isinstance(offer, (MeteredRateCard, RoyaltyRateCard)):
        return _rate_card(usage, offer)
    raise UnsupportedOffer(
        f"{type(offer).__name__} is not metered; quote it instead", field="offer"
    )
