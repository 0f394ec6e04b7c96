"""Money and unit prices: exact decimal amounts in an ISO 4217 currency.

Rules this module enforces
--------------------------
* **Never float.** ``Money(Decimal("1.00"), "CNY")``, ``Money("1.00", "CNY")``,
  ``Money(1, "CNY")`` and ``Money.from_minor(100, "CNY")`` are all CNY 1.00;
  ``Money(1.0, "CNY")`` raises ``FloatNotAllowed``. Binary floats cannot hold
  0.10 exactly, and a marketplace that splits every payment across several
  participants would leak fractions of a fen on every sale.
* **Minor units per currency.** CNY and USD have 2 decimal places, JPY and KRW
  0, BHD and KWD 3 (ISO 4217). A ``Money`` always holds a whole number of
  minor units, so ``.minor`` (an ``int``) plus ``.currency`` is exactly how
  billing persists it. Giving ``Money`` more decimals than the currency has
  raises ``InvalidAmount``; call ``Money.rounded`` to round on purpose.
* **One currency at a time.** Adding, subtracting or comparing amounts in
  different currencies raises ``CurrencyMismatch``.
* **Rounding is ROUND_HALF_UP**, the commercial convention: halves round away
  from zero (CNY 0.125 -> 0.13, CNY -0.125 -> -0.13), so a credit is always
  the exact mirror of the charge it reverses. Rounding is done on the exact
  rational value (``fractions.Fraction``), never on an intermediate result,
  so there is exactly one rounding step per amount.
* **Unit prices are finer than money.** A price per token of CNY 0.000002 is
  normal. ``UnitPrice`` keeps up to 12 decimal places and only becomes
  ``Money`` through ``UnitPrice.total(quantity, per)``, which multiplies
  exactly and rounds once, at the line total, never per token:
  ``UnitPrice("0.000002", "CNY").total(1_234_567)`` is CNY 2.469134 -> 2.47.

Serialized form (``to_dict``): ``{"amount": "12.50", "currency": "CNY"}``,
the amount always a string of decimals, never a JSON number.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from numbers import Rational
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Union

from .errors import (
    CurrencyMismatch,
    FloatNotAllowed,
    InvalidAmount,
    InvalidQuantity,
    UnknownCurrency,
)

__all__ = [
    "CURRENCY_MINOR_UNITS",
    "Money",
    "UnitPrice",
    "minor_units",
    "normalize_currency",
    "to_decimal",
    "round_half_up",
    "divide_half_up",
]

DecimalLike = Union[Decimal, int, str]

# ISO 4217 active currencies (list one, 2024) with their minor units. Funds
# codes and precious metals without minor units are left out on purpose.
_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
_FOUR = "CLF UYW"
_TWO = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV "
    "BRL BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE "
    "CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD "
    "HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD "
    "LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN "
    "NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG "
    "SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD "
    "TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL"
)

CURRENCY_MINOR_UNITS: Mapping[str, int] = MappingProxyType(
    {
        **{c: 2 for c in _TWO.split()},
        **{c: 0 for c in _ZERO.split()},
        **{c: 3 for c in _THREE.split()},
        **{c: 4 for c in _FOUR.split()},
    }
)

# Billing stores minor units in a BIGINT; stay well inside it so sums of
# many amounts cannot overflow the column either.
MAX_MINOR = 10**15

# A per-token price in CNY needs 6 places; 12 leaves room for per-token
# royalties in 3-decimal currencies without inviting absurd precision.
MAX_UNIT_PRICE_PLACES = 12


def normalize_currency(code: Any, field: str = "currency") -> str:
    """Return the ISO 4217 code in upper case.

    Rule: the code must be a known ISO 4217 currency; case is ignored because
    Stripe spells codes in lower case ("cny").
    """
    if not isinstance(code, str):
        raise UnknownCurrency(
            f"currency must be an ISO 4217 code such as 'CNY', not {type(code).__name__}",
            field=field,
        )
    upper = code.strip().upper()
    if upper not in CURRENCY_MINOR_UNITS:
        raise UnknownCurrency(f"unknown currency {code!r}; use an ISO 4217 code such as 'CNY'", field=field)
    return upper


def minor_units(currency: str, field: str = "currency") -> int:
    """Return the number of decimal places of ``currency`` (CNY 2, JPY 0).

    Rule: ISO 4217 minor units; unknown codes raise ``UnknownCurrency``.
    """
    return CURRENCY_MINOR_UNITS[normalize_currency(currency, field)]


def to_decimal(value: Any, field: str) -> Decimal:
    """Convert a Decimal, int or decimal string to a finite ``Decimal``.

    Rule: floats raise ``FloatNotAllowed`` (they are never exact money);
    booleans, NaN, infinities and unparseable strings raise ``InvalidAmount``.
    """
    if isinstance(value, float):
        raise FloatNotAllowed(
            f"{value!r} is a float; pass a Decimal or a string such as '{value}'",
            field=field,
        )
    if isinstance(value, bool):
        raise InvalidAmount("expected a decimal amount, not a boolean", field=field)
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidAmount(f"{value!r} is not a decimal number", field=field) from None
    else:
        raise InvalidAmount(
            f"expected a Decimal, int or decimal string, not {type(value).__name__}", field=field
        )
    if not result.is_finite():
        raise InvalidAmount(f"{value!r} is not a finite number", field=field)
    return result


def round_half_up(value: Fraction) -> int:
    """Round an exact rational to the nearest integer, halves away from zero.

    Rule: ROUND_HALF_UP, symmetric for negatives (-2.5 -> -3) so that
    a reversal is the exact negation of the original.
    """
    return divide_half_up(value.numerator, value.denominator)


def divide_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded as ``round_half_up`` rounds, in integers alone: for
    the many values of a metered batch, where building a ``Fraction`` each would cost more than
    the rounding."""
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    magnitude = (2 * abs(numerator) + denominator) // (2 * denominator)
    return magnitude if numerator >= 0 else -magnitude


