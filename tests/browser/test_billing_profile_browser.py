"""A customer fills in the billing profile in the browser; an invoice issued afterwards carries it on
its page and in its PDF, one issued before keeps what it was issued with."""

import io
import re

import pytest
from playwright.sync_api import expect
from pypdf import PdfReader

from app.billing import monthly
from tests.integration.usage_helpers import make_plan, run_deployment
from tests.money_support import make_invoice

pytestmark = pytest.mark.browser


def _pdf_text(page, invoice_id: int) -> str:
    response = page.request.get(f"/invoices/{invoice_id}/pdf")
    assert response.ok and response.headers["content-type"] == "application/pdf"
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(response.body())).pages)


def test_profile_filled_in_the_browser_is_on_later_invoices_only(page, session, factory, app, monkeypatch):
    monkeypatch.setitem(app.config, "SELLER_VAT_ID", "DE136695976")
    customer = factory.customer("profile-browser@example.com")
    earlier = make_invoice(session, customer.id, 1200)

    page.goto("/login")
    page.fill("#email", customer.email)
    page.fill("#password", "correct-horse-battery")
    page.click("#login-submit")
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    page.click("#nav-customer-profile")
    expect(page).to_have_url(re.compile(r"/profile$"))

    page.fill("#name", "Grace Hopper")
    page.fill("#company", "Cobol Compilers BV")
    page.fill("#address", "Keizersgracht 1")
    page.fill("#postcode", "1015 CJ")
    page.fill("#city", "Amsterdam")
    page.select_option("#country", "NL")
    page.fill("#vat_id", "NL004495446B01")  # wrong check digit
    page.click("#profile-submit")
    expect(page.locator("#profile-form")).to_contain_text("check digit does not match")
    expect(page.locator("#name")).to_have_value("Grace Hopper")  # what was typed stays
    page.fill("#vat_id", "NL 004495445 B01")
    page.click("#profile-submit")
    expect(page.locator("#flashes")).to_contain_text("Billing profile saved")
    expect(page.locator("#vat_id")).to_have_value("NL004495445B01")

    make_plan(session, price="0.500000")
    run_deployment(session, customer, "dep-browser", "vm-small", "2026-10-05T00:00:00", "2026-10-05T04:00:00")
    later = monthly.issue_customer_invoice(session, customer.id, "2026-10")

    page.goto(f"/invoices/{later.id}")
    buyer = page.locator("#invoice-buyer")
    for text in ("Grace Hopper", "Cobol Compilers BV", "Keizersgracht 1", "1015 CJ Amsterdam", "Netherlands",
                 "VAT ID NL004495445B01"):
        expect(buyer).to_contain_text(text)
    expect(page.locator("#invoice-seller")).to_contain_text("VAT ID DE136695976")
    expect(page.locator("#invoice-due-date")).to_have_text(later.due_at.strftime("%Y-%m-%d"))
    expect(page.locator("#invoice-supply-period")).to_have_text("2026-10-01 – 2026-10-31")
    pdf = _pdf_text(page, later.id)
    for text in ("Grace Hopper", "Cobol Compilers BV", "Keizersgracht 1", "1015 CJ Amsterdam", "Netherlands",
                 "VAT ID NL004495445B01", "VAT ID DE136695976", later.due_at.strftime("%Y-%m-%d"), "4.00 h",
                 "$0.50 / h"):
        assert text in pdf, text

    page.goto(f"/invoices/{earlier.id}")
    expect(page.locator("#invoice-buyer")).not_to_contain_text("Grace Hopper")
    expect(page.locator("#invoice-buyer")).to_contain_text(customer.email)
    earlier_pdf = _pdf_text(page, earlier.id)
    assert "Grace Hopper" not in earlier_pdf and "NL004495445B01" not in earlier_pdf
