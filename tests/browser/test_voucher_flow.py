"""Admin creates a batch in a real browser; a customer (another browser context) redeems one of
the codes typed sloppily and sees the voucher balance change in place, without a reload."""

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.billing.ledger import ledger_balance
from app.models import User
from app.models.voucher import Voucher

pytestmark = pytest.mark.browser


def log_in(page, email, password):
    page.goto("/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login-submit")


def test_admin_batch_code_is_redeemed_in_place_by_a_customer(page, browser, live_server, session, factory):
    admin = factory.admin()
    customer = factory.customer(email="shopper@example.com")

    log_in(page, admin.email, "admin-password-1")
    page.goto("/admin/vouchers")
    page.click("#voucher-create summary")
    page.fill("#count", "3")
    page.fill("#value", "12.50")
    page.fill("#max_redemptions", "1")
    page.fill("#note", "Browser batch")
    page.click("#voucher-create-submit")
    expect(page.locator("h1")).to_have_text("3 vouchers created")
    codes = page.locator(".voucher-code").all_inner_texts()
    assert len(codes) == 3 and all(re.fullmatch(r"[0-9A-Z]{4}(-[0-9A-Z]{4}){4}", c) for c in codes)
    expect(page.locator("#voucher-csv")).to_have_attribute("download", re.compile(r"vouchers-batch-\d+\.csv"))
    code = codes[1]

    context = browser.new_context(base_url=live_server)
    try:
        shopper = context.new_page()
        log_in(shopper, customer.email, "correct-horse-battery")
        expect(shopper).to_have_url(re.compile(r"/dashboard$"))
        expect(shopper.locator("#voucher-balance")).to_have_text("$0.00")
        shopper.evaluate("() => { window.__noReload = 'still here'; }")

        sloppy = " ".join(code.lower().replace("-", "  "))
        shopper.fill("#redeem-code", sloppy)
        shopper.click("#redeem-submit")

        expect(shopper.locator("#voucher-balance")).to_have_text("$12.50")
        expect(shopper.locator("#redeem-message")).to_contain_text("$12.50 added to your voucher balance")
        expect(shopper.locator("#cash-balance")).to_have_text("$0.00")
        assert shopper.evaluate("() => window.__noReload") == "still here"

        # the same code again: a clear refusal, in place, nothing credited
        shopper.fill("#redeem-code", code)
        shopper.click("#redeem-submit")
        expect(shopper.locator("#redeem-message")).to_have_text("You have already redeemed this voucher.")
        expect(shopper.locator("#voucher-balance")).to_have_text("$12.50")
        assert shopper.evaluate("() => window.__noReload") == "still here"
    finally:
        context.close()

    session.expire_all()
    assert session.get(User, customer.id).voucher_balance_cents == 1250 == ledger_balance(session, customer.id, "voucher")
    counts = sorted(session.scalars(select(Voucher.redemptions_count)))
    assert counts == [0, 0, 1]

    page.goto("/admin/vouchers")
    expect(page.locator("#vouchers tbody tr")).to_have_count(3)
    expect(page.locator("#vouchers")).to_contain_text("1 / 1")
    expect(page.locator("#vouchers")).not_to_contain_text(code)
