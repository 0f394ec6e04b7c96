"""Offers: the terms on which the marketplace sells a dataset.

Four kinds of offer, each a frozen value object validated on construction,
with ``to_dict()`` / ``from_dict()`` that round-trip through JSON (money as
``{"amount": "<decimal string>", "currency": "CNY"}``, never a float), so the
catalogue can keep them in a JSON column and billing can snapshot them into
an order. ``offer_from_dict`` reads any of them by their ``kind``.

* ``SubscriptionPlan`` (kind ``subscription``): a price per period (month,
  quarter, year) with included tokens, an overage price per million tokens,
  and whether unused included tokens roll over into the next period.
* ``MallPackage`` (kind ``mall_package``): a one-off price for a licence
  (perpetual or N months) to download the data and/or a number of API tokens.
* ``CustomQuote`` (kind ``custom``): a commissioned dataset paid in
  milestones (deposit, delivery, acceptance), each with its amount.
* ``MeteredRateCard`` (kind ``metered``) prices API tokens per million with
  graduated or volume tiers, a free allowance and a minimum charge;
  ``RoyaltyRateCard`` (kind ``royalty``) prices, the same way, the tokens a
  model trained on the data generates. How tiers rate is in ``rating``.

Every offer has a ``tax_rate`` (default 6%, see ``tax``). Validation errors
name the field at fault, e.g. ``tiers[1].from_tokens`` or
``milestones[0].amount``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, Mapping, Optional, Sequence, Union

from .periods import add_months
from ._fields import code as _code
from ._fields import mapping, parse_enum, require, whole_number
from .allocation import allocate
from .errors import (
    CurrencyMismatch,
    InvalidMilestones,
    InvalidOffer,
    InvalidPeriod,
    InvalidPrice,
    InvalidShares,
    InvalidTiers,
    field_prefix,
)
from .money import Money, UnitPrice
from .tax import DATA_SERVICES_VAT_CN, parse_tax_rate

__all__ = [
    "TOKENS_PER_MILLION",
    "Period",
    "TierMode",
    "Tier",
    "SubscriptionPlan",
    "MallPackage",
    "MilestoneKind",
    "Milestone",
    "CustomQuote",
    "MeteredRateCard",
    "RoyaltyRateCard",
    "Offer",
    "offer_from_dict",
]

TOKENS_PER_MILLION = 1_000_000


class Period(str, Enum):
    """A subscription's billing period."""

    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"

    @property
    def months(self) -> int:
        """Calendar months in the period (1, 3, 12)."""
        return {"month": 1, "quarter": 3, "year": 12}[self.value]

    def end(self, start: date) -> date:
        """The day after the last day of the period that starts on ``start``."""
        return add_months(start, self.months)


class TierMode(str, Enum):
    """How a rate card's tiers apply: see ``pricing.rating``."""

    GRADUATED = "graduated"
    VOLUME = "volume"


def _positive_money(value: Any, name: str) -> Money:
    if not isinstance(value, Money):
        raise InvalidPrice(f"{name} must be Money", field=name)
    if not value.is_positive():
        raise InvalidPrice(f"{name} must be greater than zero, got {value}", field=name)
    return value


def _unit_price(value: Any, name: str, *, allow_zero: bool) -> UnitPrice:
    if isinstance(value, Money):
        value = UnitPrice.of(value)
    if not isinstance(value, UnitPrice):
        raise InvalidPrice(f"{name} must be a UnitPrice", field=name)
    if value.is_negative() or (value.is_zero() and not allow_zero):
        needed = "zero or more" if allow_zero else "greater than zero"
        raise InvalidPrice(f"{name} must be {needed}, got {value}", field=name)
    return value


def _same_currency(currency: str, value: Union[Money, UnitPrice], name: str) -> None:
    if value.currency != currency:
        raise CurrencyMismatch(
            f"{name} is in {value.currency} but the offer is priced in {currency}",
            field=f"{name}.currency",
        )


def _money_from(data: Mapping[str, Any], key: str) -> Money:
    value = require(data, key)
    with field_prefix(key):
        return Money.from_dict(value)


