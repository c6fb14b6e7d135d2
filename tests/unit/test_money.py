from decimal import Decimal

import pytest

from app.billing.money import format_money, tax_cents, usage_amount_cents

pytestmark = pytest.mark.unit


def test_format_money_uses_babel_for_the_currency():
    assert format_money(123456, "usd") == "$1,234.56"
    assert format_money(-500, "usd") == "-$5.00"
    assert format_money(1000, "jpy") == "¥1,000"


def test_line_amount_rounds_half_even_once():
    # 0.0125/h for one hour is 1.25 cents: half-even gives 1, 0.0375 gives 4 (3.75 → 4)
    assert usage_amount_cents(Decimal("0.0125"), 3600, "usd") == 1
    assert usage_amount_cents(Decimal("0.0135"), 3600, "usd") == 1
    assert usage_amount_cents(Decimal("0.0375"), 3600, "usd") == 4
    # exactly half a cent rounds to even: 0.005 → 0, 0.015 → 2
    assert usage_amount_cents(Decimal("0.005"), 3600, "usd") == 0
    assert usage_amount_cents(Decimal("0.015"), 3600, "usd") == 2
    # 90 minutes at 0.123456/h = 0.185184 → 19 cents
    assert usage_amount_cents(Decimal("0.123456"), 5400, "usd") == 19


def test_tax_is_rounded_once_on_the_subtotal():
    assert tax_cents(1005, Decimal("0.19")) == 191  # 190.95 → 191
    assert tax_cents(250, Decimal("0.1")) == 25
    assert tax_cents(25, Decimal("0.1")) == 2  # 2.5 → 2 (half-even)


def test_unit_prices_keep_their_exact_places():
    from app.billing.money import format_unit_price

    assert format_unit_price(Decimal("0.100000"), "usd") == "$0.10"
    assert format_unit_price(Decimal("0.125"), "usd") == "$0.125"
    assert format_unit_price(Decimal("0.123456"), "usd") == "$0.123456"
    assert format_unit_price(Decimal("1234.5"), "usd") == "$1,234.50"