def minor_to_dict(minor: int, currency: str) -> dict[str, str]:
    """The JSON form of an amount in minor units (``Money.to_dict`` is this of its own), with
    no ``Money`` built: for answers that list thousands of amounts."""
    code = normalize_currency(currency)
    places = CURRENCY_MINOR_UNITS[code]
    if not places:
        return {"amount": str(minor), "currency": code}
    whole, fraction = divmod(abs(minor), 10**places)
    return {"amount": f"{'-' if minor < 0 else ''}{whole}.{fraction:0{places}d}",
            "currency": code}


def _scaled_decimal(scaled: int, places: int) -> Decimal:
    # Built from digits, so no decimal context (precision, rounding) applies.
    digits = tuple(int(d) for d in str(abs(scaled)))
    return Decimal((1 if scaled < 0 else 0, digits, -places))


def _exact(value: Any, field: str) -> Fraction:
    if isinstance(value, Fraction):
        return value
    if isinstance(value, Rational) and not isinstance(value, bool):
        return Fraction(value)
    return Fraction(to_decimal(value, field))


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in a currency, held as a whole number of minor units."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        currency = normalize_currency(self.currency)
        places = CURRENCY_MINOR_UNITS[currency]
        amount = to_decimal(self.amount, "amount")
        if amount.adjusted() > 18:  # before any arithmetic on an absurd exponent
            raise InvalidAmount(f"{amount} {currency} is too large", field="amount")
        scaled = Fraction(amount) * 10**places
        if scaled.denominator != 1:
            raise InvalidAmount(
                f"{amount} has more than {places} decimal places for {currency}; "
                "round it explicitly with Money.rounded()",
                field="amount",
            )
        minor = scaled.numerator
        if abs(minor) > MAX_MINOR:
            raise InvalidAmount(f"{amount} {currency} is too large", field="amount")
        object.__setattr__(self, "currency", currency)
        object.__setattr__(self, "amount", _scaled_decimal(minor, places))

    # -- construction -----------------------------------------------------

    @classmethod
    def from_minor(cls, minor: int, currency: str) -> "Money":
        """Build money from integer minor units (fen, cents, yen).

        Rule: ``minor`` must be an ``int``; this is the persisted form.
        """
        if isinstance(minor, float):
            raise FloatNotAllowed("minor units must be an integer, not a float", field="amount")
        if isinstance(minor, bool) or not isinstance(minor, int):
            raise InvalidAmount("minor units must be an integer", field="amount")
        code = normalize_currency(currency)
        if abs(minor) > MAX_MINOR:
            raise InvalidAmount(f"{minor} minor units of {code} is too large", field="amount")
        # Whole minor units need none of the constructor's checks: built directly, since
        # this is how every stored amount is read back (hot in metering and statements).
        money = object.__new__(cls)
        object.__setattr__(money, "amount", _scaled_decimal(minor, CURRENCY_MINOR_UNITS[code]))
        object.__setattr__(money, "currency", code)
        return money

    @classmethod
    def zero(cls, currency: str) -> "Money":
        """Zero in ``currency``."""
        return cls.from_minor(0, currency)

    @classmethod
    def rounded(cls, value: Union[DecimalLike, Fraction], currency: str) -> "Money":
        """Round an exact value to the currency's minor unit, half-up.

        Rule: the single, explicit rounding step of the package.
        """
        places = minor_units(currency)
        return cls.from_minor(round_half_up(_exact(value, "amount") * 10**places), currency)

    @classmethod
    def sum(cls, amounts: Iterable["Money"], currency: str) -> "Money":
        """Sum amounts of one currency; an empty sum is zero in ``currency``.

        Rule: every amount must be in ``currency``.
        """
        total = cls.zero(currency)
        for amount in amounts:
            total = total + amount
        return total

    # -- views ------------------------------------------------------------

    @property
    def minor(self) -> int:
        """The amount in integer minor units (CNY 12.34 -> 1234)."""
        # Exact: the amount has exactly the currency's places, so the shift is an integer.
        return int(self.amount.scaleb(CURRENCY_MINOR_UNITS[self.currency]))

    @property
    def places(self) -> int:
        """Decimal places of this currency."""
        return CURRENCY_MINOR_UNITS[self.currency]

    def as_fraction(self) -> Fraction:
        """The exact amount as a ``Fraction`` (for exact intermediate arithmetic)."""
        return Fraction(self.amount)

    def is_zero(self) -> bool:
        """Whether the amount is zero."""
        return self.amount == 0

    def is_positive(self) -> bool:
        """Whether the amount is greater than zero."""
        return self.amount > 0

    def is_negative(self) -> bool:
        """Whether the amount is below zero."""
        return self.amount < 0

    # -- arithmetic -------------------------------------------------------

    def _check(self, other: "Money", field: str = "currency") -> None:
        if self.currency != other.currency:
            raise CurrencyMismatch(
                f"cannot combine {self.currency} with {other.currency}", field=field
            )

    def __add__(self, other: Any) -> "Money":
        if not isinstance(other, Money):
            return NotImplemented
        self._check(other)
        return Money.from_minor(self.minor + other.minor, self.currency)

    def __radd__(self, other: Any) -> "Money":
        # Lets the builtin sum() start from 0; any other non-Money is an error.
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: Any) -> "Money":
        if not isinstance(other, Money):
            return NotImplemented
        self._check(other)
        return Money.from_minor(self.minor - other.minor, self.currency)

    def __neg__(self) -> "Money":
        return Money.from_minor(-self.minor, self.currency)

    def __abs__(self) -> "Money":
        return Money.from_minor(abs(self.minor), self.currency)

    def __mul__(self, other: Any) -> "Money":
        # Only integer multiples are exact; a Decimal factor needs rounding and
        # must go through scale() so the rounding is visible at the call site.
        if isinstance(other, bool) or not isinstance(other, int):
            if isinstance(other, float):
                raise FloatNotAllowed("cannot multiply money by a float", field="quantity")
            return NotImplemented
        return Money.from_minor(self.minor * other, self.currency)

    __rmul__ = __mul__

    def scale(self, factor: Union[DecimalLike, Fraction]) -> "Money":
        """Multiply by an exact factor and round once, half-up.

        Rule: ``factor`` is exact (Decimal, int, str or Fraction), never float.
        """
        return Money.rounded(self.as_fraction() * _exact(factor, "factor"), self.currency)

    def _cmp(self, other: Any) -> int:
        if not isinstance(other, Money):
            raise TypeError(f"cannot compare Money with {type(other).__name__}")
        self._check(other)
        return (self.minor > other.minor) - (self.minor < other.minor)

    def __lt__(self, other: Any) -> bool:
        return self._cmp(other) < 0

    def __le__(self, other: Any) -> bool:
        return self._cmp(other) <= 0

    def __gt__(self, other: Any) -> bool:
        return self._cmp(other) > 0

    def __ge__(self, other: Any) -> bool:
        return self._cmp(other) >= 0

    # -- serialization ----------------------------------------------------

    def __str__(self) -> str:
        return f"{self.currency} {self.amount:f}"

    def to_dict(self) -> dict[str, str]:
        """``{"amount": "12.50", "currency": "CNY"}``; the amount is a string."""
        return minor_to_dict(self.minor, self.currency)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Money":
        """Inverse of ``to_dict``; a JSON number for ``amount`` is refused."""
        if not isinstance(data, Mapping):
            raise InvalidAmount("expected an object with 'amount' and 'currency'", field="amount")
        return cls(data.get("amount"), data.get("currency"))


