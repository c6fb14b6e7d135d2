"""Invoice PDFs (xhtml2pdf). Needs an app context (templates, seller settings, money formatting)."""

import io

from flask import current_app, render_template
from xhtml2pdf import pisa

from app.models import Invoice


class PdfRenderError(Exception):
    pass


def render_invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice as PDF bytes: seller and buyer, lines, tax, totals and payments."""
    html = render_template(
        "pdf/invoice.html",
        invoice=invoice,
        seller_name=current_app.config.get("SELLER_NAME"),
        seller_address=current_app.config.get("SELLER_ADDRESS"),
    )
    out = io.BytesIO()
    result = pisa.CreatePDF(html, dest=out, encoding="utf-8")
    if result.err:
        raise PdfRenderError(f"could not render invoice {invoice.id}")
    return out.getvalue()
