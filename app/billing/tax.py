"""Which VAT applies to a buyer (SPEC §7), in one place for every path that computes tax: the
per-customer and bulk monthly invoicing, hand-made invoices and the runway projection.

Rule, in order:
1. Reverse charge: when `REVERSE_CHARGE` is on, a buyer with a VAT ID whose country is an EU member
   state other than `SELLER_COUNTRY` is charged no VAT (rate 0) and the invoice says that the
   recipient accounts for it (Art. 196 of Council Directive 2006/112/EC).
2. Otherwise the buyer country's rate from `VAT_COUNTRY_RATES`, else `VAT_RATE`.
"""

from dataclasses import dataclass
from decimal import Decimal

from flask import current_app, has_app_context

# ISO 3166 codes of the EU member states (Greece is GR here; its VAT prefix is EL).
EU_COUNTRIES = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()
)
REVERSE_CHARGE_NOTE = (
    "Reverse charge: VAT is to be accounted for by the recipient "
    "(Article 196, Council Directive 2006/112/EC)."
)


@dataclass(frozen=True)
class TaxTreatment:
    rate: Decimal
    reverse_charge: bool = False


def _config(key: str, default=None):
    return current_app.config.get(key, default) if has_app_context() else default


def parse_country_rates(spec: str | None) -> dict[str, Decimal]:
    """'DE=0.19,FR=0.20' → {'DE': Decimal('0.19'), 'FR': Decimal('0.20')}."""
    rates = {}
    for part in (spec or "").split(","):
        if "=" in part:
            country, rate = part.split("=", 1)
            rates[country.strip().upper()] = Decimal(rate.strip())
    return rates


def default_vat_rate() -> Decimal:
    return Decimal(str(_config("VAT_RATE", "0") or "0"))


def country_vat_rates() -> dict[str, Decimal]:
    return parse_country_rates(_config("VAT_COUNTRY_RATES"))


def seller_country() -> str:
    return (_config("SELLER_COUNTRY") or "").strip().upper()


def reverse_charge_enabled() -> bool:
    """Reverse charge needs the switch and the seller's own country (to tell "another" EU country)."""
    return bool(_config("REVERSE_CHARGE", False)) and bool(seller_country())


def reverse_charge_countries() -> list[str]:
    """The buyer countries for which a VAT ID means reverse charge (empty when it is off)."""
    if not reverse_charge_enabled():
        return []
    return sorted(EU_COUNTRIES - {seller_country()})


def tax_treatment(country: str | None, vat_id: str | None) -> TaxTreatment:
    country = (country or "").strip().upper()
    if (vat_id or "").strip() and country in reverse_charge_countries():
        return TaxTreatment(Decimal("0"), reverse_charge=True)
    return TaxTreatment(country_vat_rates().get(country, default_vat_rate()))
