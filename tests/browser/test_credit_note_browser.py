"""An admin issues a partial credit note after watching the live preview; the customer sees it on
the invoice page and downloads its PDF, which carries both the credit note's and the invoice's number."""

from decimal import Decimal

import pytest
from playwright.sync_api import expect
from pypdf import PdfReader
from sqlalchemy import select

from app.billing.invoices import LineSpec, create_invoice, issue_invoice
from app.models import Invoice
from app.models.credit_note import CreditNote

pytestmark = pytest.mark.browser


def _login(page, email, password):
    page.goto("/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login-submit")
    expect(page.locator("#current-user")).to_have_text(email)


def test_admin_issues_a_partial_credit_note_with_preview_and_the_customer_downloads_it(page, session, factory):
    factory.admin()
    session.commit()
    customer = factory.customer("buyer@example.com", name="Bea Buyer")
    lines = [LineSpec("web-1", 2500, plan_name="vm-small", seconds=100 * 3600, hourly_price=Decimal("0.25")),
             LineSpec("Support", 500)]
    invoice = issue_invoice(session, create_invoice(session, customer.id, lines, tax_rate=Decimal("0.19")).id)
    session.commit()
    web = sorted(invoice.lines, key=lambda line: line.position)[0]

    _login(page, "root@example.com", "admin-password-1")
    page.goto(f"/admin/invoices/{invoice.id}")
    expect(page.locator("#invoice-due")).to_have_text("$35.70")
    page.fill(f"#line-{web.id}-hours", "10")
    # the preview answers without a submit: 10 h × $0.25 = $2.50, tax 19 % = $0.475 → $0.48, total $2.98
    expect(page.locator("#preview-subtotal")).to_have_text("$2.50")
    expect(page.locator("#preview-tax")).to_have_text("$0.48")
    expect(page.locator("#preview-total")).to_have_text("$2.98")
    session.expire_all()
    assert session.scalar(select(CreditNote)) is None  # previewing wrote nothing
    page.fill("#credit_reason", "Ten hours of downtime on web-1")
    page.fill("#credit_memo", "ops ticket 881")
    page.click("#issue-credit-note")
    expect(page.locator("#flashes")).to_contain_text("Credit note CN-")
    expect(page.locator("#invoice-due")).to_have_text("$32.72")
    session.expire_all()
    note = session.scalar(select(CreditNote))
    assert (note.total_cents, session.get(Invoice, invoice.id).amount_due_cents) == (298, 3272)

    page.click("#logout")
    _login(page, "buyer@example.com", "correct-horse-battery")
    page.goto(f"/invoices/{invoice.id}")
    expect(page.locator("#credit-note-list")).to_contain_text(note.number)
    expect(page.locator("#credit-note-list")).to_contain_text("Ten hours of downtime on web-1")
    expect(page.locator("#credit-note-list")).not_to_contain_text("ops ticket")
    expect(page.locator("#invoice-due")).to_have_text("$32.72")
    with page.expect_download() as download_info:
        page.click(f"#credit-note-pdf-{note.id}")
    path = download_info.value.path()
    text = "".join(p.extract_text() for p in PdfReader(path).pages)
    assert note.number in text and invoice.number in text
    assert "Bea Buyer" in text and "$2.98" in text
