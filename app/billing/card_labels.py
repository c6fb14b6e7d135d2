"""How a card is named to a person: "Visa ending 4242" (never more than brand and last 4 digits)."""

BRAND_NAMES = {
    "amex": "American Express",
    "american_express": "American Express",
    "cartes_bancaires": "Cartes Bancaires",
    "diners": "Diners Club",
    "discover": "Discover",
    "eftpos_au": "eftpos",
    "jcb": "JCB",
    "mastercard": "Mastercard",
    "unionpay": "UnionPay",
    "visa": "Visa",
}


def brand_name(brand: str | None) -> str:
    key = (brand or "").strip().lower()
    return BRAND_NAMES.get(key) or (key.replace("_", " ").title() if key else "Card")


def card_label(brand: str | None, last4: str | None) -> str:
    if not last4:
        return brand_name(brand)
    return f"{brand_name(brand)} ending {last4}"
