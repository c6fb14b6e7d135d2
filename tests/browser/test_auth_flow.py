import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from app.models import User

pytestmark = pytest.mark.browser


def _link_from(mailbox, marker: str) -> str:
    [msg] = [m for m in mailbox.wait_for(1) if marker in m.get_body(("plain",)).get_content()]
    body = msg.get_body(("plain",)).get_content()
    return next(word for word in body.split() if marker in word)


def test_signup_verify_by_email_logout_login_dashboard_and_csrf(page, session, worker, mailbox):
    page.goto("/signup")
    page.fill("#email", "browser@example.com")
    page.fill("#name", "Bea Browser")
    page.fill("#password", "browser-password")
    page.fill("#confirm", "browser-password")
    page.click("#signup-submit")
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator("#flashes")).to_contain_text("Check your inbox")

    # the real mail, through the worker and SMTP, carries the link that confirms the address
    worker.run_burst()
    link = _link_from(mailbox, "/verify-email/")
    page.goto(link)
    page.click("#verify-submit")
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator("#flashes")).to_contain_text("Your email address is confirmed")

    page.fill("#email", "browser@example.com")
    page.fill("#password", "browser-password")
    page.click("#login-submit")
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    expect(page.locator("#current-user")).to_have_text("browser@example.com")
    expect(page.locator("#cash-balance")).to_have_text("$0.00")

    page.click("#logout")
    expect(page).to_have_url(re.compile(r"/login$"))

    page.fill("#email", "browser@example.com")
    page.fill("#password", "browser-password")
    page.click("#login-submit")
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    expect(page.locator("h1")).to_contain_text("Bea Browser")

    # A form posted without its CSRF token is refused and changes nothing.
    page.evaluate(
        """() => { const f = document.querySelector('form[action$="/logout"]');
                   f.querySelector('input[name=csrf_token]').remove(); f.submit(); }"""
    )
    page.wait_for_load_state()
    expect(page.locator("h1")).to_have_text("Bad request")
    page.goto("/dashboard")
    expect(page.locator("#current-user")).to_have_text("browser@example.com")
    assert session.scalar(select(func.count(User.id))) == 1


def test_changing_the_password_on_the_account_page_signs_out_the_other_browser(page, browser, live_server, factory):
    factory.customer(email="two@example.com")
    other_context = browser.new_context(base_url=live_server)
    try:
        other = other_context.new_page()
        for p in (page, other):
            p.goto("/login")
            p.fill("#email", "two@example.com")
            p.fill("#password", "correct-horse-battery")
            p.click("#login-submit")
            expect(p).to_have_url(re.compile(r"/dashboard$"))

        page.click("#nav-account")
        expect(page.locator(".session-row")).to_have_count(2)
        page.fill("#current", "correct-horse-battery")
        page.fill("#password", "aaaaaaaaaaaa")
        page.fill("#confirm", "aaaaaaaaaaaa")
        page.click("#password-submit")
        expect(page.locator("#password-panel")).to_contain_text("This password is too easy to guess.")

        page.fill("#current", "correct-horse-battery")
        page.fill("#password", "velvet-harbour-cactus-91")
        page.fill("#confirm", "velvet-harbour-cactus-91")
        page.click("#password-submit")
        expect(page.locator("#flashes")).to_contain_text("Every other session was signed out")
        expect(page.locator(".session-row")).to_have_count(1)

        other.goto("/dashboard")
        expect(other).to_have_url(re.compile(r"/login"))
        page.goto("/dashboard")
        expect(page).to_have_url(re.compile(r"/dashboard$"))
    finally:
        other_context.close()
