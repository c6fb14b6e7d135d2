"""Admin pages in a real browser: an HTMX balance adjustment refreshes the figures in place."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_an_adjustment_updates_the_figures_in_place_without_a_reload(page, factory, session):
    factory.admin()
    customer = factory.customer(email="adjust-me@example.com")
    session.commit()
    page.goto("/login")
    page.fill("#email", "root@example.com")
    page.fill("#password", "admin-password-1")
    page.click("#login-submit")
    page.goto(f"/admin/customers/{customer.id}")
    expect(page.locator("#customer-cash")).to_have_text("$0.00")
    page.evaluate("window.__not_reloaded = true")  # gone if the page reloads

    page.fill("#amount", "5.00")
    page.fill("#reason", "goodwill")
    page.click("#adjust-submit")
    expect(page.locator("#flashes")).to_contain_text("by $5.00")
    expect(page.locator("#customer-cash")).to_have_text("$5.00")
    expect(page.locator("#amount")).to_have_value("")  # a fresh form for the next adjustment
    assert page.evaluate("window.__not_reloaded") is True

    page.fill("#amount", "12abc")
    page.fill("#reason", "   ")  # passes the browser's `required`, not the server's
    page.click("#adjust-submit")
    expect(page.locator("#adjustment-panel .field-error")).to_have_count(2)  # both fields' errors at once
    expect(page.locator("#customer-cash")).to_have_text("$5.00")
    expect(page.locator("a#nav-admin-refunds")).to_be_visible()
    page.click("#refund-link")
    expect(page).to_have_url(re.compile(rf"/admin/refunds\?customer_id={customer.id}$"))
