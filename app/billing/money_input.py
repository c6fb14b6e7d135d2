"""The one door for money typed by a person or sent by a client: every money field goes through here.

Text is parsed with Babel (`parse_decimal(..., strict=True)`) under the installation's LOCALE, so
"25,50" is 25.50 under de_DE and refused under en_US ("Use a dot for cents: 25.50"), never 2550.

Guarantees, in this order, so that no input costs more than microseconds:
1. the text is refused when longer than MAX_INPUT_CHARS, before anything else looks at it;
2. only ASCII digits, the locale's group and decimal symbols and one leading sign get through
   (no exponents, NaN, Infinity, other scripts' digits, control characters);
3. at most the currency's minor-unit places (amounts) or `max_places` (unit prices);
4. the value is checked against the caller's bounds, and every amount fits MAX_CENTS (2^53 - 1),
   which keeps sums within 64 bits and every JSON number exact for any client.

Errors are `InvalidAmount` with a message fit for the person who typed the text.
"""

import re
from decimal import Decimal
from functools import lru_cache

from babel.numbers import (
    NumberFormatError,
    get_currency_precision,
    get_decimal_symbol,
    get_group_symbol,
    parse_decimal,
)

from app.billing.money import MAX_CENTS, InvalidAmount, _currency, _locale, format_money, format_unit_price

MAX_INPUT_CHARS = 40
DEFAULT_MAX_UNIT_PRICE = Decimal("1000000")

_SPACE_GROUPS = {"\u00a0", "\u202f", " "}
_SYMBOL_NAMES = {".": "dot", ",": "comma"}


@lru_cache(maxsize=32)
def _symbols(locale: str) -> tuple[str, str, re.Pattern]:
    decimal_symbol = get_decimal_symbol(locale)
    group_symbol = get_group_symbol(locale)
    allowed = re.compile(f"[0-9{re.escape(decimal_symbol)}{re.escape(group_symbol)}]+")
    return decimal_symbol, group_symbol, allowed


def _clean(text, locale: str) -> tuple[str, bool]:
    """Length cap, whitespace, sign and character whitelist. Returns (unsigned text, negative)."""
    if text is None:
        raise InvalidAmount("Enter an amount.")
    if not isinstance(text, str):
        raise InvalidAmount("Enter an amount as text, e.g. 25.00.")
    if len(text) > MAX_INPUT_CHARS:
        raise InvalidAmount("That amount is too long.")
    decimal_symbol, group_symbol, allowed = _symbols(locale)
    cleaned = text.strip()
    if group_symbol in _SPACE_GROUPS:
        cleaned = re.sub(r"[ \u00a0\u202f]", group_symbol, cleaned)
    negative = cleaned.startswith(("-", "\u2212"))
    if cleaned[:1] in ("-", "+", "\u2212"):
        cleaned = cleaned[1:].lstrip()
    if not cleaned:
        raise InvalidAmount("Enter an amount.")
    if not allowed.fullmatch(cleaned):
        raise InvalidAmount(f"Enter an amount like {_example(locale)}.")
    return cleaned, negative


def _example(locale: str, places: int = 2) -> str:
    decimal_symbol, _, _ = _symbols(locale)
    return "25" + (decimal_symbol + "0" * places if places else "")


def _parse(cleaned: str, locale: str, places: int) -> Decimal:
    decimal_symbol, group_symbol, _ = _symbols(locale)
    try:
        value = parse_decimal(cleaned, locale=locale, strict=True)
    except NumberFormatError:
        raise InvalidAmount(_hint(cleaned, decimal_symbol, group_symbol, places, locale)) from None
    if not value.is_finite():
        raise InvalidAmount(f"Enter an amount like {_example(locale)}.")
    if -value.as_tuple().exponent > places:
        if places == 0:
            raise InvalidAmount("Enter a whole amount, without cents.")
        raise InvalidAmount(f"Use at most {places} decimal places.")
    return value


def _hint(cleaned: str, decimal_symbol: str, group_symbol: str, places: int, locale: str) -> str:
    """The message for text Babel refuses: when the group symbol was used as the decimal separator
    ("25,50" in en_US, "25.50" in de_DE), show the expected form."""
    whole, sep, fraction = cleaned.rpartition(group_symbol)
    if sep and places and whole and 1 <= len(fraction) <= places and fraction.isdigit() and decimal_symbol not in cleaned:
        name = _SYMBOL_NAMES.get(decimal_symbol, f"“{decimal_symbol}”")
        return f"Use a {name} for cents: {whole}{decimal_symbol}{fraction.ljust(2, '0')}."
    return f"Enter an amount like {_example(locale)}."


def parse_money_cents(
    text, *, max_cents: int, min_cents: int = 0, allow_negative: bool = False, currency: str | None = None,
    locale: str | None = None,
) -> int:
    """A person's amount → integer minor units of the installation's currency.

    Accepted: min_cents <= value <= max_cents; with `allow_negative`, the magnitude is bounded by
    min_cents and max_cents instead (an adjustment of -10.00 or +10.00). `max_cents` is capped at
    MAX_CENTS whatever the caller asks."""
    locale = locale or _locale()
    currency = (currency or _currency()).upper()
    places = get_currency_precision(currency)
    cleaned, negative = _clean(text, locale)
    if negative and not allow_negative:
        raise InvalidAmount("Enter a positive amount.")
    value = _parse(cleaned, locale, places)
    cents = int(value.scaleb(places))
    max_cents = min(max_cents, MAX_CENTS)
    if allow_negative and cents > max_cents:
        most = format_money(max_cents, currency)
        raise InvalidAmount(f"Enter an amount between -{most} and {most}.")
    if cents > max_cents:
        raise InvalidAmount(f"Enter at most {format_money(max_cents, currency)}.")
    if cents < min_cents:
        raise InvalidAmount(f"Enter at least {format_money(min_cents, currency)}.")
    return -cents if negative else cents


def parse_unit_price(text, *, max_places: int = 6, max_price: Decimal | None = None, locale: str | None = None) -> Decimal:
    """A unit price (e.g. an hourly price) → an exact Decimal with at most `max_places` places,
    zero or more, below `max_price` (default: the HOURLY_PRICE_MAX setting)."""
    locale = locale or _locale()
    cleaned, negative = _clean(text, locale)
    if negative:
        raise InvalidAmount("Enter a price of zero or more.")
    value = _parse(cleaned, locale, max_places)
    limit = max_price if max_price is not None else _max_unit_price()
    if value > limit:
        raise InvalidAmount(f"Enter a price of at most {format_unit_price(limit)}.")
    return value.quantize(Decimal(1).scaleb(-max_places))


def _max_unit_price() -> Decimal:
    from flask import current_app, has_app_context

    if has_app_context():
        return Decimal(str(current_app.config.get("HOURLY_PRICE_MAX", DEFAULT_MAX_UNIT_PRICE)))
    return DEFAULT_MAX_UNIT_PRICE


def configured_max_cents(setting: str, default: int) -> int:
    """A per-field maximum from configuration (e.g. ADJUSTMENT_MAX_CENTS), never above MAX_CENTS."""
    from flask import current_app, has_app_context

    value = current_app.config.get(setting, default) if has_app_context() else default
    return min(int(value), MAX_CENTS)
