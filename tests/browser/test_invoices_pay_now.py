"""A customer pays an open invoice from their cash balance with "Pay now", without a page reload."""

import pytest
from playwright.sync_api import expect

from app.models import SettlementRequest
from tests.money_support import credit, make_invoice

pytestmark = pytest.mark.browser


def test_pay_now_settles_the_invoice_from_cash_without_a_full_reload(page, session, factory, worker):
    from jobs.queue import get_queue

    customer = factory.customer("payer@example.com")
    invoice = make_invoice(session, customer.id, 1250)
    credit(session, customer.id, "cash", 2000)
    session.query(SettlementRequest).delete()
    session.commit()
    get_queue().empty()
    worker.start()

    page.goto("/login")
    page.fill("#email", "payer@example.com")
    page.fill("#password", "correct-horse-battery")
    page.click("#login-submit")
    page.goto(f"/invoices/{invoice.id}")
    expect(page.locator("#invoice-state")).to_have_text("open")
    expect(page.locator("#invoice-due")).to_have_text("$12.50")
    page.evaluate("() => { window.__noReload = 'still here'; }")

    page.click("#pay-now")

    expect(page.locator("#invoice-state")).to_have_text("paid", timeout=30_000)
    expect(page.locator("#invoice-due")).to_have_text("$0.00")
    expect(page.locator("#invoice-payments .payment-row")).to_have_count(1)
    expect(page.locator("#pay-now")).to_have_count(0)
    assert page.evaluate("() => window.__noReload") == "still here"
    expect(page.locator("#flashes")).to_contain_text("is paid")
