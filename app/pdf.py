"""Invoice PDFs (xhtml2pdf). Needs an app context (templates, seller settings, money formatting)."""

import io

from flask import current_app, render_template
from sqlalchemy.orm import object_session
from xhtml2pdf import pisa

from app.billing.invoice_document import invoice_document
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
    """The credit note as PDF bytes, in the invoice's look: seller and buyer (as frozen on the
    invoice), the invoice it corrects, reason, lines, tax, total and where the credit went."""
    html = render_template(
        "pdf/credit_note.html",
        note=credit_note,
        invoice=invoice,
        seller_name=current_app.config.get("SELLER_NAME"),
        seller_address=current_app.config.get("SELLER_ADDRESS"),
    )
    out = io.BytesIO()
    result = pisa.CreatePDF(html, dest=out, encoding="utf-8")
    if result.err:
        raise PdfRenderError(f"could not render credit note {credit_note.id}")
    return out.getvalue()
