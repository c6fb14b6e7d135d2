"""The one money-input door (app.billing.money_input): Babel strict parsing under the
installation's locale, length cap before parsing, bounds per field."""

import time
from decimal import Decimal

import pytest

from app.billing.money import InvalidAmount
from app.billing.money_input import MAX_CENTS, MAX_INPUT_CHARS, parse_money_cents, parse_unit_price

pytestmark = pytest.mark.unit

BIG = 10**12


def cents(text, locale="en_US", **kw):
    kw.setdefault("max_cents", BIG)
    return parse_money_cents(text, currency="usd", locale=locale, **kw)


@pytest.mark.parametrize(
    "text, expected",
    [("25", 2500), ("25.5", 2550), ("25.50", 2550), ("1,250.05", 125005), ("1,000", 100000), (" 0.01 ", 1),
     ("0", 0), (".5", 50)],
)
def test_amounts_people_type_in_en_us(text, expected):
    assert cents(text) == expected


def test_a_comma_for_cents_is_refused_in_en_us_with_the_expected_form():
    with pytest.raises(InvalidAmount) as refused:
        cents("25,50")
    assert str(refused.value) == "Use a dot for cents: 25.50."
    with pytest.raises(InvalidAmount, match=r"Use a dot for cents: 12\.50"):
        cents("12,5")


def test_under_de_de_a_comma_means_cents_and_a_dot_groups():
    assert cents("25,50", locale="de_DE") == 2550
    assert cents("1.250,05", locale="de_DE") == 125005
    with pytest.raises(InvalidAmount, match="Use a comma for cents: 25,50"):
        cents("25.50", locale="de_DE")


def test_the_locale_comes_from_the_installation_config():
    from flask import Flask

    app = Flask(__name__)
    app.config.update(LOCALE="de_DE", CURRENCY="eur")
    with app.app_context():
        assert parse_money_cents("25,50", max_cents=BIG) == 2550
    app.config.update(LOCALE="en_US", CURRENCY="usd")
    with app.app_context():
        with pytest.raises(InvalidAmount, match="Use a dot for cents"):
            parse_money_cents("25,50", max_cents=BIG)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "abc", "1e5", "1E+5", "1e999990", "1E+999999", "NaN", "nan", "Infinity", "-inf", "sNaN",
     "1.001", "25.500", "1.2.3", "12$", "0x10", "١٢", "1\x002", "--5", "+-5", "1_000", "<script>", "=cmd|' /C calc'!A0"],
)
def test_nonsense_is_refused(text):
    with pytest.raises(InvalidAmount):
        cents(text)


@pytest.mark.parametrize("value", [None, 25, 25.5, Decimal("25"), ["25"], {"a": 1}])
def test_non_text_is_refused(value):
    with pytest.raises(InvalidAmount):
        cents(value)


def test_a_megabyte_of_digits_or_exponent_returns_at_once():
    for text in ("9" * 1_000_000, "1e" + "9" * 1_000_000, "1" * (MAX_INPUT_CHARS + 1)):
        started = time.perf_counter()
        with pytest.raises(InvalidAmount, match="too long"):
            cents(text)
        assert time.perf_counter() - started < 0.01


def test_an_exponent_is_refused_without_being_evaluated():
    started = time.perf_counter()
    for text in ("1e999990", "1E+999999", "9e99999999999999999"):
        with pytest.raises(InvalidAmount, match=r"like 25\.00"):
            cents(text)
    assert time.perf_counter() - started < 0.01


def test_negatives_only_where_they_make_sense():
    with pytest.raises(InvalidAmount, match="positive"):
        cents("-5")
    assert cents("-10.00", allow_negative=True, min_cents=1) == -1000
    assert cents("+10.00", allow_negative=True, min_cents=1) == 1000
    with pytest.raises(InvalidAmount, match="at least"):
        cents("0", allow_negative=True, min_cents=1)


def test_bounds_per_field():
    assert cents("5000", min_cents=500, max_cents=500_000) == 500_000
    with pytest.raises(InvalidAmount, match=r"at most \$5,000\.00"):
        cents("5000.01", min_cents=500, max_cents=500_000)
    with pytest.raises(InvalidAmount, match=r"at least \$5\.00"):
        cents("4.99", min_cents=500, max_cents=500_000)
    with pytest.raises(InvalidAmount, match=r"between -\$10\.00 and \$10\.00"):
        cents("-10.01", allow_negative=True, min_cents=1, max_cents=1000)


def test_no_caller_can_allow_more_than_the_64_bit_safe_bound():
    assert MAX_CENTS == 2**53 - 1
    assert cents("90,071,992,547,409.91", max_cents=2**63) == MAX_CENTS
    with pytest.raises(InvalidAmount, match="at most"):
        cents("92233720368547758.07", max_cents=2**63)
    with pytest.raises(InvalidAmount, match="between"):
        cents("-92233720368547758.07", allow_negative=True, max_cents=2**63)


def test_currency_minor_units_decide_the_places():
    assert parse_money_cents("1,000", currency="jpy", locale="en_US", max_cents=BIG) == 1000
    with pytest.raises(InvalidAmount, match="whole amount"):
        parse_money_cents("10.5", currency="jpy", locale="en_US", max_cents=BIG)


def test_unit_prices_keep_up_to_six_places():
    assert parse_unit_price("0.0125", locale="en_US", max_price=Decimal(1000)) == Decimal("0.012500")
    assert parse_unit_price("0,123456", locale="de_DE", max_price=Decimal(1000)) == Decimal("0.123456")
    assert parse_unit_price("0", locale="en_US", max_price=Decimal(1000)) == Decimal("0")
    for bad in ("0.1234567", "-1", "1e3", "NaN", "1000.000001", "9" * 100):
        with pytest.raises(InvalidAmount):
            parse_unit_price(bad, locale="en_US", max_price=Decimal(1000))