def _unit_price_from(data: Mapping[str, Any], key: str) -> UnitPrice:
    value = require(data, key)
    with field_prefix(key):
        return UnitPrice.from_dict(value)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidOffer(f"{name} must be true or false", field=name)
    return value


@dataclass(frozen=True)
class SubscriptionPlan:
    """A recurring plan: price per period, included tokens, overage, rollover.

    ``rollover``: unused *included* tokens of a period carry into the next
    period only (they expire at its end, so they never pile up), and are used
    before that period's own included tokens.
    """

    KIND: ClassVar[str] = "subscription"

    code: str
    period: Period
    price: Money
    included_tokens: int
    overage_per_million: UnitPrice
    rollover: bool = False
    tax_rate: Decimal = DATA_SERVICES_VAT_CN

    def __post_init__(self) -> None:
        _code(self.code)
        object.__setattr__(self, "period", parse_enum(Period, self.period, "period", InvalidPeriod))
        _positive_money(self.price, "price")
        whole_number(self.included_tokens, "included_tokens")
        price = _unit_price(self.overage_per_million, "overage_per_million", allow_zero=False)
        object.__setattr__(self, "overage_per_million", price)
        _same_currency(self.price.currency, price, "overage_per_million")
        _bool(self.rollover, "rollover")
        object.__setattr__(self, "tax_rate", parse_tax_rate(self.tax_rate))

    @property
    def currency(self) -> str:
        """The currency every amount of this object is in."""
        return self.price.currency

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: money as decimal strings, never floats."""
        return {
            "kind": self.KIND,
            "code": self.code,
            "period": self.period.value,
            "price": self.price.to_dict(),
            "included_tokens": self.included_tokens,
            "overage_per_million": self.overage_per_million.to_dict(),
            "rollover": self.rollover,
            "tax_rate": format(self.tax_rate, "f"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SubscriptionPlan":
        """Inverse of ``to_dict``, validated like the constructor."""
        data = mapping(data)
        return cls(
            code=require(data, "code"),
            period=require(data, "period"),
            price=_money_from(data, "price"),
            included_tokens=require(data, "included_tokens"),
            overage_per_million=_unit_price_from(data, "overage_per_million"),
            rollover=data.get("rollover", False),
            tax_rate=data.get("tax_rate", DATA_SERVICES_VAT_CN),
        )


@dataclass(frozen=True)
class MallPackage:
    """A one-off purchase: a licence to download the data and/or API tokens.

    ``licence_months`` is ``None`` for a perpetual licence, else the number
    of months the licence runs from the purchase date.
    """

    KIND: ClassVar[str] = "mall_package"

    code: str
    price: Money
    licence_months: Optional[int] = None
    download: bool = True
    api_tokens: int = 0
    tax_rate: Decimal = DATA_SERVICES_VAT_CN

    def __post_init__(self) -> None:
        _code(self.code)
        _positive_money(self.price, "price")
        if self.licence_months is not None:
            whole_number(self.licence_months, "licence_months", minimum=1)
        _bool(self.download, "download")
        whole_number(self.api_tokens, "api_tokens")
        if not self.download and self.api_tokens == 0:
            raise InvalidOffer(
                "a package must include the download, API tokens, or both", field="includes"
            )
        object.__setattr__(self, "tax_rate", parse_tax_rate(self.tax_rate))

    @property
    def currency(self) -> str:
        """The currency every amount of this object is in."""
        return self.price.currency

    @property
    def perpetual(self) -> bool:
        """Whether the licence never ends."""
        return self.licence_months is None

    def licence_ends(self, purchased_on: date) -> Optional[date]:
        """The first day the licence no longer covers, or None if perpetual."""
        if self.licence_months is None:
            return None
        return add_months(purchased_on, self.licence_months)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: money as decimal strings, never floats."""
        return {
            "kind": self.KIND,
            "code": self.code,
            "price": self.price.to_dict(),
            "licence_months": self.licence_months,
            "download": self.download,
            "api_tokens": self.api_tokens,
            "tax_rate": format(self.tax_rate, "f"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MallPackage":
        """Inverse of ``to_dict``, validated like the constructor."""
        data = mapping(data)
        return cls(
            code=require(data, "code"),
            price=_money_from(data, "price"),
            licence_months=data.get("licence_months"),
            download=data.get("download", True),
            api_tokens=data.get("api_tokens", 0),
            tax_rate=data.get("tax_rate", DATA_SERVICES_VAT_CN),
        )


class MilestoneKind(str, Enum):
    """Payment points of a commissioned dataset, in the order they fall due."""

    DEPOSIT = "deposit"
    DELIVERY = "delivery"
    ACCEPTANCE = "acceptance"


_MILESTONE_ORDER = {kind: i for i, kind in enumerate(MilestoneKind)}


@dataclass(frozen=True)
class Milestone:
    """One payment of a custom quote."""

    kind: MilestoneKind
    amount: Money
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", parse_enum(MilestoneKind, self.kind, "kind", InvalidMilestones))
        _positive_money(self.amount, "amount")
        if not isinstance(self.description, str):
            raise InvalidMilestones("description must be a string", field="description")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: money as decimal strings, never floats."""
        return {"kind": self.kind.value, "amount": self.amount.to_dict(), "description": self.description}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Milestone":
        """Inverse of ``to_dict``, validated like the constructor."""
        data = mapping(data)
        return cls(
            kind=require(data, "kind"),
            amount=_money_from(data, "amount"),
            description=data.get("description", ""),
        )


@dataclass(frozen=True)
class CustomQuote:
    """A commissioned dataset: milestones (deposit, delivery, acceptance).

    Rule: at least one milestone, each kind at most once, in the order
    deposit -> delivery -> acceptance, all in one currency.
    """

    KIND: ClassVar[str] = "custom"

    code: str
    milestones: tuple[Milestone, ...]
    tax_rate: Decimal = DATA_SERVICES_VAT_CN

    def __post_init__(self) -> None:
        _code(self.code)
        if isinstance(self.milestones, (str, bytes, Mapping)) or not isinstance(self.milestones, Sequence):
            raise InvalidMilestones("milestones must be a list", field="milestones")
        milestones = tuple(self.milestones)
        if not milestones:
            raise InvalidMilestones("a custom quote needs at least one milestone", field="milestones")
        for i, milestone in enumerate(milestones):
            if not isinstance(milestone, Milestone):
                raise InvalidMilestones("each milestone must be a Milestone", field=f"milestones[{i}]")
            if i == 0:
                continue
            previous = milestones[i - 1]
            if _MILESTONE_ORDER[milestone.kind] <= _MILESTONE_ORDER[previous.kind]:
                raise InvalidMilestones(
                    f"{milestone.kind.value} cannot follow {previous.kind.value}; milestones go "
                    "deposit, delivery, acceptance, each at most once",
                    field=f"milestones[{i}].kind",
                )
            _same_currency(milestones[0].amount.currency, milestone.amount, f"milestones[{i}].amount")
        object.__setattr__(self, "milestones", milestones)
        object.__setattr__(self, "tax_rate", parse_tax_rate(self.tax_rate))

    @classmethod
    def from_split(
        cls,
        code: str,
        total: Money,
        split_bps: Mapping[Union[MilestoneKind, str], int],
        tax_rate: Any = DATA_SERVICES_VAT_CN,
    ) -> "CustomQuote":
        """Build milestones from a total and basis points per milestone.

        Rule: the split follows ``allocate`` (sums exactly to ``total``);
        a milestone with 0 bps is left out.
        """
        _positive_money(total, "total")
        kinds = {parse_enum(MilestoneKind, k, "split_bps", InvalidMilestones): bps for k, bps in split_bps.items()}
        ordered = sorted(kinds.items(), key=lambda kv: _MILESTONE_ORDER[kv[0]])
        try:
            parts = allocate(total, ordered)
        except InvalidShares as exc:
            raise InvalidMilestones(str(exc), field="split_bps") from None
        milestones = tuple(Milestone(kind, amount) for kind, amount in parts.items() if amount.is_positive())
        return cls(code=code, milestones=milestones, tax_rate=tax_rate)

    @property
    def currency(self) -> str:
        """The currency every amount of this object is in."""
        return self.milestones[0].amount.currency

    @property
    def total(self) -> Money:
        """The sum of the amounts, in the currency."""
        return Money.sum((m.amount for m in self.milestones), self.currency)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: money as decimal strings, never floats."""
        return {
            "kind": self.KIND,
            "code": self.code,
            "milestones": [m.to_dict() for m in self.milestones],
            "tax_rate": format(self.tax_rate, "f"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CustomQuote":
        """Inverse of ``to_dict``, validated like the constructor."""
        data = mapping(data)
        raw = require(data, "milestones")
        if not isinstance(raw, list):
            raise InvalidMilestones("milestones must be a list", field="milestones")
        milestones = []
        for i, item in enumerate(raw):
            with field_prefix(f"milestones[{i}]"):
                milestones.append(Milestone.from_dict(item))
        return cls(
            code=require(data, "code"),
            milestones=tuple(milestones),
            tax_rate=data.get("tax_rate", DATA_SERVICES_VAT_CN),
        )


@dataclass(frozen=True)
class Tier:
    """Tokens above ``from_tokens`` up to and including ``up_to`` (None: no end)."""

    from_tokens: int
    up_to: Optional[int]
    price_per_million: UnitPrice

    def __post_init__(self) -> None:
        whole_number(self.from_tokens, "from_tokens")
        if self.up_to is not None:
            whole_number(self.up_to, "up_to")
            if self.up_to <= self.from_tokens:
                raise InvalidTiers(
                    f"up_to ({self.up_to}) must be greater than from_tokens ({self.from_tokens})",
                    field="up_to",
                )
        price = _unit_price(self.price_per_million, "price_per_million", allow_zero=True)
        object.__setattr__(self, "price_per_million", price)

    def tokens_in(self, tokens: int) -> int:
        """How many of the first ``tokens`` tokens fall into this tier."""
        top = tokens if self.up_to is None else min(tokens, self.up_to)
        return max(0, top - self.from_tokens)

    def covers(self, tokens: int) -> bool:
        """Whether a total of ``tokens`` lands in this tier (for volume pricing)."""
        return tokens > self.from_tokens and (self.up_to is None or tokens <= self.up_to)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: money as decimal strings, never floats."""
        return {
            "from_tokens": self.from_tokens,
            "up_to": self.up_to,
            "price_per_million": self.price_per_million.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Tier":
        """Inverse of ``to_dict``, validated like the constructor."""
        data = mapping(data)
        return cls(
            from_tokens=require(data, "from_tokens"),
            up_to=data.get("up_to"),
            price_per_million=_unit_price_from(data, "price_per_million"),
        )


def _validate_tiers(tiers: Any) -> tuple[Tier, ...]:
    if isinstance(tiers, (str, bytes, Mapping)) or not isinstance(tiers, Sequence):
        raise InvalidTiers("tiers must be a list", field="tiers")
    tiers = tuple(tiers)
    if not tiers:
        raise InvalidTiers("a rate card needs at least one tier", field="tiers")
    for i, tier in enumerate(tiers):
        if not isinstance(tier, Tier):
            raise InvalidTiers("each tier must be a Tier", field=f"tiers[{i}]")
        where = f"tiers[{i}]"
        if i == 0:
            if tier.from_tokens != 0:
                raise InvalidTiers("the first tier must start at 0 tokens", field=f"{where}.from_tokens")
        else:
            previous_end = tiers[i - 1].up_to
            if previous_end is None:
                raise InvalidTiers(
                    "only the last tier may be open-ended (up_to: null)", field=f"tiers[{i - 1}].up_to"
                )
            if tier.from_tokens < previous_end:
                raise InvalidTiers(
                    f"tier starts at {tier.from_tokens} tokens, overlapping the previous tier "
                    f"which ends at {previous_end}",
                    field=f"{where}.from_tokens",
                )
            if tier.from_tokens > previous_end:
                raise InvalidTiers(
                    f"tier starts at {tier.from_tokens} tokens, leaving a gap after the previous "
                    f"tier which ends at {previous_end}",
                    field=f"{where}.from_tokens",
                )
            _same_currency(tiers[0].price_per_million.currency, tier.price_per_million, f"{where}.price_per_million")
    if tiers[-1].up_to is not None:
        raise InvalidTiers(
            "the last tier must be open-ended (up_to: null) so every token has a price",
            field=f"tiers[{len(tiers) - 1}].up_to",
        )
    return tiers


@dataclass(frozen=True)
class _TieredRateCard:
    code: str
    tiers: tuple[Tier, ...]
    mode: TierMode = TierMode.GRADUATED
    free_tokens: int = 0
    minimum_charge: Optional[Money] = None
    tax_rate: Decimal = DATA_SERVICES_VAT_CN

    KIND: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _code(self.code)
        object.__setattr__(self, "tiers", _validate_tiers(self.tiers))
        object.__setattr__(self, "mode", parse_enum(TierMode, self.mode, "mode"))
        whole_number(self.free_tokens, "free_tokens")
        if self.minimum_charge is not None:
            _positive_money(self.minimum_charge, "minimum_charge")
            _same_currency(self.currency, self.minimum_charge, "minimum_charge")
        object.__setattr__(self, "tax_rate", parse_tax_rate(self.tax_rate))

    @property
    def currency(self) -> str:
        """The currency every amount of this object is in."""
        return self.tiers[0].price_per_million.currency

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: money as decimal strings, never floats."""
        return {
            "kind": self.KIND,
            "code": self.code,
            "mode": self.mode.value,
            "tiers": [t.to_dict() for t in self.tiers],
            "free_tokens": self.free_tokens,
            "minimum_charge": None if self.minimum_charge is None else self.minimum_charge.to_dict(),
            "tax_rate": format(self.tax_rate, "f"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Inverse of ``to_dict``, validated like the constructor."""
        data = mapping(data)
        raw = require(data, "tiers")
        if not isinstance(raw, list):
            raise InvalidTiers("tiers must be a list", field="tiers")
        tiers = []
        for i, item in enumerate(raw):
            with field_prefix(f"tiers[{i}]"):
                tiers.append(Tier.from_dict(item))
        minimum = data.get("minimum_charge")
        if minimum is not None:
            with field_prefix("minimum_charge"):
                minimum = Money.from_dict(minimum)
        return cls(
            code=require(data, "code"),
            tiers=tuple(tiers),
            mode=data.get("mode", TierMode.GRADUATED.value),
            free_tokens=data.get("free_tokens", 0),
            minimum_charge=minimum,
            tax_rate=data.get("tax_rate", DATA_SERVICES_VAT_CN),
        )


@dataclass(frozen=True)
class MeteredRateCard(_TieredRateCard):
    """Pay-as-you-go API access: a price per million tokens consumed."""

    KIND: ClassVar[str] = "metered"


@dataclass(frozen=True)
class RoyaltyRateCard(_TieredRateCard):
    """A royalty per million tokens generated by a model trained on the data."""

    KIND: ClassVar[str] = "royalty"


Offer = Union[SubscriptionPlan, MallPackage, CustomQuote, MeteredRateCard, RoyaltyRateCard]

_BY_KIND: dict[str, Any] = {
    cls.KIND: cls for cls in (SubscriptionPlan, MallPackage, CustomQuote, MeteredRateCard, RoyaltyRateCard)
}


def offer_from_dict(data: Mapping[str, Any]) -> Offer:
    """Read any offer from its ``to_dict()`` form, dispatching on ``kind``.

    Rule: ``kind`` is one of subscription, mall_package, custom, metered, royalty.
    """
    data = mapping(data)
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _BY_KIND:
        allowed = ", ".join(sorted(_BY_KIND))
        raise InvalidOffer(f"kind {kind!r} is not one of {allowed}", field="kind")
    return _BY_KIND[kind].from_dict(data)
