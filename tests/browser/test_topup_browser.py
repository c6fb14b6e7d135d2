import re

import pytest
from playwright.sync_api import expect

from app.models import BillingCustomer, User
from tests.browser.test_cards_browser import _login
from tests.money_support import payment_intents
from tests.stripe_support import cash_entries, wait_for_events

pytestmark = pytest.mark.browser


def _top_up(page, amount, number):
    page.goto("/balance")
    page.fill("#amount", amount)
    page.click("#topup-submit")
    expect(page.locator("#cardnumber")).to_be_visible()
    page.fill("#cardnumber", number)
    page.fill("#exp", "12/34")
    page.fill("#cvc", "123")
    page.click("#submit")


def test_a_topup_through_hosted_checkout_changes_the_balance_once(page, factory, session, stripe):
    customer = factory.customer(email="browser-topup@example.com")
    _login(page, customer.email)
    page.goto("/balance")
    expect(page.locator("#cash-balance")).to_have_text("$0.00")

    _top_up(page, "25.00", "4242 4242 4242 4242")
    expect(page).to_have_url(re.compile(r"/balance$"))
    expect(page.locator("#flashes")).to_contain_text("$25.00 was added to your balance.")
    expect(page.locator("#cash-balance")).to_have_text("$25.00")
    expect(page.locator("tr.topup-row")).to_have_count(1)

    # Both webhooks of a hosted top-up (the emulator's checkout event and localstripe's payment
    # intent event) have reached the app: neither may credit a second time.
    wait_for_events(session, "checkout.session.completed", "payment_intent.succeeded")
    assert [e.amount_cents for e in cash_entries(session, customer.id)] == [2500]
    session.expire_all()
    assert session.get(User, customer.id).cash_balance_cents == 2500


def test_a_declined_topup_credits_nothing_and_says_so(page, factory, session, stripe):
    customer = factory.customer(email="browser-topup-declined@example.com")
    _login(page, customer.email)
    _top_up(page, "25.00", "4000 0000 0000 0002")
    expect(page.locator("#error")).to_have_text("Your card was declined.")
    page.click("#cancel")
    expect(page.locator("#flashes")).to_contain_text("The top-up was cancelled. Nothing was charged.")
    expect(page.locator("#cash-balance")).to_have_text("$0.00")
    # Nothing succeeded at Stripe, so no webhook can credit later; and nothing was credited.
    stripe_id = session.get(BillingCustomer, customer.id).stripe_customer_id
    assert [pi.status for pi in payment_intents(stripe_id) if pi.status == "succeeded"] == []
    assert cash_entries(session, customer.id) == []


def test_an_amount_out_of_range_is_explained_on_the_form(page, factory, stripe):
    customer = factory.customer(email="browser-topup-range@example.com")
    _login(page, customer.email)
    page.goto("/balance")
    page.fill("#amount", "2")
    page.click("#topup-submit")
    expect(page.locator("#topup-form .field-error")).to_have_text("The smallest top-up is $5.00.")
