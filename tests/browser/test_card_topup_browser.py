"""Top-up with a saved card in a real browser: charged off-session and credited once; a card asking
for 3-D Secure goes through the emulator's hosted Checkout page instead."""

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from app.models import BillingCustomer, User
from app.models.stripe_events import CardTopup
from tests.browser.test_cards_browser import _login
from tests.money_support import add_card, payment_intents
from tests.stripe_support import cash_entries, wait_for_events

pytestmark = pytest.mark.browser


def _succeeded(session, customer_id):
    stripe_id = session.get(BillingCustomer, customer_id).stripe_customer_id
    return [pi for pi in payment_intents(stripe_id) if pi.status == "succeeded"]


def test_a_top_up_with_a_saved_card_credits_once(page, factory, session, stripe):
    customer = factory.customer(email="browser-card-topup@example.com")
    add_card(session, customer.id, "5555555555554444")
    card = add_card(session, customer.id, default=True)
    _login(page, customer.email)
    page.goto("/balance")
    expect(page.get_by_label("Visa ending 4242")).to_be_checked()  # the default card is preselected

    page.fill("#amount", "20.00")
    page.click("#topup-submit")
    expect(page.locator("#flashes")).to_contain_text("Visa ending 4242 was charged $20.00")
    expect(page.locator("#cash-balance")).to_have_text("$20.00")
    expect(page.locator("tr.topup-row")).to_have_count(1)

    wait_for_events(session, "payment_intent.succeeded")  # the webhook arrives after the redirect
    assert [e.amount_cents for e in cash_entries(session, customer.id)] == [2000]
    session.expire_all()
    assert session.get(User, customer.id).cash_balance_cents == 2000
    [intent] = _succeeded(session, customer.id)
    assert intent.payment_method == card.stripe_payment_method_id and intent.amount == 2000


def test_a_declined_saved_card_is_explained_in_place(page, factory, session, stripe):
    customer = factory.customer(email="browser-card-topup-declined@example.com")
    add_card(session, customer.id, "4000000000000341", default=True)
    _login(page, customer.email)
    page.goto("/balance")
    page.fill("#amount", "20.00")
    page.click("#topup-submit")
    expect(page.locator("#topup-form .pay-with-error")).to_contain_text("ending 0341 was declined")
    expect(page).to_have_url(re.compile(r"/balance$"))
    expect(page.locator("#amount")).to_have_value("20.00")  # kept for another try
    expect(page.locator("#cash-balance")).to_have_text("$0.00")
    assert cash_entries(session, customer.id) == []


def test_a_saved_card_asking_for_3d_secure_goes_through_checkout(page, factory, session, stripe):
    customer = factory.customer(email="browser-card-topup-3ds@example.com")
    add_card(session, customer.id, "4000002500003155", default=True)
    _login(page, customer.email)
    page.goto("/balance")
    page.fill("#amount", "20.00")
    page.click("#topup-submit")

    # the emulator's hosted Checkout page, for the same amount
    expect(page.locator("#cardnumber")).to_be_visible()
    assert page.url.startswith(stripe.api_base + "/checkout/cs_")
    expect(page.locator("#amount")).to_contain_text("20.00")
    page.fill("#cardnumber", "4000 0025 0000 3155")
    page.fill("#exp", "12/34")
    page.fill("#cvc", "123")
    page.click("#submit")
    page.click("#authenticate-complete")

    expect(page).to_have_url(re.compile(r"/balance$"))
    expect(page.locator("#flashes")).to_contain_text("$20.00 was added to your balance.")
    expect(page.locator("#cash-balance")).to_have_text("$20.00")
    wait_for_events(session, "payment_intent.succeeded", "checkout.session.completed")
    assert [e.amount_cents for e in cash_entries(session, customer.id)] == [2000]
    assert session.scalar(select(func.count(CardTopup.id)).where(CardTopup.status == "requires_action")) == 1
    assert len(_succeeded(session, customer.id)) == 1  # the off-session intent was never completed
