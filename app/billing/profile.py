"""The customer's billing profile (SPEC §2): who the invoices are made out to.

Values are validated here, whatever door they come through: lengths, the country against the ISO
3166 list (names from Babel, in the installation's locale), and the VAT ID by format and check digit
with python-stdnum (`stdnum.eu.vat`, offline: no VIES call). A VAT ID is stored compact
(`DE136695976`) and must belong to the profile's country. Issued invoices keep the snapshot taken at
issue (app.billing.invoices), so changing the profile never changes them.
"""

import re
from dataclasses import asdict, dataclass
from functools import lru_cache

from babel import Locale
from flask import current_app, has_app_context
from sqlalchemy import select
from sqlalchemy.orm import Session
from stdnum.eu import vat as eu_vat
from stdnum.exceptions import InvalidChecksum, InvalidComponent, InvalidFormat, InvalidLength, ValidationError

from app.billing.audit import record_audit
from app.models import User

# Babel territories that are not countries (regions, groupings, private-use codes).
_NOT_COUNTRIES = {"EU", "EZ", "UN", "QO", "ZZ", "XA", "XB"}
# VAT prefixes that differ from the ISO country code.
_VAT_PREFIX_COUNTRY = {"EL": "GR", "XI": "GB"}

LIMITS = {"name": 200, "company": 200, "address": 500, "postcode": 20, "city": 120, "country": 2, "vat_id": 40}


class InvalidProfile(Exception):
    """`errors` maps each bad field to a message fit for the customer."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class BillingProfile:
    name: str = ""
    company: str = ""
    address: str = ""
    postcode: str = ""
    city: str = ""
    country: str = ""
    vat_id: str = ""

    @classmethod
    def of(cls, user: User) -> "BillingProfile":
        return cls(**{key: getattr(user, key) or "" for key in LIMITS})


def _locale() -> str:
    return current_app.config.get("LOCALE", "en_US") if has_app_context() else "en_US"


@lru_cache(maxsize=8)
def _countries(locale: str) -> tuple[tuple[str, str], ...]:
    territories = Locale.parse(locale).territories
    codes = [code for code in territories if len(code) == 2 and code.isalpha() and code not in _NOT_COUNTRIES]
    return tuple(sorted(((code, territories[code]) for code in codes), key=lambda item: item[1]))


def countries() -> tuple[tuple[str, str], ...]:
    """(ISO 3166 alpha-2 code, name) pairs sorted by name, in the installation's locale."""
    return _countries(_locale())


def country_name(code: str | None) -> str:
    if not code:
        return ""
    return dict(countries()).get(code.upper(), code.upper())


def vat_id_country(vat_id: str) -> str:
    """The ISO country of a compact EU VAT ID (`EL…` is Greece, `XI…` Northern Ireland/GB)."""
    prefix = vat_id[:2].upper()
    return _VAT_PREFIX_COUNTRY.get(prefix, prefix)


def normalise_vat_id(text: str | None, country: str | None) -> str:
    """Check a VAT ID by format and check digit; returns it compact, '' when empty.
    Raises ValueError with a message for the customer."""
    raw = (text or "").strip()
    if not raw:
        return ""
    if len(raw) > LIMITS["vat_id"]:
        raise ValueError("A VAT ID is at most 40 characters.")
    compact = re.sub(r"[\s.\-/]", "", raw).upper()
    prefix = compact[:2].lower()
    if not re.fullmatch(r"[A-Z]{2}[0-9A-Z+*]{2,14}", compact) or prefix not in (eu_vat.MEMBER_STATES | {"el"}):
        raise ValueError("Enter an EU VAT ID starting with its country prefix, e.g. DE123456789.")
    try:
        compact = eu_vat.validate(compact)
    except InvalidChecksum:
        raise ValueError("This VAT ID is not valid: its check digit does not match.") from None
    except InvalidLength:
        raise ValueError(f"This VAT ID has the wrong length for {country_name(vat_id_country(compact))}.") from None
    except (InvalidFormat, InvalidComponent):
        raise ValueError(f"This is not a valid VAT ID format for {country_name(vat_id_country(compact))}.") from None
    except ValidationError:
        raise ValueError("This VAT ID is not valid.") from None
    if not country:
        raise ValueError("Choose your country to go with the VAT ID.")
    if vat_id_country(compact) != country.upper():
        raise ValueError(
            f"This VAT ID is from {country_name(vat_id_country(compact))}, but your country is {country_name(country)}."
        )
    return compact


def validate_profile(profile: BillingProfile) -> BillingProfile:
    """Trimmed, checked values; raises InvalidProfile naming every bad field at once."""
    values = {key: (value or "").strip() for key, value in asdict(profile).items()}
    values["address"] = "\n".join(line.strip() for line in values["address"].splitlines() if line.strip())
    values["country"] = values["country"].upper()
    errors: dict[str, str] = {}
    for key, limit in LIMITS.items():
        if key != "vat_id" and len(values[key]) > limit:
            errors[key] = f"At most {limit} characters."
        elif any(ord(ch) < 32 and not (ch == "\n" and key == "address") for ch in values[key]):
            errors[key] = "Remove the control characters."
    if values["country"] and values["country"] not in dict(countries()):
        errors["country"] = "Choose a country from the list."
    if "country" not in errors and "vat_id" not in errors:
        try:
            values["vat_id"] = normalise_vat_id(values["vat_id"], values["country"])
        except ValueError as exc:
            errors["vat_id"] = str(exc)
    if errors:
        raise InvalidProfile(errors)
    return BillingProfile(**values)


def update_billing_profile(session: Session, customer_id: int, profile: BillingProfile) -> BillingProfile:
    """Validate and save the customer's profile; audited (actor = the customer). Commits.
    Nothing is written when a field is invalid."""
    clean = validate_profile(profile)
    try:
        user = session.scalar(select(User).where(User.id == customer_id).with_for_update())
        if user is None:
            raise LookupError(customer_id)
        before = asdict(BillingProfile.of(user))
        for key, value in asdict(clean).items():
            setattr(user, key, value or None)
        if before != asdict(clean):
            record_audit(session, customer_id, "customer.billing_profile", "user", customer_id, before, asdict(clean))
        session.commit()
    except Exception:
        session.rollback()
        raise
    return clean
