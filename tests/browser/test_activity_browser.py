"""The activity page in a browser: reached from the navigation, filtered by month and paged in place
(HTMX, under the strict CSP), the URL following so a reload shows the same page."""

import re
from datetime import UTC, datetime

import pytest
import time_machine
from playwright.sync_api import expect

from app.billing.ledger import post_entry
from tests.browser.test_cards_browser import _login

pytestmark = pytest.mark.browser


def test_activity_is_filtered_by_month_and_paged_in_place(page, session, factory):
    customer = factory.customer("activity-browser@example.com")
    for n in range(60):
        with time_machine.travel(datetime(2026, 11, 2, 0, n, tzinfo=UTC), tick=False):
            post_entry(session, customer_id=customer.id, account="cash", amount_cents=100, kind="topup",
                       idempotency_key=f"topup:pi_nov_{n}", reference=f"pi_nov_{n:02d}")
            session.commit()
    with time_machine.travel(datetime(2026, 10, 9, 8, 0, tzinfo=UTC), tick=False):
        post_entry(session, customer_id=customer.id, account="voucher", amount_cents=1_000, kind="voucher",
                   idempotency_key="voucher:1:1", reference="voucher:1", note="Voucher ABCD-…")
        session.commit()
    customer.created_at = datetime(2026, 9, 1, tzinfo=UTC)
    session.commit()

    _login(page, customer.email)
    page.click("#nav-customer-activity")
    expect(page).to_have_url(re.compile(r"/activity$"))
    rows = page.locator("#activity .activity-row")
    expect(rows).to_have_count(50)
    expect(page.locator("#activity-total")).to_have_text("61")
    page.evaluate("() => { window.__noReload = 'still here'; }")

    page.click("#activity-next")
    expect(page.locator("#activity-page")).to_have_text("Page 2 of 2")
    expect(rows).to_have_count(11)
    expect(page.locator("#activity")).to_contain_text("Voucher redeemed (Voucher ABCD-…)")
    expect(page).to_have_url(re.compile(r"page=2"))

    page.select_option("#activity-month", "2026-10")
    page.click("#activity-filter-submit")
    expect(page.locator("#activity-total")).to_have_text("1")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(re.compile(r"month=2026-10"))
    assert page.evaluate("() => window.__noReload") == "still here"
    expect(page.locator("#activity-csv")).to_have_attribute("href", re.compile(r"/activity\.csv\?month=2026-10$"))

    page.reload()
    expect(page.locator("#activity-total")).to_have_text("1")
