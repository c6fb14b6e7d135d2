"""Amounts, rounding and formatting. Nothing else multiplies prices or formats currency.

Amounts are integers in the currency's minor unit (`*_cents`); hourly prices are Decimals
with up to 6 places. Rounding is half-even, once per line.
"""

from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache

from babel.numbers import format_currency, get_currency_precision
from flask import current_app, has_app_context

from app.models.base import MAX_CENTS  # noqa: F401  (the bound every amount stays within)

SECONDS_PER_HOUR = Decimal(3600)


class InvalidAmount(ValueError):
    """A person typed something that is not an acceptable amount of money (see app.billing.money_input);
    `str(error)` is fit for that person."""


def _currency() -> str:
    return current_app.config["CURRENCY"] if has_app_context() else "usd"


def _locale() -> str:
    return current_app.config["LOCALE"] if has_app_context() else "en_US"


def _currency_and_locale(currency: str | None) -> tuple[str, str]:
    """The currency (upper case; the app's unless given) and the app's locale, one context lookup."""
    if has_app_context():
        config = current_app.config
        return (currency or config["CURRENCY"]).upper(), config["LOCALE"]
    return (currency or "usd").upper(), "en_US"


def minor_unit_factor(currency: str | None = None) -> int:
    return _minor_unit_factor((currency or _currency()).upper())


@lru_cache(maxsize=64)
def _minor_unit_factor(currency: str) -> int:
    return 10 ** get_currency_precision(currency)


def to_decimal(cents: int, currency: str | None = None) -> Decimal:
    return Decimal(cents) / minor_unit_factor(currency)


def format_money(cents: int | None, currency: str | None = None) -> str:
    return _format_money(*_currency_and_locale(currency), cents or 0)


def format_money_for(config, cents: int | None) -> str:
    """`format_money` in the currency and locale of this app config (the template filter: the
    app is known, no context lookup per amount)."""
    return _format_money(config["CURRENCY"].upper(), config["LOCALE"], cents or 0)


@lru_cache(maxsize=8192)
def _format_money(currency: str, locale: str, cents: int) -> str:
    """Babel's formatting is a pure function of its inputs and costs ~0.1 ms a call; pages format
    the same amounts again and again (balances, invoice totals), so the results are kept."""
    return format_currency(to_decimal(cents, currency), currency, locale=locale)


def format_unit_price(price: Decimal | None, currency: str | None = None) -> str:
    """An exact unit price (up to 6 places), e.g. $0.10, $0.125, $0.123456 — never through float."""
    if price is None:
        return ""
    return _format_unit_price(*_currency_and_locale(currency), Decimal(price))


@lru_cache(maxsize=1024)
def _format_unit_price(currency: str, locale: str, price: Decimal) -> str:
    return format_currency(price, currency, format="¤#,##0.00####", locale=locale, currency_digits=False)


def round_cents(amount_major_units: Decimal, currency: str | None = None) -> int:
    """Round an exact amount in major units (e.g. dollars) to minor units, half-even."""
    scaled = amount_major_units * minor_unit_factor(currency)
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def usage_amount_cents(hourly_price: Decimal, seconds: int, currency: str | None = None) -> int:
    """One invoice line: hourly price × hours, rounded half-even once."""
    return round_cents(Decimal(hourly_price) * Decimal(seconds) / SECONDS_PER_HOUR, currency)


def tax_cents(subtotal_cents: int, rate: Decimal) -> int:
    """Tax on the subtotal, rounded half-even once."""
    return int((Decimal(subtotal_cents) * Decimal(rate)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
