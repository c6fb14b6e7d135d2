"""What an invoice says, for its page and its PDF alike (SPEC §7; what an EU invoice needs):
seller and buyer with address and VAT ID, invoice date, supply period, number, due date, lines with
quantity, unit price and amount, tax rate and tax per rate, totals, the reverse-charge note, and the
payments received (cards named "Visa ending 4242", the Stripe reference beside).

Everything comes from the invoice's own snapshot taken at issue (app.billing.invoices.issue_invoice),
never from the customer's current profile, so an issued invoice reads the same forever. A draft has
no snapshot yet and shows the configured seller.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from babel.numbers import format_decimal
from flask import current_app, has_app_context
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.billing.card_labels import card_label
from app.billing.profile import country_name
from app.billing.tax import REVERSE_CHARGE_NOTE
from app.models import Card, ChargeAttempt, Invoice, InvoicePayment

SOURCE_LABELS = {"cash": "Cash balance", "voucher": "Voucher balance", "bank_transfer": "Bank transfer",
                 "credit_note": "Credit note", "card": "Card"}


@dataclass(frozen=True)
class Party:
    name: str
    lines: list[str]  # company / address lines / postcode + city / country
    vat_id: str | None
    email: str | None = None


@dataclass(frozen=True)
class DocumentLine:
    description: str
    plan_name: str
    quantity: str  # "12.50 h", or "1"
    unit_price: Decimal | None  # per hour for usage lines; None → the amount is the unit price
    unit: str  # "h" or ""
    amount_cents: int


@dataclass(frozen=True)
class PaymentRow:
    created_at: datetime
    source: str  # "Visa ending 4242", "Cash balance", …
    reference: str | None  # Stripe payment intent, bank reference
    amount_cents: int


@dataclass(frozen=True)
class InvoiceDocument:
    invoice: Invoice
    seller: Party
    buyer: Party
    invoice_date: date | None
    due_date: date | None
    supply_period: str  # "2026-10-01 – 2026-10-31", or the invoice date
    lines: list[DocumentLine]
    tax_label: str  # "VAT 19%" / "VAT 0% (reverse charge)"
    reverse_charge_note: str | None
    payments: list[PaymentRow]


def _config(key: str, default=None):
    return current_app.config.get(key, default) if has_app_context() else default


def _locale() -> str:
    return _config("LOCALE", "en_US")


def _address_lines(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").replace(";", "\n").splitlines() if part.strip()]


def seller_party(invoice: Invoice) -> Party:
    issued = invoice.state != "draft" and invoice.seller_name is not None
    name = invoice.seller_name if issued else _config("SELLER_NAME", "")
    address = invoice.seller_address if issued else _config("SELLER_ADDRESS")
    country = invoice.seller_country if issued else _config("SELLER_COUNTRY")
    vat_id = invoice.seller_vat_id if issued else _config("SELLER_VAT_ID")
    lines = _address_lines(address) + ([country_name(country)] if country else [])
    return Party(name or "", lines, vat_id or None)


def buyer_party(invoice: Invoice) -> Party:
    lines = [invoice.buyer_company] if invoice.buyer_company else []
    lines += _address_lines(invoice.buyer_address)
    place = " ".join(part for part in (invoice.buyer_postcode, invoice.buyer_city) if part)
    if place:
        lines.append(place)
    if invoice.buyer_country:
        lines.append(country_name(invoice.buyer_country))
    return Party(invoice.buyer_name or invoice.buyer_company or invoice.buyer_email or "", lines,
                 invoice.buyer_vat_id or None, invoice.buyer_email)


def percent(rate: Decimal) -> str:
    return format_decimal(Decimal(rate) * 100, format="#,##0.##", locale=_locale()) + "%"


def tax_label(invoice: Invoice) -> str:
    if invoice.reverse_charge:
        return "VAT 0% (reverse charge)"
    return f"VAT {percent(invoice.tax_rate)}"


def _midnight(moment: datetime) -> bool:
    return (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0)


def supply_period(invoice: Invoice) -> str:
    """Whole days as dates ("2026-10-01 – 2026-10-31"); a month to date with its times, in UTC."""
    start, end = invoice.period_start, invoice.period_end
    if start and end:
        if _midnight(start) and _midnight(end):
            last_day = (end - timedelta(microseconds=1)).date()
            return f"{start:%Y-%m-%d} – {last_day:%Y-%m-%d}"
        return f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC"
    moment = invoice.issued_at or invoice.created_at
    return f"{moment:%Y-%m-%d}" if moment else ""


def _line(line) -> DocumentLine:
    if line.seconds is not None and line.hourly_price is not None:
        hours = (Decimal(line.seconds) / 3600).quantize(Decimal("0.01"))
        quantity = format_decimal(hours, format="#,##0.00", locale=_locale())
        return DocumentLine(line.description, line.plan_name or "", quantity, Decimal(line.hourly_price), "h",
                            line.amount_cents)
    return DocumentLine(line.description, line.plan_name or "", "1", None, "", line.amount_cents)


def invoice_payment_rows(session: Session, invoice_id: int) -> list[PaymentRow]:
    """Payments on one invoice, oldest first, cards named by brand and last 4 digits."""
    rows = session.execute(
        select(InvoicePayment, Card.brand, Card.last4)
        .outerjoin(ChargeAttempt, ChargeAttempt.id == InvoicePayment.charge_attempt_id)
        .outerjoin(Card, Card.id == ChargeAttempt.card_id)
        .where(InvoicePayment.invoice_id == invoice_id)
        .order_by(InvoicePayment.id)
    )
    out = []
    for payment, brand, last4 in rows:
        if payment.source == "card":
            source = card_label(brand, last4) if last4 else "Card"
            reference = payment.payment_intent_id
        else:
            source = SOURCE_LABELS.get(payment.source, payment.source.replace("_", " ").capitalize())
            reference = payment.reference if payment.source in ("bank_transfer", "credit_note") else None
        out.append(PaymentRow(payment.created_at, source, reference, payment.amount_cents))
    return out


def invoice_document(session: Session, invoice: Invoice) -> InvoiceDocument:
    return InvoiceDocument(
        invoice=invoice,
        seller=seller_party(invoice),
        buyer=buyer_party(invoice),
        invoice_date=invoice.issued_at.date() if invoice.issued_at else None,
        due_date=invoice.due_at.date() if invoice.due_at else None,
        supply_period=supply_period(invoice),
        lines=[_line(line) for line in invoice.lines],
        tax_label=tax_label(invoice),
        reverse_charge_note=REVERSE_CHARGE_NOTE if invoice.reverse_charge else None,
        payments=invoice_payment_rows(session, invoice.id),
    )
