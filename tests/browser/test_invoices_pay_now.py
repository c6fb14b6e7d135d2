"""A customer pays an open invoice with "Pay now", without a page reload, and always gets a message
in place: paid, or why not and what to do."""

import pytest
from playwright.sync_api import expect

from app.models import Card, SettlementRequest
from app.models.base import utcnow
from tests.money_support import add_card, credit, make_invoice

pytestmark = pytest.mark.browser


def _ready(session, worker):
    """Nothing waiting from the arrangement: only "Pay now" asks for settlement."""
    from jobs.queue import WORKER_QUEUES, get_queue

    session.query(SettlementRequest).delete()
    session.commit()
    for name in WORKER_QUEUES:
        get_queue(name).empty()
    worker.start()


def _login(page, email):
    page.goto("/login")
    page.fill("#email", email)
    page.fill("#password", "correct-horse-battery")
    page.click("#login-submit")
    expect(page.locator("#current-user")).to_have_text(email)


def test_pay_now_settles_the_invoice_from_cash_without_a_full_reload(page, session, factory, worker):
    customer = factory.customer("payer@example.com")
    invoice = make_invoice(session, customer.id, 1250)
    credit(session, customer.id, "cash", 2000)
    _ready(session, worker)

    _login(page, "payer@example.com")
    page.goto(f"/invoices/{invoice.id}")
    expect(page.locator("#invoice-state")).to_have_text("open")
    expect(page.locator("#invoice-due")).to_have_text("$12.50")
    page.evaluate("() => { window.__noReload = 'still here'; }")

    page.click("#pay-now")

    # whether the settlement finishes before the first poll or after several, the result shows
    expect(page.locator("#pay-result")).to_contain_text(f"Invoice {invoice.number} is paid", timeout=30_000)
    expect(page.locator("#invoice-state")).to_have_text("paid")
    expect(page.locator("#invoice-due")).to_have_text("$0.00")
    expect(page.locator("#invoice-payments .payment-row")).to_have_count(1)
    expect(page.locator("#pay-now")).to_have_count(0)
    assert page.evaluate("() => window.__noReload") == "still here"


def test_pay_now_with_a_declining_default_card_says_why_in_place_and_lists_the_attempt(
    page, session, factory, worker, stripe
):
    customer = factory.customer("declined@example.com")
    card = add_card(session, customer.id, "4000000000000341", default=True)
    invoice = make_invoice(session, customer.id, 4200)
    _ready(session, worker)

    _login(page, "declined@example.com")
    page.goto(f"/invoices/{invoice.id}")
    expect(page.locator("#card-attempts")).to_have_count(0)
    page.evaluate("() => { window.__noReload = 'still here'; }")

    page.click("#pay-now")

    declined = f"Visa ending 0341 declined on {utcnow():%Y-%m-%d}: "
    result = page.locator("#pay-result")
    expect(result).to_contain_text(declined, timeout=30_000)
    expect(result).to_contain_text("declined by the bank")  # Stripe's reason (card_declined) in words
    expect(result).to_contain_text("$42.00 is still due")
    expect(page.locator("#pay-result-cards")).to_be_visible()
    expect(page.locator("#card-attempts .attempt-row")).to_have_count(1)
    expect(page.locator("#card-attempts .attempt-row")).to_contain_text(declined)
    expect(page.locator("#invoice-state")).to_have_text("open")
    expect(page.locator("#pay-now")).to_be_visible()  # still payable, e.g. after choosing another card
    assert page.evaluate("() => window.__noReload") == "still here"

    # the attempt stays on the invoice page
    page.reload()
    expect(page.locator("#card-attempts .attempt-row")).to_contain_text(declined)

    # paying again at once does not charge the declining card again, and says so
    page.click("#pay-now")
    expect(page.locator("#pay-result")).to_contain_text("We do not charge a declining card again before",
                                                       timeout=30_000)
    expect(page.locator("#card-attempts .attempt-row")).to_have_count(1)

    # the Cards page flags the default card and asks for another; the default did not change
    page.click("#pay-result-cards")
    expect(page.locator("#declining-card")).to_contain_text("Visa ending 0341")
    expect(page.locator(f'.card-row[data-card-id="{card.id}"] .badge-declining')).to_be_visible()
    session.expire_all()
    assert session.get(Card, card.id).is_default
