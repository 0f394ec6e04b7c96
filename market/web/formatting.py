"""How pages show money and shares: one filter, ``money``, for every amount a template prints,
and ``share`` for a revenue share.

An amount is shown as its currency's code and the number in the request's locale (its grouping,
decimal and minus signs, through Flask-Babel): ``CNY 1,234.56``, a credit ``-CNY 0.50``. The
code rather than a symbol, because ¥ is both the yuan and the yen and the marketplace sells in
several currencies. Money shows its currency's decimal places; a unit price finer than money
(``CNY 0.000125`` per token) keeps every place it has, so a page never rounds what was charged.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

from flask_babel import format_currency, format_percent

from pricing.money import Money, UnitPrice, minor_units


def format_money(value: Any, currency: str | None = None) -> str:
    """``value`` as a page shows it: a ``Money`` or ``UnitPrice``; minor units (an ``int``) or a
    decimal amount (a ``Decimal`` or its string) with their ``currency``; or an amount's JSON
    form, ``{"amount": "12.50", "currency": "CNY"}``, as offers' terms and certificates keep it."""
    if isinstance(value, (Money, UnitPrice)):
        amount, currency = value.amount, value.currency
    elif isinstance(value, Mapping):
        amount, currency = Decimal(value["amount"]), value["currency"]
    elif isinstance(value, int) and not isinstance(value, bool):
        money = Money.from_minor(value, currency)
        amount, currency = money.amount, money.currency
    elif isinstance(value, (Decimal, str)):
        amount = Decimal(value)
    else:
        raise TypeError(f"not an amount of money: {value!r}")  # a float, above all
    if currency is None:
        raise TypeError(f"an amount of {value!r} needs its currency")
    amount = abs(amount) if amount.is_zero() else amount  # never "-CNY 0.00"
    places = max(minor_units(currency), -amount.as_tuple().exponent)
    pattern = "¤¤ #,##0" + ("." + "0" * places if places > 0 else "")
    return format_currency(amount, currency, format=pattern, currency_digits=False)


def format_share(share_bps: int) -> str:
    """A revenue share in basis points as a percentage with two places, ``2,500`` as
    ``25.00%``: exact (no float), in the request's locale."""
    return format_percent(Decimal(share_bps) / 10_000, format="#,##0.00%")