@dataclass(frozen=True, slots=True)
class UnitPrice:
    """A price per unit that may be finer than the currency's minor unit."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        currency = normalize_currency(self.currency)
        amount = to_decimal(self.amount, "amount")
        if amount.adjusted() > 18:
            raise InvalidAmount(f"{amount} {currency} is too large", field="amount")
        exact = Fraction(amount)
        if (exact * 10**MAX_UNIT_PRICE_PLACES).denominator != 1:
            raise InvalidAmount(
                f"{amount} has more than {MAX_UNIT_PRICE_PLACES} decimal places", field="amount"
            )
        if abs(exact) > MAX_MINOR:
            raise InvalidAmount(f"{amount} {currency} is too large", field="amount")
        # Normalize so that "2.50" and "2.5" are one value object (equal and
        # equally serialized), keeping at least the currency's own places.
        places = CURRENCY_MINOR_UNITS[currency]
        while (exact * 10**places).denominator != 1:
            places += 1
        object.__setattr__(self, "currency", currency)
        object.__setattr__(self, "amount", _scaled_decimal(int(exact * 10**places), places))

    @classmethod
    def of(cls, money: Money) -> "UnitPrice":
        """A unit price equal to ``money``."""
        return cls(money.amount, money.currency)

    def as_fraction(self) -> Fraction:
        """The exact value as a ``Fraction``."""
        return Fraction(self.amount)

    def is_negative(self) -> bool:
        """Whether the amount is below zero."""
        return self.amount < 0

    def is_zero(self) -> bool:
        """Whether the amount is zero."""
        return self.amount == 0

    def total(self, quantity: int, per: int = 1) -> Money:
        """The line total ``amount * quantity / per``, rounded once, half-up.

        Rule: ``quantity`` and ``per`` are integers (tokens, days, copies);
        ``per`` is the size of the priced unit (1,000,000 for a price per
        million tokens, the days in the period for proration).
        """
        if isinstance(quantity, float) or isinstance(per, float):
            raise FloatNotAllowed("quantities are integers, not floats", field="quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            raise InvalidQuantity("quantity must be an integer", field="quantity")
        if isinstance(per, bool) or not isinstance(per, int) or per <= 0:
            raise InvalidQuantity("the priced unit must be a positive integer", field="per")
        return Money.rounded(self.as_fraction() * quantity / per, self.currency)

    def __str__(self) -> str:
        return f"{self.currency} {self.amount:f}"

    def to_dict(self) -> dict[str, str]:
        """``{"amount": "0.000002", "currency": "CNY"}``; the amount is a string."""
        return {"amount": format(self.amount, "f"), "currency": self.currency}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UnitPrice":
        """Inverse of ``to_dict``."""
        if not isinstance(data, Mapping):
            raise InvalidAmount("expected an object with 'amount' and 'currency'", field="amount")
        return cls(data.get("amount"), data.get("currency"))
