"""The dashboard's usage, forecast and runway panel updates in place (HTMX) after a top-up made
through the suggested-amount link and Stripe Checkout, without reloading the page."""

import re
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from app.billing.foresight import customer_forecast
from app.billing.ledger import post_entry
from app.models.base import utcnow
from tests.browser.test_cards_browser import _login
from tests.integration.usage_helpers import make_plan, run_deployment

pytestmark = pytest.mark.browser


@pytest.fixture
def fast_refresh(app):
    saved = app.config["FORESIGHT_REFRESH_SECONDS"]
    app.config["FORESIGHT_REFRESH_SECONDS"] = 1
    yield
    app.config["FORESIGHT_REFRESH_SECONDS"] = saved


def _day(moment) -> str:
    return f"until {moment.day} {moment:%B}"


def test_the_runway_panel_updates_in_place_after_a_top_up(page, app, factory, session, stripe, fast_refresh):
    customer = factory.customer(email="browser-foresight@example.com")
    post_entry(session, customer_id=customer.id, account="voucher", amount_cents=1000, kind="voucher_redemption",
               idempotency_key="browser-foresight-voucher")
    session.commit()
    make_plan(session, price="0.050000")
    run_deployment(session, customer, "bf-vm", "vm-small", utcnow().replace(microsecond=0) - timedelta(hours=2),
                   name="browser-vm")
    before = customer_forecast(session, customer.id)

    _login(page, customer.email)
    runway = page.locator("#foresight-runway")
    expect(runway).to_contain_text(_day(before.runway.runs_out_at))
    expect(runway).to_contain_text("without a card or a top-up")
    expect(page.locator("#usage-table tr.usage-row")).to_have_count(1)
    page.evaluate("window.paydeskNotReloaded = true")

    other = page.context.new_page()
    other.goto("/dashboard")
    other.click("#suggested-topup")
    expect(other).to_have_url(re.compile(r"/balance\?amount="))
    expect(other.locator("#amount")).to_have_value(before.suggested_topup_text)
    other.click("#topup-submit")
    expect(other.locator("#cardnumber")).to_be_visible()
    other.fill("#cardnumber", "4242 4242 4242 4242")
    other.fill("#exp", "12/34")
    other.fill("#cvc", "123")
    other.click("#submit")
    expect(other).to_have_url(re.compile(r"/balance$"))

    session.expire_all()
    after = customer_forecast(session, customer.id)
    assert after.runway.runs_out_at - before.runway.runs_out_at > timedelta(days=20)
    expect(runway).to_contain_text(_day(after.runway.runs_out_at))
    assert page.evaluate("window.paydeskNotReloaded") is True  # the same page, updated in place
    expect(page.locator("#foresight-suggestion")).to_have_count(0)  # covered until next month's end now
