"""The money and share filters: every amount a page prints, in the page's locale, signed, never
rounded; every revenue share exact."""

from __future__ import annotations

from decimal import Decimal

import pytest

from market.web.formatting import format_money, format_share
from pricing.money import Money, UnitPrice

LOCALES = ["en", "zh-CN,zh;q=0.9"]


@pytest.fixture(params=LOCALES)
def page(app, request):
    with app.test_request_context(headers={"Accept-Language": request.param}):
        yield


@pytest.mark.parametrize("value, currency, shown", [
    (Money("9800.00", "CNY"), None, "CNY 9,800.00"),
    (-50, "CNY", "-CNY 0.50"),                        # a credit keeps its sign
    (0, "CNY", "CNY 0.00"),
    (Decimal("-0.00"), "CNY", "CNY 0.00"),            # no minus on nothing
    ("1234567.5", "CNY", "CNY 1,234,567.50"),
    (1234, "JPY", "JPY 1,234"),
    (UnitPrice("0.000125", "CNY"), None, "CNY 0.000125"),  # finer than money: every place kept
    ({"amount": "12.50", "currency": "CNY"}, None, "CNY 12.50"),  # an offer's stored terms
])
def test_amounts_are_shown_with_their_code_sign_and_places(page, value, currency, shown):
    assert format_money(value, currency) == shown


def test_a_float_or_an_amount_without_currency_is_refused(page):
    with pytest.raises(TypeError):
        format_money(0.5, "CNY")
    with pytest.raises(TypeError):
        format_money("1.00")


def test_templates_print_money_through_the_filter(app):
    with app.test_request_context(headers={"Accept-Language": "zh-CN"}):
        template = app.jinja_env.from_string("{{ credit|money('CNY') }} {{ price|money }}")
        assert template.render(credit=-50, price=Money("20.00", "CNY")) == "-CNY 0.50 CNY 20.00"



def test_a_share_in_basis_points_is_an_exact_percentage(page):
    assert (format_share(2_500), format_share(1), format_share(10_000)) == \
        ("25.00%", "0.01%", "100.00%")
