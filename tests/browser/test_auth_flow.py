import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from app.models import User

pytestmark = pytest.mark.browser


def test_signup_logout_login_dashboard_and_csrf(page, session):
    page.goto("/signup")
    page.fill("#email", "browser@example.com")
    page.fill("#name", "Bea Browser")
    page.fill("#password", "browser-password")
    page.fill("#confirm", "browser-password")
    page.click("#signup-submit")
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
