"""Invoice PDFs (xhtml2pdf). Needs an app context (templates, seller settings, money formatting)."""

import io

from flask import render_template
from sqlalchemy.orm import object_session
from xhtml2pdf import pisa

from app.billing.invoice_document import buyer_party, invoice_document, seller_party, supply_period, tax_label
from app.billing.tax import REVERSE_CHARGE_NOTE
from app.extensions import db
from app.models import Invoice
from app.models.credit_note import CreditNote


class PdfRenderError(Exception):
    pass


def render_invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice as PDF bytes: seller and buyer, dates, lines, tax, totals and payments
    (app.billing.invoice_document, the same content as the invoice page)."""
    html = render_template("pdf/invoice.html", doc=invoice_document(object_session(invoice) or db.session, invoice))
    out = io.BytesIO()
    result = pisa.CreatePDF(html, dest=out, encoding="utf-8")
    if result.err:
        raise PdfRenderError(f"could not render invoice {invoice.id}")
    return out.getvalue()


def render_credit_note_pdf(credit_note: CreditNote, invoice: Invoice) -> bytes:
    """The credit note as PDF bytes, in the invoice's look and with its legal fields: seller and
    buyer as snapshotted on the invoice, the invoice it corrects (number, date, supply period),
    reason, lines with quantity and unit price, tax at the invoice's rate, total, and where the
    credit went."""
    html = render_template(
        "pdf/credit_note.html",
        note=credit_note,
        invoice=invoice,
        seller=seller_party(invoice),
        buyer=buyer_party(invoice),
        supply_period=supply_period(invoice),
        tax_label=tax_label(invoice),
        reverse_charge_note=REVERSE_CHARGE_NOTE if invoice.reverse_charge else None,
    )
    out = io.BytesIO()
    result = pisa.CreatePDF(html, dest=out, encoding="utf-8")
    if result.err:
        raise PdfRenderError(f"could not render credit note {credit_note.id}")
    return out.getvalue()
